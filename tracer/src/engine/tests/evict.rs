//! The cap: eviction order (finished first, then the oldest TIME_WAIT, and
//! never another live record: a new socket goes untracked instead),
//! counting, the kernel's counts kept true, and memory per socket.
//! Throughput is measured by the benches (benches/engine.rs), not here.
use super::*;
use crate::tcp::TcpState::*;

fn capped(n: usize) -> H {
    H::with(Config {
        max_sockets: n,
        ..Config::default()
    })
}

fn refused(c: u64, t: u64) -> [Ev; 2] {
    [
        ev(c).from(Close).to(SynSent).at(t),
        ev(c).from(SynSent).to(Close).at(t + 1),
    ]
}

#[test]
fn at_the_cap_finished_records_go_first_oldest_first() {
    let mut h = capped(3);
    h.run(active_open(3, 0)); // live, inserted first
    h.run(refused(1, ms(1)));
    h.run(refused(2, ms(2)));
    h.take();
    h.run([ev(4).from(Close).to(SynSent).at(ms(3))]);
    assert_eq!(h.take()[0], Obs::Evicted(1, false));
    h.run([ev(5).from(Close).to(SynSent).at(ms(4))]);
    assert_eq!(h.take()[0], Obs::Evicted(2, false));
    h.run([ev(6).from(Close).to(SynSent).at(ms(5))]);
    assert!(
        h.take().is_empty(),
        "no finished or TIME_WAIT record left: the new socket goes untracked"
    );
    assert_eq!(h.e.tracked(), 3);
    assert_eq!((h.e.stats().evictions, h.e.stats().refused), (2, 1));
    assert!(h.e.get(3).is_some() && h.e.get(6).is_none());
    assert_eq!(h.n(SynSent), 2);
    assert!(h.e.cap_binding());
}

#[test]
fn time_wait_records_go_after_finished_ones_oldest_first() {
    let mut h = capped(3);
    h.run(active_close(1, 0));
    h.run(active_close(7, ms(5)));
    h.run(refused(2, ms(30)));
    h.run([ev(3).from(Close).to(SynSent).at(ms(40))]);
    assert!(
        h.e.get(1).is_some() && h.e.get(2).is_none(),
        "the finished record went, not a TIME_WAIT one"
    );
    h.take();
    h.run([ev(4).from(Close).to(SynSent).at(ms(50))]);
    assert_eq!(h.take()[0], Obs::Evicted(1, true), "the oldest TIME_WAIT");
    assert!(h.e.get(7).is_some() && h.e.get(4).is_some());
}

#[test]
fn churn_stays_under_the_cap() {
    let mut h = capped(100);
    for c in 1..=5000u64 {
        let t = c * ms(1);
        h.e.apply(&ev(c).from(Close).to(SynSent).at(t).0, &mut h.o);
        if c % 3 == 0 {
            h.e.apply(&ev(c).from(SynSent).to(Close).at(t + 1).0, &mut h.o);
        }
        if c % 7 == 0 {
            h.e.apply(
                &ev(c - 1).from(SynSent).to(Established).at(t + 2).0,
                &mut h.o,
            );
        }
        assert!(h.e.tracked() <= 100);
        if c % 97 == 0 {
            h.check();
        }
    }
    h.check();
    let evicted = h.count(|o| matches!(o, Obs::Evicted(..))) as u64;
    assert_eq!(evicted, h.e.stats().evictions);
    assert!(h.e.stats().refused > 4000, "{:?}", h.e.stats());
}

#[test]
fn the_counts_stay_the_kernels_when_the_cap_binds() {
    let mut h = capped(2);
    let dump: Vec<_> = (1..=5).map(|c| diag(c, Established)).collect();
    assert_eq!(h.adopt(&dump, secs(1)), 2);
    assert_eq!(h.n(Established), 2, "records held");
    assert_eq!(
        h.e.sockets_by_state()[Established.index()],
        5,
        "the kernel's"
    );
    assert!(h.e.cap_binding());
    // A full dump recounts: two closed since.
    let mut d2: Vec<_> = (1..=3).map(|c| diag(c, Established)).collect();
    d2.push(tw(9, TimeWait, 50_000));
    h.reconcile(&d2, secs(2));
    let n = h.e.sockets_by_state();
    assert_eq!((n[Established.index()], n[TimeWait.index()]), (3, 1));
    // A live dump leaves the TIME_WAIT count of the last full one alone.
    h.frequent(&d2[..3], secs(3));
    assert_eq!(h.e.sockets_by_state()[TimeWait.index()], 1);
    // Room again: nothing is left untracked.
    let mut h = capped(10);
    h.adopt(&dump, secs(1));
    assert!(!h.e.cap_binding());
    assert_eq!(h.e.sockets_by_state(), h.e.counts_by_state());
}

#[test]
fn dumps_do_not_evict_live_records() {
    let mut h = capped(2);
    h.run(active_open(1, 0));
    h.run(active_open(2, 0));
    assert_eq!(h.adopt(&[diag(3, Established)], secs(1)), 0);
    let rep = h.reconcile(
        &[
            diag(1, Established),
            diag(2, Established),
            diag(3, Established),
        ],
        secs(2),
    );
    assert_eq!((rep.missed, rep.not_adopted), (1, 1));
    assert_eq!(h.e.stats().not_adopted, 2);
    assert!(h.e.get(1).is_some() && h.e.get(2).is_some());
    // With a finished record to spare, the missed socket gets its place.
    h.run([
        rst_rx(2).at(secs(3)),
        ev(2).from(Established).to(Close).at(secs(3)),
    ]);
    h.take();
    let rep = h.reconcile(&[diag(1, Established), diag(3, Established)], secs(4));
    assert_eq!((rep.missed, rep.not_adopted), (1, 0));
    assert!(h.o.0.contains(&Obs::Evicted(2, false)));
    assert!(h.e.get(3).is_some());
}

#[test]
fn a_cap_of_zero_means_one() {
    let mut h = capped(0);
    h.run(active_open(1, 0));
    h.run(active_open(2, ms(5)));
    assert_eq!(h.e.tracked(), 1);
    assert!(h.e.get(1).is_some() && h.e.get(2).is_none());
}

#[test]
fn under_200_bytes_per_socket() {
    // What an empty engine holds (the two TIME_WAIT counts per local
    // port, 512 KiB) is not per socket.
    let fixed = Engine::new(Config::default()).approx_heap_bytes();
    assert!(fixed <= 560 << 10, "{fixed} bytes before any socket");
    for n in [1_000u64, 50_000, 200_000] {
        let mut e = Engine::new(Config::default());
        for c in 1..=n {
            let t = c * 1000;
            // Every other socket ends in TIME_WAIT: both indexes are used.
            e.apply(&ev(c).from(Close).to(SynSent).at(t).0, &mut ());
            if c % 2 == 0 {
                e.apply(&ev(c).from(FinWait2).to(Close).at(t + 1).0, &mut ());
            }
        }
        let per = (e.approx_heap_bytes() - fixed) as f64 / e.tracked() as f64;
        assert!(per < 200.0, "{per:.0} bytes per socket at {n}");
    }
}
