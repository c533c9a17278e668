//! Whole connection lives from events alone: paths, stays, who closed,
//! owner, half-close, and what the observer hears.
use super::*;
use crate::tcp::TcpState::*;

struct Case {
    name: &'static str,
    events: Vec<Ev>,
    state: TcpState,
    path: &'static [TcpState],
    closed_by: Option<ClosedBy>,
    /// Every stay reported, in order (all exact: lower_bound false).
    stays: &'static [(TcpState, u64)],
    /// `Some(by)` when the observer must hear `closed(by)` exactly once.
    closed: Option<Option<ClosedBy>>,
}

fn cat<const A: usize, const B: usize>(a: [Ev; A], b: [Ev; B]) -> Vec<Ev> {
    a.into_iter().chain(b).collect()
}

fn passive_open(c: u64) -> [Ev; 2] {
    [ev(c).from(Listen).to(SynRecv).at(0), ev(c).from(SynRecv).to(Established).at(ms(1))]
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "active open, active close: TIME_WAIT inferred",
            events: cat(active_open(1, 0), active_close(1, ms(100))),
            state: TimeWait,
            path: &[Close, SynSent, Established, FinWait1, FinWait2, Close, TimeWait],
            closed_by: Some(ClosedBy::Local),
            stays: &[(SynSent, ms(1)), (Established, ms(99)), (FinWait1, ms(10)), (FinWait2, ms(10))],
            closed: Some(Some(ClosedBy::Local)),
        },
        Case {
            name: "passive open, passive close: close_wait measured exactly",
            events: cat(
                passive_open(1),
                [
                    ev(1).from(Established).to(CloseWait).at(ms(101)),
                    ev(1).from(CloseWait).to(LastAck).at(ms(601)),
                    ev(1).from(LastAck).to(Close).at(ms(602)),
                ],
            ),
            state: Close,
            path: &[Listen, SynRecv, Established, CloseWait, LastAck, Close],
            closed_by: Some(ClosedBy::Remote),
            stays: &[(SynRecv, ms(1)), (Established, ms(100)), (CloseWait, ms(500)), (LastAck, ms(1))],
            closed: Some(Some(ClosedBy::Remote)),
        },
        Case {
            name: "simultaneous close: closing -> close leaves TIME_WAIT",
            events: cat(
                active_open(1, 0),
                [
                    ev(1).from(Established).to(FinWait1).at(ms(10)),
                    ev(1).from(FinWait1).to(Closing).at(ms(11)),
                    ev(1).from(Closing).to(Close).at(ms(13)),
                ],
            ),
            state: TimeWait,
            path: &[Close, SynSent, Established, FinWait1, Closing, Close, TimeWait],
            closed_by: Some(ClosedBy::Local),
            stays: &[(SynSent, ms(1)), (Established, ms(9)), (FinWait1, ms(1)), (Closing, ms(2))],
            closed: Some(Some(ClosedBy::Local)),
        },
        Case {
            name: "refused connect: reset received in syn_sent",
            events: vec![
                ev(1).from(Close).to(SynSent).at(0),
                rst_rx(1).at(ms(1)),
                ev(1).from(SynSent).to(Close).at(ms(1)),
            ],
            state: Close,
            path: &[Close, SynSent, Close],
            closed_by: Some(ClosedBy::Reset),
            stays: &[(SynSent, ms(1))],
            closed: Some(Some(ClosedBy::Reset)),
        },
        Case {
            name: "reset received in established",
            events: cat(active_open(1, 0), [rst_rx(1).at(ms(50)), ev(1).from(Established).to(Close).at(ms(50))]),
            state: Close,
            path: &[Close, SynSent, Established, Close],
            closed_by: Some(ClosedBy::Reset),
            stays: &[(SynSent, ms(1)), (Established, ms(49))],
            closed: Some(Some(ClosedBy::Reset)),
        },
        Case {
            name: "abort: reset sent in established",
            events: cat(active_open(1, 0), [rst_tx(1).at(ms(5)), ev(1).from(Established).to(Close).at(ms(5))]),
            state: Close,
            path: &[Close, SynSent, Established, Close],
            closed_by: Some(ClosedBy::Reset),
            stays: &[(SynSent, ms(1)), (Established, ms(4))],
            closed: Some(Some(ClosedBy::Reset)),
        },
        Case {
            name: "reset in close_wait: the peer still closed first",
            events: cat(
                passive_open(1),
                [
                    ev(1).from(Established).to(CloseWait).at(ms(2)),
                    rst_tx(1).at(ms(3)),
                    ev(1).from(CloseWait).to(Close).at(ms(3)),
                ],
            ),
            state: Close,
            path: &[Listen, SynRecv, Established, CloseWait, Close],
            closed_by: Some(ClosedBy::Remote),
            stays: &[(SynRecv, ms(1)), (Established, ms(1)), (CloseWait, ms(1))],
            closed: Some(Some(ClosedBy::Remote)),
        },
        Case {
            name: "fin_wait1 -> close is an abort: no TIME_WAIT",
            events: cat(
                active_open(1, 0),
                [ev(1).from(Established).to(FinWait1).at(ms(2)), ev(1).from(FinWait1).to(Close).at(ms(7))],
            ),
            state: Close,
            path: &[Close, SynSent, Established, FinWait1, Close],
            closed_by: Some(ClosedBy::Local),
            stays: &[(SynSent, ms(1)), (Established, ms(1)), (FinWait1, ms(5))],
            closed: Some(Some(ClosedBy::Local)),
        },
        Case {
            name: "reset in fin_wait2: closed without a timewait socket",
            events: cat(
                active_open(1, 0),
                [
                    ev(1).from(Established).to(FinWait1).at(ms(2)),
                    ev(1).from(FinWait1).to(FinWait2).at(ms(3)),
                    rst_rx(1).at(ms(4)),
                    ev(1).from(FinWait2).to(Close).at(ms(4)),
                ],
            ),
            state: Close,
            path: &[Close, SynSent, Established, FinWait1, FinWait2, Close],
            closed_by: Some(ClosedBy::Local),
            stays: &[(SynSent, ms(1)), (Established, ms(1)), (FinWait1, ms(1)), (FinWait2, ms(1))],
            closed: Some(Some(ClosedBy::Local)),
        },
        Case {
            name: "connect timeout: nobody closed",
            events: vec![ev(1).from(Close).to(SynSent).at(0), ev(1).from(SynSent).to(Close).at(secs(3))],
            state: Close,
            path: &[Close, SynSent, Close],
            closed_by: None,
            stays: &[(SynSent, secs(3))],
            closed: Some(None),
        },
        Case {
            name: "listener lives and closes",
            events: vec![ev(1).from(Close).to(Listen).at(0), ev(1).from(Listen).to(Close).at(secs(10))],
            state: Close,
            path: &[Close, Listen, Close],
            closed_by: None,
            stays: &[(Listen, secs(10))],
            closed: Some(None),
        },
        Case {
            name: "a time_wait the kernel reports directly is taken as such",
            events: cat(
                active_open(1, 0),
                [
                    ev(1).from(Established).to(FinWait1).at(ms(2)),
                    ev(1).from(FinWait1).to(FinWait2).at(ms(3)),
                    ev(1).from(FinWait2).to(TimeWait).at(ms(4)),
                ],
            ),
            state: TimeWait,
            path: &[Close, SynSent, Established, FinWait1, FinWait2, TimeWait],
            closed_by: Some(ClosedBy::Local),
            stays: &[(SynSent, ms(1)), (Established, ms(1)), (FinWait1, ms(1)), (FinWait2, ms(1))],
            closed: Some(Some(ClosedBy::Local)),
        },
        Case {
            name: "first seen mid-life: no stay for the unseen state",
            events: vec![
                ev(1).from(Established).to(CloseWait).at(secs(1)),
                ev(1).from(CloseWait).to(LastAck).at(secs(3)),
            ],
            state: LastAck,
            path: &[Established, CloseWait, LastAck],
            closed_by: Some(ClosedBy::Remote),
            stays: &[(CloseWait, secs(2))],
            closed: None,
        },
    ]
}

