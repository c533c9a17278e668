//! TIME_WAIT on a busy host: stays recycled by a new connection on their
//! 4-tuple (client and server side), the namespace's `tcp_max_tw_buckets`
//! overflowing, and stays that end when the kernel's timer wheel ends them.
use super::*;
use crate::engine::{TCP_TIMEWAIT_LEN_NS, TimeWaitClock};
use crate::tcp::TcpState::*;

const NS: u32 = 4026532100;

/// Cookie `c` on local port `lport` to remote port 80 closes first at `t`:
/// TIME_WAIT (inferred) from `t + 2 ms`.
fn closes_first(h: &mut H, c: u64, lport: u16, t: u64) {
    h.run([
        ev(c)
            .netns(NS)
            .ports(lport, 80)
            .from(Established)
            .to(FinWait1)
            .at(t),
        ev(c)
            .netns(NS)
            .ports(lport, 80)
            .from(FinWait1)
            .to(FinWait2)
            .at(t + ms(1)),
        ev(c)
            .netns(NS)
            .ports(lport, 80)
            .from(FinWait2)
            .to(Close)
            .at(t + ms(2)),
    ]);
}

#[test]
fn a_client_reusing_the_port_ends_the_stay_at_its_handshake() {
    let mut h = H::new();
    closes_first(&mut h, 1, 40000, secs(1));
    h.take();
    // connect() reports syn_sent before it picks the port (sport 0): the
    // tuple shows only at established.
    h.run([ev(2)
        .netns(NS)
        .ports(0, 80)
        .from(Close)
        .to(SynSent)
        .at(secs(3))]);
    assert!(h.view(1).in_time_wait(), "no tuple yet, nothing reused");
    h.run([ev(2)
        .netns(NS)
        .ports(40000, 80)
        .from(SynSent)
        .to(Established)
        .at(secs(3) + ms(1))]);
    let obs = h.take();
    assert!(
        obs.contains(&Obs::Stay(1, TimeWait, secs(2) + ms(1) - ms(2), false)),
        "the real dwell, not 60 s: {obs:?}"
    );
    assert!(obs.contains(&Obs::TwEnded(1, TimeWaitEnd::Reused)));
    assert_eq!(h.n(TimeWait), 0);
    assert_eq!(h.n(Established), 1);
    assert_eq!(h.e.stats().time_wait_reused, 1);
}

#[test]
fn asking_ahead_for_a_reuse_changes_nothing() {
    let mut h = H::new();
    // Nothing held yet: the tables are not even allocated.
    h.e.prefetch(&ev(9).from(Close).to(SynSent).0);
    closes_first(&mut h, 1, 40000, secs(1));
    let reuse = ev(2)
        .netns(NS)
        .ports(40000, 80)
        .from(SynSent)
        .to(Established)
        .at(secs(3));
    h.take();
    let before = (h.e.stats(), h.n(TimeWait));
    for e in [reuse, ev(1), rst_rx(1), ev(3).from(Listen).to(SynRecv)] {
        h.e.prefetch(&e.0);
    }
    h.check();
    assert_eq!((h.e.stats(), h.n(TimeWait)), before);
    assert_eq!(h.take(), [], "nothing observed");
    assert!(h.view(1).in_time_wait());
    h.run([reuse]);
    assert_eq!(h.e.stats().time_wait_reused, 1);
}

#[test]
fn a_reuse_whose_handshake_event_was_lost_is_seen_at_the_next_event() {
    let mut h = H::new();
    closes_first(&mut h, 1, 40000, secs(1));
    // syn_sent without a port, then the kernel skipped syn_sent ->
    // established: the close shows the tuple first.
    h.run([ev(2)
        .netns(NS)
        .ports(0, 80)
        .from(Close)
        .to(SynSent)
        .at(secs(3))]);
    h.run([ev(2)
        .netns(NS)
        .ports(40000, 80)
        .from(Established)
        .to(FinWait1)
        .at(secs(4))]);
    assert_eq!(h.view(1).time_wait_end(), Some(TimeWaitEnd::Reused));
    assert!(
        h.o.0
            .contains(&Obs::Stay(1, TimeWait, secs(3) - ms(2), false))
    );
    // Later events of the same socket and tuple look nothing up again.
    h.run([ev(2)
        .netns(NS)
        .ports(40000, 80)
        .from(FinWait1)
        .to(FinWait2)
        .at(secs(5))]);
    assert_eq!(h.e.stats().time_wait_reused, 1);
}

