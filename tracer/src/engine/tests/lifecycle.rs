//! Per-connection facts from events: the owner (only from syscall
//! context), half-close, reconnects, counters, age, endpoints, counts.
use super::*;
use crate::tcp::TcpState::*;

fn cat<const A: usize, const B: usize>(a: [Ev; A], b: [Ev; B]) -> Vec<Ev> {
    a.into_iter().chain(b).collect()
}

#[test]
fn owner_only_from_syscall_context() {
    // (from, to, the event's task becomes the owner)
    let table = [
        (Close, SynSent, true),
        (Close, Listen, true),
        (Listen, Close, true),
        (Established, FinWait1, true),
        (CloseWait, LastAck, true),
        (Established, Close, true),
        (Listen, SynRecv, false),
        (SynRecv, Established, false),
        (SynSent, Established, false),
        (Established, CloseWait, false),
        (FinWait1, FinWait2, false),
        (FinWait2, Close, false),
        (LastAck, Close, false),
        (SynSent, Close, false),
    ];
    for (from, to, owner) in table {
        let mut h = H::new();
        h.run([ev(1).from(from).to(to).at(ms(1)).by(4321, "app")]);
        let got = h.view(1).owner();
        if owner {
            let o = got.unwrap_or_else(|| panic!("{from}->{to} should reveal the owner"));
            assert_eq!((o.pid, o.comm_str()), (4321, "app"));
        } else {
            assert_eq!(got, None, "{from}->{to} runs in softirq");
        }
    }
}

#[test]
fn owner_is_the_first_syscall_task_and_ignores_softirq_victims() {
    let mut h = H::new();
    h.run([
        ev(1).from(Listen).to(SynRecv).at(0).by(7, "victim"),
        ev(1)
            .from(SynRecv)
            .to(Established)
            .at(ms(1))
            .by(8, "victim2"),
        ev(1)
            .from(Established)
            .to(CloseWait)
            .at(ms(2))
            .by(9, "victim3"),
    ]);
    assert_eq!(h.view(1).owner(), None);
    h.run([ev(1).from(CloseWait).to(LastAck).at(ms(3)).by(100, "nginx")]);
    h.run([ev(1).from(LastAck).to(Close).at(ms(4)).by(10, "victim4")]);
    let o = h.view(1).owner().expect("owner");
    assert_eq!((o.pid, o.comm_str()), (100, "nginx"));
}

#[test]
fn owner_not_taken_from_a_reset_close_in_softirq_nor_pid_zero() {
    let mut h = H::new();
    h.run([
        ev(1).from(SynSent).to(Established).at(0),
        rst_rx(1).at(ms(1)),
    ]);
    h.run([ev(1).from(Established).to(Close).at(ms(1)).by(77, "victim")]);
    assert_eq!(
        h.view(1).owner(),
        None,
        "established->close after a received reset runs in softirq"
    );

    let mut h = H::new();
    h.run([
        ev(2).from(SynSent).to(Established).at(0),
        rst_tx(2).at(ms(1)),
    ]);
    h.run([ev(2).from(Established).to(Close).at(ms(1)).by(77, "app")]);
    assert_eq!(
        h.view(2).owner().map(|o| o.pid),
        Some(77),
        "an abort by close() runs in the owner"
    );

    let mut h = H::new();
    h.run([ev(3).from(Close).to(SynSent).at(0).by(0, "swapper/0")]);
    assert_eq!(h.view(3).owner(), None, "pid 0 is never an owner");
}

