//! Whole connection lives from events alone, as a table: path, stays,
//! who closed, and what the observer hears.
use super::*;
use crate::tcp::TcpState::*;

struct Case {
    name: &'static str,
    events: Vec<Ev>,
    state: TcpState,
    path: &'static [TcpState],
    closed_by: Option<ClosedBy>,
    /// Every stay reported, in order (all exact: lower_bound false).
    stays: Vec<(TcpState, u64)>,
    /// `Some(by)` when the observer must hear `closed(by)` exactly once.
    closed: Option<Option<ClosedBy>>,
}

fn cat<const A: usize, const B: usize>(a: [Ev; A], b: [Ev; B]) -> Vec<Ev> {
    a.into_iter().chain(b).collect()
}

fn passive_open(c: u64) -> [Ev; 2] {
    [
        ev(c).from(Listen).to(SynRecv).at(0),
        ev(c).from(SynRecv).to(Established).at(ms(1)),
    ]
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "active open, active close: TIME_WAIT inferred",
            events: cat(active_open(1, 0), active_close(1, ms(100))),
            state: TimeWait,
            path: &[
                Close,
                SynSent,
                Established,
                FinWait1,
                FinWait2,
                Close,
                TimeWait,
            ],
            closed_by: Some(ClosedBy::Local),
            stays: vec![
                (SynSent, ms(1)),
                (Established, ms(99)),
                (FinWait1, ms(10)),
                (FinWait2, ms(10)),
            ],
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
            stays: vec![
                (SynRecv, ms(1)),
                (Established, ms(100)),
                (CloseWait, ms(500)),
                (LastAck, ms(1)),
            ],
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
            path: &[
                Close,
                SynSent,
                Established,
                FinWait1,
                Closing,
                Close,
                TimeWait,
            ],
            closed_by: Some(ClosedBy::Local),
            stays: vec![
                (SynSent, ms(1)),
                (Established, ms(9)),
                (FinWait1, ms(1)),
                (Closing, ms(2)),
            ],
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
            stays: vec![(SynSent, ms(1))],
            closed: Some(Some(ClosedBy::Reset)),
        },
        Case {
            name: "reset received in established",
            events: cat(
                active_open(1, 0),
                [
                    rst_rx(1).at(ms(50)),
                    ev(1).from(Established).to(Close).at(ms(50)),
                ],
            ),
            state: Close,
            path: &[Close, SynSent, Established, Close],
            closed_by: Some(ClosedBy::Reset),
            stays: vec![(SynSent, ms(1)), (Established, ms(49))],
            closed: Some(Some(ClosedBy::Reset)),
        },
        Case {
            name: "abort: reset sent in established",
            events: cat(
                active_open(1, 0),
                [
                    rst_tx(1).at(ms(5)),
                    ev(1).from(Established).to(Close).at(ms(5)),
                ],
            ),
            state: Close,
            path: &[Close, SynSent, Established, Close],
            closed_by: Some(ClosedBy::Reset),
            stays: vec![(SynSent, ms(1)), (Established, ms(4))],
            closed: Some(Some(ClosedBy::Reset)),
        },
        Case {
            name: "keepalive gave up: the reset it sends does not make it a reset",
            events: cat(
                active_open(1, 0),
                [
                    rst_tx(1).at(ms(5)),
                    ev(1)
                        .from(Established)
                        .to(Close)
                        .err(libc::ETIMEDOUT)
                        .at(ms(5)),
                ],
            ),
            state: Close,
            path: &[Close, SynSent, Established, Close],
            closed_by: Some(ClosedBy::Timeout),
            stays: vec![(SynSent, ms(1)), (Established, ms(4))],
            closed: Some(Some(ClosedBy::Timeout)),
        },
        Case {
            name: "an ICMP error that closed a connect at once: no timeout",
            events: vec![
                ev(1).from(Close).to(SynSent).at(0),
                ev(1)
                    .from(SynSent)
                    .to(Close)
                    .err(libc::EHOSTUNREACH)
                    .at(ms(1)),
            ],
            state: Close,
            path: &[Close, SynSent, Close],
            closed_by: None,
            stays: vec![(SynSent, ms(1))],
            closed: Some(None),
        },
        Case {
            name: "ss -K: aborted, with the reset it sends",
            events: cat(
                active_open(1, 0),
                [ev(1)
                    .from(Established)
                    .to(Close)
                    .err(libc::ECONNABORTED)
                    .at(ms(5))],
            ),
            state: Close,
            path: &[Close, SynSent, Established, Close],
            closed_by: Some(ClosedBy::Reset),
            stays: vec![(SynSent, ms(1)), (Established, ms(4))],
            closed: Some(Some(ClosedBy::Reset)),
        },
        Case {
            name: "retransmissions gave up after an ICMP error",
            events: cat(
                active_open(1, 0),
                [
                    ev(1).kind(Kind::Retransmit).at(ms(2)),
                    ev(1)
                        .from(Established)
                        .to(Close)
                        .err(libc::EHOSTUNREACH)
                        .at(ms(5)),
                ],
            ),
            state: Close,
            path: &[Close, SynSent, Established, Close],
            closed_by: Some(ClosedBy::Timeout),
            stays: vec![(SynSent, ms(1)), (Established, ms(4))],
            closed: Some(Some(ClosedBy::Timeout)),
        },
        Case {
            name: "reset received in established, with its error",
            events: cat(
                active_open(1, 0),
                [
                    rst_rx(1).at(ms(50)),
                    ev(1)
                        .from(Established)
                        .to(Close)
                        .err(libc::ECONNRESET)
                        .at(ms(50)),
                ],
            ),
            state: Close,
            path: &[Close, SynSent, Established, Close],
            closed_by: Some(ClosedBy::Reset),
            stays: vec![(SynSent, ms(1)), (Established, ms(49))],
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
            stays: vec![(SynRecv, ms(1)), (Established, ms(1)), (CloseWait, ms(1))],
            closed: Some(Some(ClosedBy::Remote)),
        },
        Case {
            name: "fin_wait1 -> close is an abort: no TIME_WAIT",
            events: cat(
                active_open(1, 0),
                [
                    ev(1).from(Established).to(FinWait1).at(ms(2)),
                    ev(1).from(FinWait1).to(Close).at(ms(7)),
                ],
            ),
            state: Close,
            path: &[Close, SynSent, Established, FinWait1, Close],
            closed_by: Some(ClosedBy::Local),
            stays: vec![(SynSent, ms(1)), (Established, ms(1)), (FinWait1, ms(5))],
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
            stays: vec![
                (SynSent, ms(1)),
                (Established, ms(1)),
                (FinWait1, ms(1)),
                (FinWait2, ms(1)),
            ],
            closed: Some(Some(ClosedBy::Local)),
        },
        Case {
            name: "connect timeout: nobody closed",
            events: vec![
                ev(1).from(Close).to(SynSent).at(0),
                ev(1).from(SynSent).to(Close).at(secs(3)),
            ],
            state: Close,
            path: &[Close, SynSent, Close],
            closed_by: None,
            stays: vec![(SynSent, secs(3))],
            closed: Some(None),
        },
        Case {
            name: "listener lives and closes",
            events: vec![
                ev(1).from(Close).to(Listen).at(0),
                ev(1).from(Listen).to(Close).at(secs(10)),
            ],
            state: Close,
            path: &[Close, Listen, Close],
            closed_by: None,
            stays: vec![(Listen, secs(10))],
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
            stays: vec![
                (SynSent, ms(1)),
                (Established, ms(1)),
                (FinWait1, ms(1)),
                (FinWait2, ms(1)),
            ],
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
            stays: vec![(CloseWait, secs(2))],
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
        let closed: Vec<_> =
            h.o.0
                .iter()
                .filter_map(|o| {
                    if let Obs::Closed(_, by) = o {
                        Some(*by)
                    } else {
                        None
                    }
                })
                .collect();
        assert_eq!(
            closed,
            c.closed.into_iter().collect::<Vec<_>>(),
            "{}: closed()",
            c.name
        );
        assert_eq!(
            v.in_time_wait(),
            c.state == TimeWait,
            "{}: in_time_wait",
            c.name
        );
        assert!(
            !v.time_wait_confirmed(),
            "{}: nothing confirms without a dump",
            c.name
        );
        assert_eq!(v.is_live(), c.state != Close, "{}: live", c.name);
        let transitions = h.count(|o| matches!(o, Obs::Trans(..)));
        let state_events = c.events.iter().filter(|e| e.0.kind == Kind::State).count();
        assert_eq!(
            transitions, state_events,
            "{}: one transition per state event",
            c.name
        );
        let s = h.e.stats();
        assert_eq!((s.duplicates, s.out_of_order), (0, 0), "{}", c.name);
        assert_eq!(s.path_gap, 0, "{}: path gaps", c.name);
    }
}