#[test]
fn a_syn_taking_over_a_server_side_stay_ends_it_even_without_a_cookie() {
    let mut h = H::new();
    // The server (port 8080) closed first: TIME_WAIT on 8080 -> 51000.
    closes_first(&mut h, 1, 8080, secs(1));
    // Kernels up to 6.12 give the request socket of listen -> syn_recv no
    // cookie; the tuple is enough.
    h.run([ev(0)
        .netns(NS)
        .ports(8080, 80)
        .from(Listen)
        .to(SynRecv)
        .at(secs(4))]);
    assert_eq!(h.view(1).time_wait_end(), Some(TimeWaitEnd::Reused));
    assert!(
        h.o.0
            .contains(&Obs::Stay(1, TimeWait, secs(3) - ms(2), false))
    );
    assert_eq!(h.n(TimeWait), 0);
}

#[test]
fn a_stay_no_dump_confirmed_yet_is_reused_and_not_judged_later() {
    let mut h = H::new();
    closes_first(&mut h, 1, 40000, secs(1));
    assert!(!h.view(1).time_wait_confirmed());
    h.run(active_open(2, secs(2)).map(|e| e.netns(NS).ports(40000, 80)));
    assert_eq!(h.view(1).time_wait_end(), Some(TimeWaitEnd::Reused));
    // The next full dump shows cookie 2 only: cookie 1 is not "never
    // appeared", it ended.
    let mut d = diag(2, Established);
    d.netns = NS;
    d.sport = 40000;
    let rep = h.reconcile(&[d], secs(3));
    assert_eq!(rep.time_wait_never_appeared, 0);
    assert_eq!(h.e.stats().time_wait_reused, 1);
}

#[test]
fn the_same_tuple_established_in_another_namespace_reuses_nothing() {
    let mut h = H::new();
    closes_first(&mut h, 1, 40000, secs(1));
    h.run(active_open(2, secs(2)).map(|e| e.netns(NS + 1).ports(40000, 80)));
    assert!(h.view(1).in_time_wait());
    assert_eq!(h.e.stats().time_wait_reused, 0);
}

#[test]
fn a_full_namespace_leaves_no_time_wait_as_the_kernel_does() {
    let mut h = H::new();
    h.e.set_time_wait_limit(NS, 2);
    for c in 1..=3 {
        closes_first(&mut h, c, 40000 + c as u16, secs(c));
    }
    assert_eq!(h.n(TimeWait), 2, "the limit holds");
    assert!(h.view(1).in_time_wait() && h.view(2).in_time_wait());
    let v = h.view(3);
    assert!(!v.is_live() && !v.in_time_wait(), "the third overflowed");
    assert_eq!(h.e.stats().time_wait_overflows, 1);
    // Another namespace has its own limit (here none known).
    h.run([ev(9).netns(NS + 1).from(FinWait2).to(Close).at(secs(4))]);
    assert!(h.view(9).in_time_wait());
    // Once one ends (reused), there is room for the next close again.
    h.run(active_open(4, secs(5)).map(|e| e.netns(NS).ports(40001, 80)));
    closes_first(&mut h, 5, 40005, secs(6));
    assert!(h.view(5).in_time_wait());
    assert_eq!(h.n(TimeWait), 3, "two in NS, one in NS + 1");
    // A full dump that agrees changes nothing.
    h.e.forget_time_wait_limits(&[NS]);
    closes_first(&mut h, 6, 40006, secs(7));
    assert!(
        h.view(6).in_time_wait(),
        "no limit known: inferred as before"
    );
}

#[test]
fn a_time_wait_adopted_where_the_limit_was_reached_is_not_counted_as_missed() {
    let mut h = H::new();
    h.e.set_time_wait_limit(NS, 1);
    closes_first(&mut h, 1, 40001, secs(1));
    closes_first(&mut h, 2, 40002, secs(2));
    assert_eq!(h.e.stats().time_wait_overflows, 1, "the second overflowed");
    // The kernel had room after all: a full dump lists a timewait socket
    // the engine does not hold (here a cookie it never saw), beside the
    // first. In another namespace, where nothing overflowed, it is missed.
    let at_limit = tw(50, TimeWait, 50_000).netns(NS).local(LOCAL, 40050);
    let elsewhere = tw(51, TimeWait, 50_000).netns(NS + 1).local(LOCAL, 40051);
    let first = tw(1, TimeWait, 59_000).netns(NS).local(LOCAL, 40001);
    let rep = h.reconcile(&[first, at_limit, elsewhere], secs(3));
    assert_eq!((rep.time_wait_at_limit, rep.missed), (1, 1));
    assert!(h.o.0.contains(&Obs::Corr(50, Correction::TimeWaitAtLimit)));
    assert!(h.o.0.contains(&Obs::Corr(51, Correction::Missed)));
    assert!(h.view(50).in_time_wait(), "adopted all the same");
    // That dump covered the namespace: a socket the next one adds is
    // missed, unless another close overflows first.
    let later = tw(52, TimeWait, 50_000).netns(NS).local(LOCAL, 40052);
    let rep = h.reconcile(&[first, at_limit, later], secs(4));
    assert_eq!((rep.time_wait_at_limit, rep.missed), (0, 1));
}