#[test]
fn half_closed_after_threshold() {
    // (half-closed state, how long, half_closed)
    let table = [
        (CloseWait, ms(500), false),
        (CloseWait, ms(1500), true),
        (FinWait2, ms(1000), false),
        (FinWait2, secs(2), true),
    ];
    for (state, dur, want) in table {
        let mut h = H::new();
        let (enter, leave) = match state {
            CloseWait => (
                ev(1).from(Established).to(CloseWait),
                ev(1).from(CloseWait).to(LastAck),
            ),
            _ => (
                ev(1).from(FinWait1).to(FinWait2),
                ev(1).from(FinWait2).to(Close),
            ),
        };
        h.run([enter.at(secs(1)), leave.at(secs(1) + dur)]);
        assert_eq!(h.view(1).half_closed(), want, "{state} for {dur} ns");
    }
    let mut h = H::with(Config {
        half_closed_threshold_ns: ms(100),
        ..Config::default()
    });
    h.run([
        ev(1).from(Established).to(CloseWait).at(0),
        ev(1).from(CloseWait).to(LastAck).at(ms(200)),
    ]);
    assert!(h.view(1).half_closed(), "the threshold is configurable");
}

/// A peer that resets a CLOSE_WAIT socket (a reconnect from the same
/// port) ends the connection, though the peer began closing it.
#[test]
fn a_reset_in_close_wait_ended_the_connection_the_peer_began_closing() {
    let mut h = H::new();
    let open = |c| {
        [
            ev(c).from(SynSent).to(Established).at(0),
            ev(c).from(Established).to(CloseWait).at(ms(1)),
        ]
    };
    h.run(cat(
        open(1),
        [
            rst_rx(1).at(ms(5)),
            ev(1).from(CloseWait).to(Close).at(ms(5)).err(libc::EPIPE),
        ],
    ));
    let v = h.view(1);
    assert_eq!(v.closed_by(), Some(ClosedBy::Remote));
    assert_eq!(v.ended_by(), Some(ClosedBy::Reset));
    assert_eq!(h.n(CloseWait), 0);
    // Closed by its process: who began closing is how it ended.
    h.run(cat(
        open(2),
        [
            ev(2).from(CloseWait).to(LastAck).at(ms(5)),
            ev(2).from(LastAck).to(Close).at(ms(6)),
        ],
    ));
    assert_eq!(h.view(2).ended_by(), Some(ClosedBy::Remote));
    // A reset that ended one life does not end the next on the same
    // cookie (a socket connected again).
    h.run([
        ev(1).from(Close).to(SynSent).at(ms(20)),
        ev(1).from(SynSent).to(Established).at(ms(21)),
        ev(1).from(Established).to(CloseWait).at(ms(22)),
        ev(1).from(CloseWait).to(LastAck).at(ms(23)),
        ev(1).from(LastAck).to(Close).at(ms(24)),
    ]);
    assert_eq!(h.view(1).ended_by(), Some(ClosedBy::Remote));
    // The close's EPIPE says so when the reset's own event was not read.
    h.run(cat(
        open(3),
        [ev(3).from(CloseWait).to(Close).at(ms(5)).err(libc::EPIPE)],
    ));
    assert_eq!(h.view(3).ended_by(), Some(ClosedBy::Reset));
}

#[test]
fn a_refused_socket_can_connect_again_on_the_same_cookie() {
    let mut h = H::new();
    h.run([
        ev(1).from(Close).to(SynSent).at(0),
        rst_rx(1).at(ms(1)),
        ev(1).from(SynSent).to(Close).at(ms(1)),
    ]);
    assert!(!h.view(1).is_live());
    assert_eq!(h.n(SynSent), 0);
    h.run([
        ev(1).from(Close).to(SynSent).at(ms(2)),
        ev(1).from(SynSent).to(Established).at(ms(3)),
    ]);
    let v = h.view(1);
    assert!(v.is_live());
    assert_eq!(v.state(), Established);
    assert_eq!(v.closed_by(), None, "a new life forgets the old close");
    assert_eq!(v.resets_received(), 1);
    assert_eq!(h.n(Established), 1);
    assert_eq!(h.e.stats().path_gap, 0);
}

