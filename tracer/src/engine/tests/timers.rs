//! TIME_WAIT timers fire in deadline order (ties by cookie), at the first
//! input at or after their exact deadline and never before it, however
//! they were armed and however the store moves their records.
use super::*;
use crate::tcp::TcpState::*;

/// The cookies whose TIME_WAIT expired, each with the time of the input
/// that ended it, feeding `expire` every `step` ns from `from` to `to`.
fn expiries(h: &mut H, from: u64, to: u64, step: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut t = from;
    while t <= to {
        h.expire(t);
        for o in h.take() {
            if let Obs::TwEnded(c, how) = o {
                assert_eq!(how, TimeWaitEnd::Expired, "cookie {c}");
                out.push((c, t));
            }
        }
        t += step;
    }
    out
}

/// Each cookie ended at the first step at or after its deadline, and all
/// in `(deadline, cookie)` order.
fn assert_on_time(got: &[(u64, u64)], deadline: impl Fn(u64) -> u64, step: u64) {
    for &(c, t) in got {
        let d = deadline(c);
        assert!(
            d <= t && t < d + step,
            "cookie {c}: deadline {d}, ended at {t}"
        );
    }
    let mut want: Vec<u64> = got.iter().map(|&(c, _)| c).collect();
    want.sort_by_key(|&c| (deadline(c), c));
    let order: Vec<u64> = got.iter().map(|&(c, _)| c).collect();
    assert_eq!(order, want);
}

#[test]
fn adopted_in_dump_order_they_fire_in_deadline_order() {
    // 300 timewait sockets with 5.000..5.249 s left, in scrambled order
    // (some share a deadline); finished records are dropped at once, so
    // the store keeps moving the others. Also across the 52-day wrap of the
    // queue's 32-bit ticks.
    for now in [secs(100) + 123_457, (1 << 52) - secs(5) - ms(120) + 777] {
        let mut h = H::with(Config {
            retention_ns: 1,
            ..Config::default()
        });
        let left = |c: u64| 5_000 + (c * 37) % 250;
        let dump: Vec<_> = (1..=300).map(|c| tw(c, TimeWait, left(c) as u32)).collect();
        assert_eq!(h.adopt(&dump, now), 300);
        let deadline = |c: u64| now + ms(left(c));
        let step = 100_003;
        let got = expiries(&mut h, now + secs(5) - ms(1), now + secs(6), step);
        assert_eq!(got.len(), 300);
        assert_on_time(&got, deadline, step);
        assert_eq!(h.e.tracked(), 0);
    }
}

#[test]
fn closes_seen_newest_first_fire_oldest_first() {
    // Each close comes 3 ms before the previous one (other cookies' events
    // arrive late), so every timer is armed before all the earlier ones.
    let mut h = H::new();
    let t0 = |c: u64| secs(10) - c * ms(3) + c * 7_919;
    for c in 1..=100 {
        h.run(active_open(c, t0(c)));
        h.run(active_close(c, t0(c) + ms(100)));
    }
    // Inferred: ends by its timer at close + 60 s + 1 s of slack.
    let deadline = |c: u64| t0(c) + ms(120) + secs(61);
    let step = 250_001;
    let got = expiries(&mut h, secs(70), secs(72), step);
    assert_eq!(got.len(), 100);
    assert_on_time(&got, deadline, step);
}

#[test]
fn never_before_the_exact_deadline() {
    // Two deadlines 0.4 ms apart within one ~1 ms tick of the queue.
    let d1 = (123_456 << 20) + 1_000;
    let d2 = d1 + 400_000;
    let mut h = H::new();
    h.adopt(&[tw(1, TimeWait, 30_000)], d1 - secs(30));
    h.adopt(&[tw(2, TimeWait, 30_000)], d2 - secs(30));
    h.take();
    for (t, ended) in [(d1 - 1, None), (d1, Some(1)), (d2 - 1, None), (d2, Some(2))] {
        let got = expiries(&mut h, t, t, 1);
        assert_eq!(got.first().map(|&(c, _)| c), ended, "at {t}");
    }
}