#[test]
fn a_full_dump_past_the_limit_ends_the_unconfirmed_closes_it_lacks_at_once() {
    let mut h = H::new();
    h.e.set_time_wait_limit(NS, 2);
    for c in 1..=3 {
        closes_first(&mut h, c, 40000 + c as u16, secs(c));
    }
    assert!(!h.view(3).in_time_wait(), "the third judged overflowed");
    // The kernel kept the first and the third and refused the second.
    // Once the third's record is dropped (5 s after its close), a dump
    // adopts its timewait socket: three timewait records where the
    // namespace holds at most two, so the second, unconfirmed and absent,
    // is one the kernel never created.
    h.run(active_open(9, secs(9)).map(|e| e.netns(NS + 1)));
    let first = tw(1, TimeWait, 51_000).netns(NS).local(LOCAL, 40001);
    let third = tw(3, TimeWait, 53_000).netns(NS).local(LOCAL, 40003);
    let rep = h.reconcile(&[first, third], secs(10));
    assert_eq!(
        (rep.time_wait_at_limit, rep.time_wait_never_appeared),
        (1, 1)
    );
    assert!(h.view(2).time_wait_never_appeared() && !h.view(2).is_live());
    assert!(h.view(1).in_time_wait() && h.view(3).in_time_wait());
    assert_eq!(h.n(TimeWait), 2, "the count is back at the limit");
    // Under the limit, an unconfirmed record absent once still waits for
    // the next full dump (a dump racing churn can skip sockets).
    closes_first(&mut h, 4, 40004, secs(11));
    assert!(!h.view(4).in_time_wait(), "full again: overflowed");
    h.e.set_time_wait_limit(NS, 10);
    closes_first(&mut h, 5, 40005, secs(12));
    let rep = h.reconcile(&[first, third], secs(13));
    assert_eq!(rep.time_wait_never_appeared, 0);
    assert!(h.view(5).in_time_wait());
}

#[test]
fn with_the_kernels_clock_a_stay_ends_at_its_bucket_not_at_60_s() {
    // HZ=250 with the tick grid at multiples of 4 ms.
    let clock = TimeWaitClock::new(250, 0, secs(100), 4_294_892_296 + 25_000).unwrap();
    let mut h = H::with(Config {
        time_wait_clock: Some(clock),
        ..Config::default()
    });
    let close = secs(200) + ms(3);
    closes_first(&mut h, 1, 40000, close - ms(2));
    let end = clock.end_ns(close);
    assert!(
        end > close + TCP_TIMEWAIT_LEN_NS,
        "rounded up to its bucket"
    );
    h.reconcile(&[in_ns(tw(1, TimeWait, 59_000), NS)], close + secs(1));
    assert!(h.view(1).time_wait_confirmed());
    h.take();
    h.expire(close + TCP_TIMEWAIT_LEN_NS);
    assert!(h.view(1).in_time_wait(), "60 s are not enough");
    h.expire(end - 1);
    assert!(h.view(1).in_time_wait());
    h.expire(end);
    assert_eq!(
        h.take(),
        vec![
            Obs::Stay(1, TimeWait, end - close, false),
            Obs::TwEnded(1, TimeWaitEnd::Expired)
        ]
    );
    assert_eq!(h.n(TimeWait), 0);
}

#[test]
fn a_full_dump_that_skips_a_stay_once_does_not_end_it() {
    let mut h = H::new();
    closes_first(&mut h, 1, 40000, secs(1));
    h.reconcile(&[in_ns(tw(1, TimeWait, 59_000), NS)], secs(2));
    assert!(h.view(1).time_wait_confirmed());
    // A dump racing with churn skipped it: still in TIME_WAIT, and the
    // next dump that shows it clears the doubt.
    let rep = h.reconcile(&[], secs(4));
    assert_eq!(rep.time_wait_killed, 0);
    assert!(h.view(1).in_time_wait());
    h.reconcile(&[in_ns(tw(1, TimeWait, 55_000), NS)], secs(6));
    h.reconcile(&[], secs(8));
    assert!(
        h.view(1).in_time_wait(),
        "absent once again, not twice in a row"
    );
    // Absent from two full dumps in a row: killed, ended at the second.
    let rep = h.reconcile(&[], secs(10));
    assert_eq!(rep.time_wait_killed, 1);
    assert_eq!(h.view(1).time_wait_end(), Some(TimeWaitEnd::Reset));
    assert_eq!(h.n(TimeWait), 0);
}

fn in_ns(mut d: SocketSnapshot, netns: u32) -> SocketSnapshot {
    d.netns = netns;
    d.sport = 40000;
    d
}