#[test]
fn lives_table() {
    for c in cases() {
        let mut h = H::new();
        h.run(c.events.iter().copied());
        let v = h.view(1);
        assert_eq!(v.state(), c.state, "{}: state", c.name);
        assert_eq!(h.path(1), c.path, "{}: path", c.name);
        assert_eq!(v.closed_by(), c.closed_by, "{}: closed_by", c.name);
        let want: Vec<_> = c.stays.iter().map(|&(s, d)| (s, d, false)).collect();
        assert_eq!(h.stays(), want, "{}: stays", c.name);
        let closed: Vec<_> = h.o.0.iter().filter_map(|o| if let Obs::Closed(_, by) = o { Some(*by) } else { None }).collect();
        assert_eq!(closed, c.closed.into_iter().collect::<Vec<_>>(), "{}: closed()", c.name);
        assert_eq!(v.in_time_wait(), c.state == TimeWait, "{}: in_time_wait", c.name);
        assert!(!v.time_wait_confirmed(), "{}: nothing confirms without a dump", c.name);
        assert_eq!(v.is_live(), c.state != Close, "{}: live", c.name);
        let transitions = h.count(|o| matches!(o, Obs::Trans(..)));
        let state_events = c.events.iter().filter(|e| e.0.kind == Kind::State).count();
        assert_eq!(transitions, state_events, "{}: one transition per state event", c.name);
        let s = h.e.stats();
        assert_eq!((s.duplicates, s.out_of_order), (0, 0), "{}", c.name);
        let gaps = if c.name.starts_with("first seen") { 0 } else { s.path_gap };
        assert_eq!(gaps, 0, "{}: path gaps", c.name);
    }
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
        ev(1).from(SynRecv).to(Established).at(ms(1)).by(8, "victim2"),
        ev(1).from(Established).to(CloseWait).at(ms(2)).by(9, "victim3"),
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
    h.run([ev(1).from(SynSent).to(Established).at(0), rst_rx(1).at(ms(1))]);
    h.run([ev(1).from(Established).to(Close).at(ms(1)).by(77, "victim")]);
    assert_eq!(h.view(1).owner(), None, "established->close after a received reset runs in softirq");

    let mut h = H::new();
    h.run([ev(2).from(SynSent).to(Established).at(0), rst_tx(2).at(ms(1))]);
    h.run([ev(2).from(Established).to(Close).at(ms(1)).by(77, "app")]);
    assert_eq!(h.view(2).owner().map(|o| o.pid), Some(77), "an abort by close() runs in the owner");

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
            CloseWait => (ev(1).from(Established).to(CloseWait), ev(1).from(CloseWait).to(LastAck)),
            _ => (ev(1).from(FinWait1).to(FinWait2), ev(1).from(FinWait2).to(Close)),
        };
        h.run([enter.at(secs(1)), leave.at(secs(1) + dur)]);
        assert_eq!(h.view(1).half_closed(), want, "{state} for {dur} ns");
    }
    let mut h = H::with(Config { half_closed_threshold_ns: ms(100), ..Config::default() });
    h.run([ev(1).from(Established).to(CloseWait).at(0), ev(1).from(CloseWait).to(LastAck).at(ms(200))]);
    assert!(h.view(1).half_closed(), "the threshold is configurable");
}