#[test]
fn a_reused_slot_fires_at_its_own_deadline() {
    // 1 and 2 have deadlines in one tick. 1 is reset early and dropped: 2
    // moves into its slot. 3 then takes 2's old slot, with a deadline in
    // the same tick, later than both.
    let d1 = (123_456 << 20) + 1_000;
    let (d2, d3) = (d1 + 400_000, d1 + 700_000);
    let mut h = H::with(Config {
        retention_ns: 1,
        ..Config::default()
    });
    h.adopt(&[tw(1, TimeWait, 30_000)], d1 - secs(30));
    h.adopt(&[tw(2, TimeWait, 30_000)], d2 - secs(30));
    h.run([rst_rx(1).at(d2 - secs(29))]);
    h.expire(d2 - secs(28));
    assert!(h.e.get(1).is_none(), "dropped after its retention");
    h.adopt(&[tw(3, TimeWait, 30_000)], d3 - secs(30));
    assert_eq!(h.e.tracked(), 2);
    h.take();
    for (t, ended) in [
        (d1, None),
        (d2 - 1, None),
        (d2, Some(2)),
        (d3 - 1, None),
        (d3, Some(3)),
    ] {
        let got = expiries(&mut h, t, t, 1);
        assert_eq!(got.first().map(|&(c, _)| c), ended, "at {t}");
    }
    assert_eq!(h.n(TimeWait), 0);
}

#[test]
fn confirmed_by_a_dump_in_any_order_they_fire_in_deadline_order() {
    // 200 inferred TIME_WAITs closed 1 ms apart; a full dump lists them in
    // scrambled order, which moves each deadline 1 s earlier.
    let mut h = H::new();
    let close = |c: u64| secs(10) + c * ms(1) + ms(20);
    for c in 1..=200 {
        h.run(active_open(c, secs(5) + c * ms(1)));
        h.run(active_close(c, secs(10) + c * ms(1)));
    }
    let now = secs(12);
    let dump: Vec<_> = (0..200u64)
        .map(|i| 1 + (i * 67) % 200)
        .map(|c| tw(c, TimeWait, ((close(c) + secs(60) - now) / ms(1)) as u32))
        .collect();
    assert_eq!(h.reconcile(&dump, now).time_wait_confirmed, 200);
    h.take();
    let step = 300_007;
    let got = expiries(&mut h, secs(70), secs(71), step);
    assert_eq!(got.len(), 200);
    assert_on_time(&got, |c| close(c) + secs(60), step);
}

#[test]
fn confirmed_after_their_60_s_they_end_at_once_in_order() {
    // 50 inferred TIME_WAITs closed 1 ms apart, with no full dump for a
    // minute: past 60 s they wait out the slack, until a full dump lists
    // them all (in scrambled order) and they end at 60 s, oldest first.
    let mut h = H::new();
    let close = |c: u64| secs(1) + c * ms(1) + ms(20);
    for c in 1..=50 {
        h.run(active_open(c, c * ms(1)));
        h.run(active_close(c, secs(1) + c * ms(1)));
    }
    h.take();
    h.expire(close(50) + secs(60) + ms(100));
    assert_eq!(h.take(), []);
    let dump: Vec<_> = (0..50u64)
        .map(|i| tw(1 + (i * 17) % 50, TimeWait, 0))
        .collect();
    let rep = h.reconcile(&dump, close(50) + secs(60) + ms(500));
    assert_eq!((rep.time_wait_confirmed, rep.time_wait_expired), (50, 50));
    let want: Vec<Obs> = (1..=50)
        .flat_map(|c| {
            [
                Obs::Stay(c, TimeWait, secs(60), false),
                Obs::TwEnded(c, TimeWaitEnd::Expired),
            ]
        })
        .collect();
    assert_eq!(h.take(), want);
    for c in 1..=50 {
        assert_eq!(h.view(c).state_since_ns(), close(c) + secs(60));
    }
}