#[test]
fn counters_on_the_record_and_untracked_events() {
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.run([
        ev(1).kind(Kind::Retransmit).at(ms(2)),
        ev(1).kind(Kind::Retransmit).at(ms(3)),
        ev(1).kind(Kind::SynackRetransmit).at(ms(3)),
        rst_tx(1).at(ms(4)),
        ev(2).kind(Kind::Retransmit).at(ms(5)),
        rst_tx(0).at(ms(6)),
    ]);
    let v = h.view(1);
    assert_eq!(
        (
            v.retransmits(),
            v.synack_retransmits(),
            v.resets_sent(),
            v.resets_received()
        ),
        (2, 1, 1, 0)
    );
    assert!(
        h.e.get(2).is_none(),
        "a retransmit does not create a record"
    );
    assert!(h.e.get(0).is_none());
    assert_eq!(
        h.count(|o| matches!(o, Obs::Retrans(_))),
        3,
        "every retransmit is still reported"
    );
    assert_eq!(
        h.count(|o| matches!(o, Obs::Reset(0, Direction::Sent))),
        1,
        "a reset without a socket is reported"
    );
    assert_eq!(h.e.stats().untracked_events, 2);
    assert_eq!(h.e.stats().events, 8);
}

#[test]
fn birth_and_age() {
    let mut h = H::new();
    h.run([ev(1).from(Close).to(SynSent).at(ms(5))]);
    assert!(h.view(1).birth_seen());
    assert_eq!(h.view(1).created_ns(), ms(5));
    h.run([ev(2).from(Established).to(FinWait1).at(ms(9))]);
    assert!(!h.view(2).birth_seen(), "first seen mid-life");
    assert_eq!(h.view(2).created_ns(), ms(9));
    assert!(
        !h.view(2).since_is_lower_bound(),
        "the entry into fin_wait1 itself was seen"
    );
}

#[test]
fn counts_follow_a_life() {
    let mut h = H::new();
    let mut seen = vec![];
    let evs: Vec<Ev> = cat(active_open(1, 0), active_close(1, ms(10)));
    for e in evs {
        h.run([e]);
        let live: Vec<_> = TcpState::ALL.into_iter().filter(|s| h.n(*s) > 0).collect();
        seen.push(live);
    }
    assert_eq!(
        seen,
        vec![
            vec![SynSent],
            vec![Established],
            vec![FinWait1],
            vec![FinWait2],
            vec![TimeWait]
        ]
    );
    assert_eq!(h.e.stats().live, 1);
}

#[test]
fn endpoints_and_family_in_the_view() {
    let mut h = H::new();
    let mut e = ev(1).from(Close).to(SynSent).ports(41000, 443);
    e.0.family = Some(Family::Ipv6);
    e.0.saddr = "2001:db8::1".parse().expect("addr");
    e.0.daddr = "2001:db8::2".parse().expect("addr");
    h.run([e]);
    let v = h.view(1);
    assert_eq!(v.family(), Family::Ipv6);
    assert_eq!(v.local(), "[2001:db8::1]:41000".parse().expect("addr"));
    assert_eq!(v.remote(), "[2001:db8::2]:443".parse().expect("addr"));
    h.run([ev(2).from(Close).to(SynSent)]);
    assert_eq!(h.view(2).local(), "198.18.0.1:10002".parse().expect("addr"));
}

#[test]
fn no_op_and_nameless_state_events_track_nothing() {
    let mut h = H::new();
    h.run(active_open(1, 0));
    h.take();
    h.run([ev(1).from(Established).to(Established).at(ms(5))]);
    assert!(h.take().is_empty(), "a self transition ends no stay");
    assert_eq!(h.view(1).state_since_ns(), ms(1));
    h.run([ev(0).from(Close).to(SynSent).at(ms(6))]);
    assert!(h.e.get(0).is_none());
    assert_eq!(
        h.take(),
        [Obs::Trans(0, Close, SynSent)],
        "still counted as a transition"
    );
    assert_eq!(h.e.stats().untracked_events, 1);
}