#[test]
fn a_refused_socket_can_connect_again_on_the_same_cookie() {
    let mut h = H::new();
    h.run([ev(1).from(Close).to(SynSent).at(0), rst_rx(1).at(ms(1)), ev(1).from(SynSent).to(Close).at(ms(1))]);
    assert!(!h.view(1).is_live());
    assert_eq!(h.n(SynSent), 0);
    h.run([ev(1).from(Close).to(SynSent).at(ms(2)), ev(1).from(SynSent).to(Established).at(ms(3))]);
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
    assert_eq!((v.retransmits(), v.synack_retransmits(), v.resets_sent(), v.resets_received()), (2, 1, 1, 0));
    assert!(h.e.get(2).is_none(), "a retransmit does not create a record");
    assert!(h.e.get(0).is_none());
    assert_eq!(h.count(|o| matches!(o, Obs::Retrans(_))), 3, "every retransmit is still reported");
    assert_eq!(h.count(|o| matches!(o, Obs::Reset(0, Direction::Sent))), 1, "a reset without a socket is reported");
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
    assert!(!h.view(2).since_is_lower_bound(), "the entry into fin_wait1 itself was seen");
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
    assert_eq!(seen, vec![vec![SynSent], vec![Established], vec![FinWait1], vec![FinWait2], vec![TimeWait]]);
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
