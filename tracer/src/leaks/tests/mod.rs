//! Synthetic dumps through the detector: threshold edges, clearing,
//! lower-bound ages, and no false positives; `rollup` covers the roll-up.
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

mod owners;
mod probes;
mod rollup;
mod stalls;

use super::*;
use crate::snapshot::{FdOwner, SocketSnapshot, TcpInfo, TimerKind};
use crate::tcp::TcpState;

/// The table a report renders to.
fn table(r: &Report) -> String {
    let mut out = Vec::new();
    crate::leaks::table::render(r, &mut out).expect("render");
    String::from_utf8(out).expect("utf8")
}
use crate::testkit::{SnapshotBuilder, snapshot};

const S: u64 = 1_000_000_000;

/// A served connection `10.0.0.1:8080 <- 10.0.0.2:40000+`, recently busy;
/// in CLOSE_WAIT, the application has sent nothing for an hour.
fn sock(cookie: u64, state: TcpState) -> SocketSnapshot {
    let sent_ms = if state == TcpState::CloseWait {
        3_600_000
    } else {
        10
    };
    snapshot(cookie, state)
        .local(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8080)
        .peer(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            40000 + (cookie % 1000) as u16,
        )
        .info(TcpInfo {
            last_data_recv_ms: 10,
            last_data_sent_ms: sent_ms,
            last_ack_recv_ms: 10,
            ..TcpInfo::default()
        })
}

/// A request socket on port 8080 (no file) that retransmitted its SYN-ACK
/// `retrans` times.
fn request(cookie: u64, retrans: u8) -> SocketSnapshot {
    let mut r = sock(cookie, TcpState::NewSynRecv);
    r.inode = 0;
    r.timer_retrans = retrans;
    r
}

fn info(d: &mut SocketSnapshot) -> &mut TcpInfo {
    d.info.get_or_insert_with(TcpInfo::default)
}

fn owner(pid: u32, comm: &str, fd: u32) -> FdOwner {
    FdOwner {
        pid,
        comm: comm.into(),
        cmdline: format!("{comm} --serve"),
        fd,
        cgroup: "/x".into(),
        container_id: None,
    }
}

/// Owners: socket inode 1000+cookie held by pid 100 ("app") at fd = cookie.
fn app_owners(inodes: &HashSet<u64>) -> HashMap<u64, Vec<FdOwner>> {
    inodes
        .iter()
        .map(|&i| (i, vec![owner(100, "app", (i - 1000) as u32)]))
        .collect()
}

fn none(_: u64, _: TcpState) -> Option<(u64, bool)> {
    None
}

/// No owner still holds a gone socket's descriptor.
fn none_held(_: &Flag) -> bool {
    false
}

/// The engine's word on a socket's end: live, state, closer, and whether
/// its process closed it after the peer had.
fn ending(
    live: bool,
    state: TcpState,
    closed_by: Option<crate::engine::ClosedBy>,
    app_closed: bool,
) -> detect::Ending {
    detect::Ending {
        live,
        state,
        closed_by,
        app_closed,
        time_wait_end: None,
        reset_sent: false,
    }
}

fn thresholds() -> Thresholds {
    Thresholds {
        close_wait: Duration::from_secs(60),
        half_open: Duration::from_secs(10),
        idle: Duration::from_secs(600),
        handshake: Duration::from_secs(10),
        fin_wait2: Duration::from_secs(60),
    }
}

fn raised(changes: &[Change]) -> Vec<&Flag> {
    changes
        .iter()
        .filter_map(|c| {
            if let Change::Raised(f) = c {
                Some(f)
            } else {
                None
            }
        })
        .collect()
}

fn cleared(changes: &[Change]) -> Vec<&Flag> {
    changes
        .iter()
        .filter_map(|c| {
            if let Change::Cleared(f) = c {
                Some(f)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn close_wait_threshold_edge_with_exact_engine_time() {
    let mut det = Detector::new(thresholds());
    let mut d = sock(1, TcpState::CloseWait);
    d.rqueue = 513; // 512 bytes, then the peer's FIN
    let engine =
        |c: u64, st: TcpState| (c == 1 && st == TcpState::CloseWait).then_some((1_000 * S, false));
    let c = det.update(&[d], 1_000 * S + 60 * S - 1, engine, app_owners);
    assert!(c.is_empty(), "one ns short of the threshold: {c:?}");
    let c = det.update(&[d], 1_060 * S, engine, app_owners);
    let f = raised(&c);
    assert_eq!(f.len(), 1);
    let f = f[0];
    assert_eq!(
        (f.kind, f.cookie, f.state),
        (LeakKind::CloseWait, Some(1), TcpState::CloseWait)
    );
    assert_eq!((f.age_seconds, f.age_is_lower_bound), (Some(60.0), false));
    assert_eq!(
        f.evidence,
        "in CLOSE_WAIT for 60.0s (threshold 60s); 512 bytes unread, EOF not read"
    );
    assert_eq!(f.owners, vec![owner(100, "app", 1)]);
    assert_eq!(f.raised_at_ns, 1_060 * S);
    assert_eq!(Change::Raised(f.clone()).to_json()["event"], "leak_flagged");
    // Still there: no new change, age refreshed.
    assert!(
        det.update(&[d], 1_073 * S + S / 5, engine, app_owners)
            .is_empty()
    );
    let f = det.active().next().expect("flag");
    assert_eq!(f.age_seconds, Some(73.2));
    assert!(f.evidence.starts_with("in CLOSE_WAIT for 73.2s"));
}

/// A half-close in use: the peer shut down its side and the application
/// still sends its answer. Only once it has been quiet on our side for the
/// threshold is the socket left unclosed; sending again clears the flag.
#[test]
fn close_wait_that_still_sends_is_a_half_close_not_a_leak() {
    let mut det = Detector::new(thresholds());
    let engine =
        |c: u64, st: TcpState| (c == 1 && st == TcpState::CloseWait).then_some((1_000 * S, false));
    let mut d = sock(1, TcpState::CloseWait);
    info(&mut d).last_data_sent_ms = 200;
    let c = det.update(&[d], 1_095 * S, engine, app_owners);
    assert!(c.is_empty(), "sent 0.2 s ago, 95 s into CLOSE_WAIT: {c:?}");
    info(&mut d).last_data_sent_ms = 59_999;
    assert!(det.update(&[d], 1_096 * S, engine, app_owners).is_empty());
    info(&mut d).last_data_sent_ms = 62_000;
    let c = det.update(&[d], 1_097 * S, engine, app_owners);
    let f = raised(&c);
    assert_eq!(f.len(), 1, "{c:?}");
    assert_eq!(
        f[0].evidence,
        "in CLOSE_WAIT for 97.0s (threshold 60s), nothing sent for 62.0s; 0 bytes unread, EOF read"
    );
    // The last send a jiffy after the entry it came before (a connection
    // closed right after it): the evidence does not say it sent since.
    let mut just = sock(2, TcpState::CloseWait);
    info(&mut just).last_data_sent_ms = 96_996;
    let at_entry =
        |c: u64, st: TcpState| (c == 2 && st == TcpState::CloseWait).then_some((1_000 * S, false));
    let mut other = Detector::new(thresholds());
    let c = other.update(&[just], 1_097 * S, at_entry, app_owners);
    assert_eq!(
        raised(&c)[0].evidence,
        "in CLOSE_WAIT for 97.0s (threshold 60s); 0 bytes unread, EOF read"
    );
    info(&mut d).last_data_sent_ms = 100;
    let c = det.update(&[d], 1_098 * S, engine, app_owners);
    let f = cleared(&c);
    assert_eq!(f.len(), 1, "{c:?}");
    assert_eq!(
        f[0].cleared_how.as_deref(),
        Some(
            "still in CLOSE_WAIT, no longer a leak: it sent data again (a half-close in use), \
             or its age was corrected"
        )
    );
}

#[test]
fn unknown_age_counts_from_first_sight_as_a_lower_bound() {
    let mut det = Detector::new(thresholds());
    let d = sock(1, TcpState::CloseWait);
    assert!(det.update(&[d], 5 * S, none, app_owners).is_empty());
    assert!(det.update(&[d], 64 * S, none, app_owners).is_empty());
    let c = det.update(&[d], 65 * S, none, app_owners);
    let f = raised(&c)[0];
    assert_eq!((f.age_seconds, f.age_is_lower_bound), (Some(60.0), true));
    assert!(
        f.evidence.starts_with("in CLOSE_WAIT for at least 60.0s"),
        "{}",
        f.evidence
    );
    // An engine lower bound earlier than our first sight wins.
    let mut det = Detector::new(thresholds());
    let early = |_: u64, _: TcpState| Some((0, true));
    let c = det.update(&[d], 61 * S, early, app_owners);
    assert_eq!(raised(&c)[0].age_seconds, Some(61.0));
    assert!(raised(&c)[0].age_is_lower_bound);
}

/// A CLOSE_WAIT socket older than the agent: the peer's FIN was an ACK,
/// so the time since the last ACK (`tcpi_last_ack_recv`) bounds its stay
/// from below. It is flagged at the first dump when that is past the
/// threshold, and an exact age from the engine is left alone.
#[test]
fn the_last_ack_from_the_peer_bounds_a_close_wait_age_from_below() {
    let mut det = Detector::new(thresholds());
    let mut d = sock(1, TcpState::CloseWait);
    info(&mut d).last_ack_recv_ms = 744_700;
    let c = det.update(&[d], 5 * S, none, app_owners);
    let f = raised(&c)[0];
    assert_eq!((f.age_seconds, f.age_is_lower_bound), (Some(744.7), true));
    assert!(
        f.evidence
            .starts_with("in CLOSE_WAIT for at least 12m24s (threshold 60s)"),
        "{}",
        f.evidence
    );
    // Exact from the engine: 30 s, whatever the ACK says (not a leak yet).
    let mut det = Detector::new(thresholds());
    let exact = |_: u64, _: TcpState| Some((5 * S, false));
    assert!(det.update(&[d], 35 * S, exact, app_owners).is_empty());
    // An ESTABLISHED socket's last ACK says nothing of its state's age.
    let mut e = sock(2, TcpState::Established);
    info(&mut e).last_ack_recv_ms = 744_700;
    assert_eq!(
        crate::leaks::rules::fin_floor(&e, (S, true)),
        (S, true),
        "not CLOSE_WAIT"
    );
}

/// Without an agent: a CLOSE_WAIT socket that still sends (a half-close
/// in use) is no suspect; one that sends nothing is, aged from the
/// peer's last ACK; one never accepted is its listener's process's.
#[test]
fn a_snapshot_judges_what_it_can_see() {
    let mut answering = sock(1, TcpState::CloseWait);
    info(&mut answering).last_data_sent_ms = 564;
    info(&mut answering).bytes_acked = 4096;
    // Its last send is its birth: it never sent data (it connected: its
    // SYN is the one byte acknowledged).
    let mut silent = sock(5, TcpState::CloseWait);
    info(&mut silent).last_data_sent_ms = 900;
    info(&mut silent).bytes_acked = 1;
    let mut quiet = sock(2, TcpState::CloseWait);
    info(&mut quiet).last_ack_recv_ms = 744_700;
    let mut queued = sock(3, TcpState::CloseWait);
    queued.inode = 0;
    // Its last send is its birth: recent, and no sign of use.
    info(&mut queued).last_data_sent_ms = 2_000;
    let mut listener = sock(4, TcpState::Listen);
    listener.inode = 1044;
    let scan: crate::snapshot::OwnerScan = app_owners(&HashSet::from([1002, 1005, 1044])).into();
    let r = crate::leaks::report::snapshot_report_with(
        &[answering, quiet, queued, listener, silent],
        &scan,
        "no agent".into(),
        |_| None,
    );
    let flags: Vec<&Flag> = r.leaks.iter().flat_map(|g| &g.sockets).collect();
    assert_eq!(flags.len(), 3, "{flags:#?}");
    assert!(
        flags.iter().all(|f| f.cookie != Some(1)),
        "in use: {flags:#?}"
    );
    let by = |c: u64| flags.iter().find(|f| f.cookie == Some(c)).expect("flag");
    assert_eq!(
        (by(2).age_seconds, by(2).age_is_lower_bound),
        (Some(744.7), true)
    );
    assert!(
        by(2)
            .evidence
            .starts_with("in CLOSE_WAIT for at least 12m24s (since the peer's last ACK; snapshot)"),
        "{}",
        by(2).evidence
    );
    assert_eq!(by(3).reason, Some(Reason::NotAccepted));
    assert_eq!(by(3).owners, vec![owner(100, "app", 44)]);
    assert!(r.leaks.iter().all(|g| g.pid == Some(100)), "{:?}", r.leaks);
}

#[test]
fn clears_when_the_socket_moves_on_or_goes() {
    let mut det = Detector::new(thresholds());
    let (a, b) = (sock(1, TcpState::CloseWait), sock(2, TcpState::CloseWait));
    det.update(&[a, b], 0, none, app_owners);
    assert_eq!(
        raised(&det.update(&[a, b], 60 * S, none, app_owners)).len(),
        2
    );
    let mut a2 = a;
    a2.state = TcpState::LastAck;
    let c = det.update(&[a2], 61 * S, none, app_owners);
    let gone = cleared(&c);
    assert_eq!(gone.len(), 2);
    let how: HashMap<_, _> = gone
        .iter()
        .map(|f| (f.cookie, f.cleared_how.clone()))
        .collect();
    assert_eq!(
        how[&Some(1)].as_deref(),
        Some("socket left close_wait (now last_ack)")
    );
    assert_eq!(
        how[&Some(2)].as_deref(),
        Some("socket gone (closed, or its process exited)")
    );
    assert!(gone.iter().all(|f| f.cleared_at_ns == Some(61 * S)));
    assert_eq!(
        Change::Cleared(gone[0].clone()).to_json()["event"],
        "leak_cleared"
    );
    assert_eq!(det.active().count(), 0);
    assert_eq!(det.recently_cleared().count(), 2);
    // Back in CLOSE_WAIT later: the clock restarts.
    assert!(det.update(&[a], 62 * S, none, app_owners).is_empty());
    assert_eq!(det.stats().tracked, 1);
}

/// Cookies 1 to `n` in CLOSE_WAIT, flagged at 60 s and gone from the dump
/// at 61 s: the detector, and the changes of that last dump.
fn flagged_then_gone(n: u64) -> (Detector, Vec<Change>) {
    let mut det = Detector::new(thresholds());
    let socks: Vec<SocketSnapshot> = (1..=n).map(|c| sock(c, TcpState::CloseWait)).collect();
    det.update(&socks, 0, none, app_owners);
    det.update(&socks, 60 * S, none, app_owners);
    let c = det.update(&[], 61 * S, none, app_owners);
    (det, c)
}

/// A socket gone from the dump: the engine's record of it says how it
/// ended, in the change and in the history alike.
#[test]
fn the_engine_says_how_a_gone_socket_ended() {
    use crate::engine::ClosedBy;
    let (mut det, mut c) = flagged_then_gone(5);
    det.say_how_gone(
        &mut c,
        61 * S,
        |cookie| match cookie {
            1 => Some(ending(
                false,
                TcpState::Close,
                Some(ClosedBy::Timeout),
                false,
            )),
            2 => Some(ending(false, TcpState::Close, Some(ClosedBy::Reset), false)),
            3 => Some(ending(
                false,
                TcpState::Close,
                Some(ClosedBy::Remote),
                false,
            )),
            // Its process exited: the kernel sent the FIN (LAST_ACK), and
            // the peer, gone, answered with a reset.
            5 => Some(ending(false, TcpState::Close, Some(ClosedBy::Reset), true)),
            _ => None,
        },
        none_held,
    );
    let how = |flags: Vec<Flag>| -> HashMap<Option<u64>, String> {
        flags
            .into_iter()
            .map(|f| (f.cookie, f.cleared_how.unwrap_or_default()))
            .collect()
    };
    let said = how(cleared(&c).into_iter().cloned().collect());
    assert!(
        said[&Some(1)].starts_with("the kernel gave up on the peer"),
        "{said:?}"
    );
    assert_eq!(said[&Some(2)], "a reset ended the connection");
    assert_eq!(
        said[&Some(3)],
        "socket gone (closed, or its process exited)"
    );
    assert_eq!(
        said[&Some(4)],
        "socket gone (closed, or its process exited)"
    );
    assert_eq!(
        said[&Some(5)],
        "its process closed it (close(), or the process exited); the peer, gone by then, \
         answered its FIN with a reset"
    );
    assert_eq!(how(det.recently_cleared().cloned().collect()), said);
}

/// A CLOSE_WAIT leak whose process sent its FIN (LAST_ACK) says how: it
/// closed it, or, still holding the descriptor, shut its side down.
#[test]
fn a_leak_its_process_closed_or_shut_down_says_which() {
    use crate::engine::ClosedBy;
    let (mut det, mut c) = flagged_then_gone(2);
    det.say_how_gone(
        &mut c,
        61 * S,
        |_| Some(ending(false, TcpState::Close, Some(ClosedBy::Remote), true)),
        |f| f.cookie == Some(2) && !f.owners.is_empty(),
    );
    let said: HashMap<Option<u64>, String> = cleared(&c)
        .into_iter()
        .map(|f| (f.cookie, f.cleared_how.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        said[&Some(1)],
        "its process closed it (close(), or the process exited)"
    );
    assert!(
        said[&Some(2)].starts_with("its process shut its side down (shutdown(SHUT_WR))")
            && said[&Some(2)].contains("the fd leaks on"),
        "{said:?}"
    );
}

/// A socket gone from the dump whose owner still holds its descriptor was
/// closed under the process (`ss -K`): its flag says the fd leaks on,
/// whatever the engine's record says; one no longer held ends as before.
#[test]
fn a_socket_closed_under_its_process_says_the_fd_is_still_held() {
    use crate::engine::ClosedBy;
    let (mut det, mut c) = flagged_then_gone(5);
    det.say_how_gone(
        &mut c,
        61 * S,
        |cookie| match cookie {
            // Timed out: the kernel closed it under its process too, and
            // that is the finer story.
            3 => Some(ending(
                false,
                TcpState::Close,
                Some(ClosedBy::Timeout),
                false,
            )),
            // Its close not read yet: a later reconcile says.
            4 => Some(ending(
                true,
                TcpState::CloseWait,
                Some(ClosedBy::Remote),
                false,
            )),
            // The peer reset it (a reconnect from the same port).
            5 => Some(ending(false, TcpState::Close, Some(ClosedBy::Reset), false)),
            _ => Some(ending(
                false,
                TcpState::Close,
                Some(ClosedBy::Remote),
                false,
            )),
        },
        |f| f.cookie != Some(2) && !f.owners.is_empty(),
    );
    let said: HashMap<Option<u64>, String> = cleared(&c)
        .into_iter()
        .map(|f| (f.cookie, f.cleared_how.clone().unwrap_or_default()))
        .collect();
    assert!(
        said[&Some(1)].starts_with("socket closed under its process (ss -K")
            && said[&Some(1)].contains("the fd leaks on"),
        "{said:?}"
    );
    let gone = "socket gone (closed, or its process exited)";
    assert_eq!(said[&Some(2)], gone);
    // What closed it comes first, and the descriptor still held after.
    let held_on = "; its process still holds the descriptor: the fd leaks on until the \
                   application closes it";
    assert!(
        said[&Some(3)].starts_with("the kernel gave up on the peer")
            && said[&Some(3)].ends_with(held_on),
        "{said:?}"
    );
    assert_eq!(said[&Some(4)], gone);
    assert_eq!(
        said[&Some(5)],
        format!("a reset ended the connection{held_on}")
    );
}

/// A dump can find a socket gone before the agent reads its close: the
/// history learns how it ended at a later reconcile, for a few seconds.
#[test]
fn a_close_read_after_the_dump_refines_the_history() {
    use crate::engine::ClosedBy;
    let (mut det, mut c) = flagged_then_gone(2);
    // The engine still has both live: their closes are not read yet.
    det.say_how_gone(
        &mut c,
        61 * S,
        |_| Some(ending(true, TcpState::CloseWait, None, false)),
        none_held,
    );
    let gone = "socket gone (closed, or its process exited)";
    assert!(
        cleared(&c)
            .iter()
            .all(|f| f.cleared_how.as_deref() == Some(gone))
    );
    let timed_out = |_| {
        Some(ending(
            false,
            TcpState::Close,
            Some(ClosedBy::Timeout),
            false,
        ))
    };
    // Past the window, the history is left as it was...
    det.say_how_gone(
        &mut [],
        61 * S + detect::REFINE_NS + 1,
        timed_out,
        none_held,
    );
    assert!(
        det.recently_cleared()
            .all(|f| f.cleared_how.as_deref() == Some(gone))
    );
    // ...within it, the next reconcile says how both ended.
    det.say_how_gone(&mut [], 62 * S, timed_out, none_held);
    assert_eq!(det.recently_cleared().count(), 2);
    for f in det.recently_cleared() {
        let how = f.cleared_how.as_deref().unwrap_or_default();
        assert!(how.starts_with("the kernel gave up on the peer"), "{how}");
    }
}

/// A flagged socket bound to an interface (an IPv6 link-local address's
/// scope, SO_BINDTODEVICE) is looked up by it: the kernel finds a bound
/// socket only when the lookup names its interface.
#[test]
fn a_bound_sockets_flag_is_looked_up_on_its_interface() {
    let mut det = Detector::new(thresholds());
    let mut bound = sock(1, TcpState::CloseWait);
    bound.ifindex = 4;
    let plain = sock(2, TcpState::CloseWait);
    det.update(&[bound, plain], 0, none, app_owners);
    det.update(&[bound, plain], 60 * S, none, app_owners);
    let mut lookups = Vec::new();
    det.lookups(&mut lookups);
    let mut on: Vec<(u64, u32)> = lookups.iter().map(|(_, l)| (l.cookie, l.ifindex)).collect();
    on.sort_unstable();
    assert_eq!(on, [(1, 4), (2, 0)]);
}

/// An orphan gone from the dump was closed already: it moved on to
/// TIME_WAIT or its timer ran out; the engine says which when it knows.
#[test]
fn a_gone_orphan_says_it_left_fin_wait2() {
    use crate::engine::ClosedBy;
    let orphan = |cookie| {
        let mut o = sock(cookie, TcpState::FinWait2);
        (o.timewait, o.inode) = (true, 0);
        o
    };
    let mut det = Detector::new(thresholds());
    let dump = [orphan(20), orphan(21), orphan(22), orphan(23), orphan(24)];
    det.update(&dump, 0, none, app_owners);
    det.update(&dump, 60 * S, none, app_owners);
    let mut c = det.update(&[], 61 * S, none, app_owners);
    let ended = |how| detect::Ending {
        time_wait_end: Some(how),
        ..ending(false, TcpState::Close, Some(ClosedBy::Local), false)
    };
    det.say_how_gone(
        &mut c,
        61 * S,
        |cookie| match cookie {
            21 => Some(ending(
                true,
                TcpState::TimeWait,
                Some(ClosedBy::Local),
                false,
            )),
            22 => Some(ended(crate::engine::TimeWaitEnd::Expired)),
            23 => Some(ended(crate::engine::TimeWaitEnd::Reset)),
            24 => Some(detect::Ending {
                reset_sent: true,
                ..ended(crate::engine::TimeWaitEnd::Reset)
            }),
            _ => None,
        },
        none_held,
    );
    let how: HashMap<Option<u64>, String> = cleared(&c)
        .into_iter()
        .map(|f| (f.cookie, f.cleared_how.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        how[&Some(20)],
        "it left FIN_WAIT2: the peer's FIN came (then TIME_WAIT, which the live dumps leave \
         out), or its timer ran out (tcp_fin_timeout)"
    );
    assert_eq!(
        how[&Some(21)],
        "the connection closed: its socket is in TIME_WAIT"
    );
    assert_eq!(
        how[&Some(22)],
        "its timer ran out (tcp_fin_timeout): the peer never sent its FIN"
    );
    assert!(
        how[&Some(23)].starts_with("a reset ended it before its timer (its peer's socket"),
        "{how:?}"
    );
    assert!(
        how[&Some(24)].starts_with(
            "the peer sent data after this side had closed, and the orphan answered with a reset"
        ),
        "{how:?}"
    );
}

#[test]
fn history_ring_is_bounded() {
    let mut det = Detector::new(thresholds());
    for i in 0..(detect::HISTORY as u64 + 10) {
        let d = sock(i, TcpState::CloseWait);
        let since = |_: u64, _: TcpState| Some((0, false));
        det.update(&[d], 100 * S + i, since, app_owners);
        det.update(&[], 100 * S + i, since, app_owners);
    }
    assert_eq!(det.recently_cleared().count(), detect::HISTORY);
}

#[test]
fn stuck_handshakes_syn_sent_and_per_port_syn_recv() {
    let mut det = Detector::new(thresholds());
    let mut syn = sock(6, TcpState::SynSent);
    syn.timer_retrans = 3;
    let r1 = request(10, 2);
    let r2 = request(11, 0);
    let mut fresh = request(12, 0);
    fresh.sport = 9090;
    let c = det.update(&[syn, r1, r2], 0, none, app_owners);
    // r1 needed a SYN-ACK retransmit: its port is flagged at once.
    assert_eq!(raised(&c).len(), 1);
    assert_eq!(raised(&c)[0].count, Some(1));
    let c = det.update(&[syn, r1, r2, fresh], 10 * S, none, app_owners);
    let f = raised(&c);
    assert_eq!(f.len(), 1, "{c:?}");
    assert_eq!((f[0].reason, f[0].cookie), (Some(Reason::SynSent), Some(6)));
    let port = det
        .active()
        .find(|f| f.reason == Some(Reason::SynRecv))
        .expect("port flag");
    assert_eq!(
        (port.count, port.local.port(), port.remote),
        (Some(2), 8080, None)
    );
    assert!(
        port.evidence
            .starts_with("2 handshakes stuck on port 8080: 1 needed SYN-ACK retransmits (up to 2)")
    );
    let g = det.gauges();
    assert_eq!(
        g.stuck_handshakes,
        [
            (Reason::SynSent, 1),
            (Reason::SynRecv, 2),
            (Reason::AcceptQueueFull, 0)
        ]
    );
    let c = det.update(&[fresh], 11 * S, none, app_owners);
    let how: Vec<_> = cleared(&c)
        .iter()
        .map(|f| f.cleared_how.clone().unwrap_or_default())
        .collect();
    assert!(
        how.contains(&"no stuck handshakes left on the port".to_string()),
        "{how:?}"
    );
}

/// Workers that each listen on the same address (`SO_REUSEPORT`): a
/// connection never accepted waits in one of their queues, and the kernel
/// does not say which, so its flag names every worker (each once), and
/// not a listener on another address of the port. Both the agent's
/// detector and a one-shot snapshot say so.
#[test]
fn a_connection_not_accepted_names_every_reuseport_listener() {
    let workers = |i: &HashSet<u64>| -> HashMap<u64, Vec<FdOwner>> {
        i.iter()
            .map(|&i| (i, vec![owner(i as u32 - 1000, "worker", 3)]))
            .collect()
    };
    let listening = |cookie: u64, inode: u64, at: Ipv4Addr| {
        let mut l = sock(cookie, TcpState::Listen).local(IpAddr::V4(at), 8080);
        l.inode = inode;
        l
    };
    let here = Ipv4Addr::new(10, 0, 0, 1);
    let dump = [
        listening(1, 1001, here),
        listening(2, 1002, here),
        listening(3, 1003, Ipv4Addr::LOCALHOST),
        {
            let mut queued = sock(4, TcpState::CloseWait);
            queued.inode = 0;
            queued
        },
    ];
    let pids = |f: &Flag| f.owners.iter().map(|o| o.pid).collect::<Vec<_>>();
    let mut det = Detector::new(thresholds());
    det.update(&dump, 0, none, workers);
    let c = det.update(&dump, 61 * S, none, workers);
    let f = raised(&c);
    assert_eq!(f.len(), 1, "{c:?}");
    assert_eq!(f[0].reason, Some(Reason::NotAccepted));
    assert_eq!(pids(f[0]), vec![1, 2]);
    // A port's stuck handshakes: every listener on the port.
    let mut stuck = Detector::new(thresholds());
    let with_request = [dump[0], dump[1], dump[2], request(10, 2)];
    let c = stuck.update(&with_request, S, none, workers);
    let f = raised(&c);
    assert_eq!(f[0].reason, Some(Reason::SynRecv), "{c:?}");
    assert_eq!(pids(f[0]), vec![1, 2, 3]);
    let r = det.report(61 * S);
    let groups: Vec<_> = r.leaks.iter().map(|g| g.pid).collect();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert!(groups.contains(&Some(1)) && groups.contains(&Some(2)));
    assert_eq!(r.leak_count, 1, "one connection, however many workers");
    let json = serde_json::to_value(f[0]).expect("json");
    assert!(json.get("sibling_listeners").is_none(), "{json}");
    // A worker gone: the flag's owners are looked up again with the rest.
    let dump = [dump[0], dump[2], dump[3]];
    det.update(&dump, 62 * S, none, workers);
    let f = det.active().next().expect("still flagged");
    assert_eq!(pids(f), vec![1]);

    let scan = workers(&[1001, 1002, 1003].into());
    let r = snapshot_report(
        &[dump[0], listening(2, 1002, here), dump[1], dump[2]],
        &scan.into(),
        "snapshot".into(),
    );
    let f = &r.leaks[0].sockets[0];
    assert_eq!(pids(f), vec![1, 2]);
}

/// A port's stuck handshakes are the listener's: the flag names the
/// process that listens (the one whose accept queue it is), and says that
/// two SYN-ACK retransmits flag a port as its age does.
#[test]
fn stuck_server_handshakes_name_the_listener() {
    let mut det = Detector::new(thresholds());
    let mut listener = sock(1, TcpState::Listen);
    listener.inode = 1044;
    let req = request(10, 2);
    let c = det.update(&[req, listener], S, none, app_owners);
    let f = raised(&c);
    assert_eq!(f.len(), 1, "{c:?}");
    assert_eq!(f[0].reason, Some(Reason::SynRecv));
    assert_eq!(f[0].owners, vec![owner(100, "app", 44)]);
    assert!(
        f[0].evidence.ends_with(
            "oldest at least 0.0s (threshold 10s, or 2 SYN-ACK retransmits); \
             a SYN flood, a lost ACK or a full accept queue"
        ),
        "{}",
        f[0].evidence
    );
    let r = det.report(S);
    assert!(r.leaks.iter().any(|g| g.pid == Some(100)), "{:?}", r.leaks);

    // A connection the peer closed before anyone accepted it: CLOSE_WAIT
    // with no file, in the same listener's queue. It has no fd of its own:
    // it is the listener's process that should accept it, so the flag
    // names that (with the listener's fd), and its evidence says where it
    // waits. Nothing could read it: it is not in the "reads" hint.
    let mut queued = sock(2, TcpState::CloseWait);
    queued.inode = 0;
    det.update(&[req, listener, queued], S, none, app_owners);
    let c = det.update(&[req, listener, queued], 62 * S, none, app_owners);
    let f = raised(&c);
    assert_eq!(f.len(), 1, "{c:?}");
    assert_eq!(f[0].kind, LeakKind::CloseWait);
    assert_eq!(f[0].reason, Some(Reason::NotAccepted));
    assert_eq!((f[0].inode, f[0].read_to_end), (1044, None));
    assert_eq!(f[0].owners, vec![owner(100, "app", 44)]);
    assert!(
        f[0].evidence
            .ends_with("; never accepted: it waits in the listener's accept queue"),
        "{}",
        f[0].evidence
    );
    let text = table(&det.report(62 * S));
    assert!(
        text.contains("  accept:  1 of 1 never accepted, in the accept queue of its listener"),
        "{text}"
    );
    assert!(!text.contains("reads:"), "{text}");
    assert!(text.contains("close_wait/not_accepted"), "{text}");
    // Accepted at last: its own inode, and owners looked up again.
    queued.inode = 2002;
    let own = |i: &HashSet<u64>| -> HashMap<u64, Vec<FdOwner>> {
        i.iter()
            .map(|&i| (i, vec![owner(100, "app", i as u32 % 100)]))
            .collect()
    };
    let c = det.update(&[req, listener, queued], 63 * S, none, own);
    assert!(raised(&c).is_empty(), "{c:?}");
    let f = det
        .active()
        .find(|f| f.kind == LeakKind::CloseWait)
        .expect("still a leak");
    assert_eq!((f.inode, f.reason), (2002, None));
    assert_eq!(f.owners, vec![owner(100, "app", 2)]);
}

/// A process that stops accepting: its listener is flagged once its
/// accept queue has been full at every dump for the threshold, naming the
/// process; room at one dump starts the count again. A dump that looks
/// sockets up lists every listener too, so it judges them as a walk does.
#[test]
fn a_full_accept_queue_is_flagged_on_its_listener() {
    let mut det = Detector::new(thresholds());
    let mut full = sock(1, TcpState::Listen);
    (full.inode, full.rqueue, full.wqueue) = (1044, 2, 1);
    let room = SocketSnapshot { rqueue: 1, ..full };
    assert!(full.accept_queue_full() && !room.accept_queue_full());
    assert!(det.update(&[full], 0, none, app_owners).is_empty());
    det.update(&[room], 5 * S, none, app_owners);
    let c = det.update(&[full], 9 * S, none, app_owners);
    assert!(c.is_empty(), "room at 5 s: counted from 9 s, {c:?}");
    let c = det.update_within(&[full], Coverage::Only(&[]), 15 * S, none, app_owners);
    assert!(c.is_empty(), "{c:?}");
    let c = det.update_within(&[full], Coverage::Only(&[7]), 19 * S, none, app_owners);
    let f = raised(&c);
    assert_eq!(f.len(), 1, "{c:?}");
    assert_eq!(
        (f[0].kind, f[0].reason, f[0].cookie, f[0].remote),
        (
            LeakKind::StuckHandshake,
            Some(Reason::AcceptQueueFull),
            Some(1),
            None
        )
    );
    assert_eq!(f[0].owners, vec![owner(100, "app", 44)]);
    assert_eq!(
        (f[0].age_seconds, f[0].age_is_lower_bound),
        (Some(10.0), true)
    );
    assert_eq!(
        f[0].evidence,
        "accept queue full at every dump for 10.0s (threshold 10s): 2 connections wait for \
         accept(), backlog 1; the kernel drops new handshakes until the process accepts"
    );
    assert_eq!(
        det.gauges().stuck_handshakes[2],
        (Reason::AcceptQueueFull, 1)
    );
    let mut text = Vec::new();
    table::render(&det.report(19 * S), &mut text).expect("render");
    let text = String::from_utf8(text).expect("utf8");
    assert!(
        text.contains("10.0.0.1:8080 listening  stuck_handshake/accept_queue_full  >=10.0s"),
        "{text}"
    );
    // A listener is not looked up by a peer, and its flag does not make
    // live dumps walk: they list it anyway.
    let mut lookups = Vec::new();
    det.lookups(&mut lookups);
    assert!(lookups.is_empty(), "{lookups:?}");
    assert!(!det.judges_ports());
    let c = det.update_within(&[room], Coverage::Only(&[]), 21 * S, none, app_owners);
    assert_eq!(
        cleared(&c)[0].cleared_how.as_deref(),
        Some("the process accepted: its accept queue has room again")
    );
    // A listener that closes with its queue full: gone, from either dump.
    det.update(&[full], 22 * S, none, app_owners);
    det.update(&[full], 32 * S, none, app_owners);
    let c = det.update_within(&[], Coverage::Only(&[]), 33 * S, none, app_owners);
    assert_eq!(
        cleared(&c)[0].cleared_how.as_deref(),
        Some("socket gone (closed, or its process exited)")
    );
}

/// A newer agent's report may name a reason this build does not know: it
/// is read as `other`, not refused.
#[test]
fn an_unknown_reason_reads_as_other() {
    let r: Option<Reason> = serde_json::from_str("\"a_future_reason\"").expect("read");
    assert_eq!(r, Some(Reason::Other));
    assert_eq!(Reason::Other.name(), "other");
    let r: Option<Reason> = serde_json::from_str("\"accept_queue_full\"").expect("read");
    assert_eq!(r, Some(Reason::AcceptQueueFull));
}

#[test]
fn a_dump_of_looked_up_sockets_judges_only_those() {
    let mut det = Detector::new(thresholds());
    let mut syn = sock(6, TcpState::SynSent);
    syn.timer_retrans = 3;
    let req = request(10, 2);
    let cw = sock(7, TcpState::CloseWait);
    det.update(&[syn, req, cw], 0, none, app_owners);
    let c = det.update(&[syn, req, cw], 60 * S, none, app_owners);
    assert_eq!(det.active().count(), 3, "{c:?}");
    // The flagged sockets are what a live dump that does not walk looks up
    // (beside the engine's), by the tuple a walk listed: the port flag
    // has no socket.
    let mut lookups = Vec::new();
    det.lookups(&mut lookups);
    let mut named: Vec<_> = lookups
        .iter()
        .map(|(_, p)| (p.cookie, p.lport, p.rport))
        .collect();
    named.sort_unstable();
    assert_eq!(named, [(6, 8080, syn.dport), (7, 8080, cw.dport)]);
    assert!(det.judges_ports(), "the port flag needs walks to clear");
    // Lookups of 7 alone (6 had no local port to look it up by; request
    // sockets only a walk lists): 7 is judged, the others stand.
    let mut moved = cw;
    moved.state = TcpState::LastAck;
    let c = det.update_within(&[moved], Coverage::Only(&[7]), 61 * S, none, app_owners);
    assert_eq!(
        cleared(&c).iter().map(|f| f.cookie).collect::<Vec<_>>(),
        [Some(7)]
    );
    assert_eq!(det.active().count(), 2);
    // 6 was looked up and not found: gone.
    let c = det.update_within(&[], Coverage::Only(&[6]), 62 * S, none, app_owners);
    assert_eq!(
        cleared(&c).iter().map(|f| f.cookie).collect::<Vec<_>>(),
        [Some(6)]
    );
    // The port flag waits for a walk; a walk without the requests clears it.
    let c = det.update_within(&[], Coverage::Only(&[]), 63 * S, none, app_owners);
    assert!(c.is_empty(), "{c:?}");
    let c = det.update(&[], 64 * S, none, app_owners);
    assert_eq!(cleared(&c)[0].reason, Some(Reason::SynRecv));
    assert!(!det.judges_ports());
    assert_eq!(det.active().count(), 0);
}

/// A CLOSE_WAIT socket whose other end, on this host, is held in
/// FIN_WAIT2 by a process that shut its side down: a half-close whose
/// peer waits for the answer, which the flag says; an orphan in FIN_WAIT2
/// (no process) is not such a peer.
#[test]
fn a_close_wait_flag_names_a_peer_that_half_closed() {
    let cw = sock(7, TcpState::CloseWait);
    let mut peer = snapshot(20, TcpState::FinWait2)
        .local(cw.daddr, cw.dport)
        .peer(cw.saddr, cw.sport);
    peer.inode = 1020;
    let flagged = |peer: SocketSnapshot| {
        let mut det = Detector::new(thresholds());
        det.update(&[cw, peer], 0, none, app_owners);
        let c = det.update(&[cw, peer], 61 * S, none, app_owners);
        let f = raised(&c)
            .into_iter()
            .find(|f| f.kind == LeakKind::CloseWait)
            .cloned()
            .expect("close_wait flagged");
        (f, table(&det.report(61 * S)))
    };
    let (f, text) = flagged(peer);
    let p = f.local_peer.as_ref().expect("its peer is here");
    assert_eq!((p.cookie, p.state), (20, TcpState::FinWait2));
    assert_eq!(p.owners, vec![owner(100, "app", 20)]);
    assert!(
        text.contains(
            "its peer is on this host, in FIN_WAIT2: PID 100 app fd 20 shut its side down \
             (shutdown(SHUT_WR)) and waits for this answer: a half-close, a leak only if this \
             process never answers or closes"
        ),
        "{text}"
    );
    assert!(!text.contains("  peer:"), "no process is blamed: {text}");
    // An orphan (no file) closed its side for good: no peer to name.
    peer.inode = 0;
    assert!(flagged(peer).0.local_peer.is_none());
}

/// An orphan whose peer is a process of this host: the other end of its
/// connection, in CLOSE_WAIT in the same namespace, names the process
/// that has not closed, in the JSON and the table (with the default
/// thresholds, 30 s before that end's own CLOSE_WAIT flag).
#[test]
fn an_orphans_local_peer_names_the_process_that_did_not_close() {
    let mut det = Detector::new(thresholds());
    let mut orphan = sock(20, TcpState::FinWait2);
    (orphan.timewait, orphan.inode) = (true, 0);
    // The peer's end: the same 4-tuple reversed.
    let peer = snapshot(7, TcpState::CloseWait)
        .local(orphan.daddr, orphan.dport)
        .peer(orphan.saddr, orphan.sport);
    // Another namespace's socket with the same tuple is not its peer.
    let mut elsewhere = peer;
    (elsewhere.cookie, elsewhere.netns, elsewhere.inode) = (8, 99, 1008);
    let dump = [orphan, elsewhere, peer];
    det.update(&dump, 0, none, app_owners);
    let c = det.update(&dump, 60 * S, none, app_owners);
    let f = raised(&c)
        .into_iter()
        .find(|f| f.kind == LeakKind::OrphanedFinWait2)
        .expect("orphan flagged");
    let p = f.local_peer.as_ref().expect("its peer is here");
    assert_eq!((p.cookie, p.state, p.inode), (7, TcpState::CloseWait, 1007));
    assert_eq!(p.owners, vec![owner(100, "app", 7)]);
    let text = table(&det.report(60 * S));
    assert!(
        text.contains(
            "its peer is on this host, in CLOSE_WAIT: PID 100 app fd 7 has not closed it"
        ),
        "{text}"
    );
    assert!(
        text.contains("  peer:    1 is a connection to PID 100 app on this host, whose end sits in CLOSE_WAIT (not closed, or never accepted): that process leaks"),
        "{text}"
    );
    let json = serde_json::to_value(f).expect("json");
    assert_eq!(json["local_peer"]["state"], "close_wait");
    assert!(json["local_peer"].get("not_accepted").is_none(), "{json}");
    // The peer closes: the orphan stays, without a peer.
    let c = det.update(&[orphan], 61 * S, none, app_owners);
    assert!(
        c.iter()
            .all(|c| c.flag().kind != LeakKind::OrphanedFinWait2),
        "{c:?}"
    );
    let f = det
        .active()
        .find(|f| f.kind == LeakKind::OrphanedFinWait2)
        .expect("still flagged");
    assert!(f.local_peer.is_none());

    // A peer never accepted (no inode): its listener's process is named.
    let mut det = Detector::new(thresholds());
    let mut queued = peer;
    queued.inode = 0;
    let mut listener = snapshot(9, TcpState::Listen).local(orphan.daddr, orphan.dport);
    listener.inode = 1044;
    let dump = [orphan, queued, listener];
    det.update(&dump, 0, none, app_owners);
    det.update(&dump, 60 * S, none, app_owners);
    let f = det
        .active()
        .find(|f| f.kind == LeakKind::OrphanedFinWait2)
        .expect("orphan flagged");
    let p = f.local_peer.as_ref().expect("its peer is here");
    assert!(p.not_accepted);
    assert_eq!(p.owners, vec![owner(100, "app", 44)]);
    let text = table(&det.report(60 * S));
    assert!(
        text.contains("in the accept queue of PID 100 app (its listener, fd 44): never accepted"),
        "{text}"
    );
}

/// The report after two dumps a minute apart of `dump`.
fn det_report(dump: &[SocketSnapshot]) -> crate::leaks::Report {
    let mut det = Detector::new(thresholds());
    det.update(dump, 0, none, app_owners);
    det.update(dump, 60 * S, none, app_owners);
    det.report(60 * S)
}

/// An orphan whose peer is a container's (another namespace of this host,
/// over a veth, no NAT): found by its addresses, when one namespace alone
/// has them; never for loopback, which every namespace has its own of.
#[test]
fn an_orphans_peer_in_another_namespace_is_found_when_unique() {
    let mut orphan = sock(20, TcpState::FinWait2);
    (orphan.timewait, orphan.inode) = (true, 0);
    let mut peer = snapshot(7, TcpState::CloseWait)
        .local(orphan.daddr, orphan.dport)
        .peer(orphan.saddr, orphan.sport);
    peer.netns = 99;
    let peer_of = |dump: &[SocketSnapshot]| {
        let mut det = Detector::new(thresholds());
        det.update(dump, 0, none, app_owners);
        det.update(dump, 60 * S, none, app_owners);
        let f = det
            .active()
            .find(|f| f.kind == LeakKind::OrphanedFinWait2)
            .expect("orphan flagged")
            .clone();
        (f, table(&det.report(60 * S)))
    };
    let (f, text) = peer_of(&[orphan, peer]);
    let p = f.local_peer.as_ref().expect("its peer, in the container");
    assert_eq!((p.cookie, p.netns, p.inode), (7, Some(99), 1007));
    assert_eq!(p.owners, vec![owner(100, "app", 7)]);
    assert!(
        text.contains("its peer is on this host in netns 99, in CLOSE_WAIT: PID 100 app fd 7"),
        "{text}"
    );
    // Named as the NETNS column names namespaces, when it has a name.
    let mut named = det_report(&[orphan, peer]);
    named.name_namespaces([(99, "web".to_owned()), (7, "unused".to_owned())].into());
    assert_eq!(named.netns_names.len(), 1, "only the namespaces shown");
    assert!(
        table(&named).contains("its peer is on this host in netns 99 (web), in CLOSE_WAIT"),
        "{}",
        table(&named)
    );
    assert_eq!(
        serde_json::to_value(&f).expect("json")["local_peer"]["netns"],
        99
    );
    // Never accepted there: named by that namespace's listener, not by
    // one on the same port in the orphan's.
    let mut queued = peer;
    queued.inode = 0;
    let mut theirs = snapshot(9, TcpState::Listen).local(orphan.daddr, orphan.dport);
    (theirs.inode, theirs.netns) = (1044, 99);
    let mut ours = theirs;
    (ours.cookie, ours.inode, ours.netns) = (10, 1055, orphan.netns);
    let (f, _) = peer_of(&[orphan, queued, theirs, ours]);
    let p = f.local_peer.as_ref().expect("its peer");
    assert!(p.not_accepted);
    assert_eq!(p.owners, vec![owner(100, "app", 44)]);
    // Two namespaces with the same addresses: which one, nobody can say.
    let mut twin = peer;
    (twin.cookie, twin.netns, twin.inode) = (8, 98, 1008);
    assert!(peer_of(&[orphan, peer, twin]).0.local_peer.is_none());
    // Loopback: each namespace has its own.
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut orphan_lo = orphan;
    (orphan_lo.saddr, orphan_lo.daddr) = (lo, lo);
    let mut peer_lo = peer;
    (peer_lo.saddr, peer_lo.daddr) = (lo, lo);
    assert!(peer_of(&[orphan_lo, peer_lo]).0.local_peer.is_none());
}

#[test]
fn orphaned_fin_wait2_only_without_an_owner() {
    let mut det = Detector::new(thresholds());
    let mut tw = sock(20, TcpState::FinWait2);
    tw.timewait = true;
    tw.inode = 0;
    let held = sock(21, TcpState::FinWait2); // shutdown(SHUT_WR), still open
    det.update(&[tw, held], 0, none, app_owners);
    let c = det.update(&[tw, held], 60 * S, none, app_owners);
    let f = raised(&c);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].kind, f[0].cookie),
        (LeakKind::OrphanedFinWait2, Some(20))
    );
    assert!(f[0].owners.is_empty());
}

/// Which listener a connection came in through, when a port has several:
/// the one on its address, else a wildcard of its family, else none.
#[test]
fn a_connection_is_matched_to_the_listener_on_its_address() {
    // The matched listener's inode.
    let listener_for = |l: &[(IpAddr, u64)], a: IpAddr| {
        crate::snapshot::listener_for(l, a).map(|&(_, inode)| inode)
    };
    let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
    let listeners = [
        (ip("10.0.0.1"), 1),
        (ip("0.0.0.0"), 2),
        (ip("::"), 3),
        (ip("fd00::1"), 4),
    ];
    assert_eq!(listener_for(&listeners, ip("10.0.0.1")), Some(1));
    assert_eq!(listener_for(&listeners, ip("127.0.0.1")), Some(2));
    assert_eq!(listener_for(&listeners, ip("::ffff:10.0.0.1")), Some(1));
    assert_eq!(listener_for(&listeners, ip("fd00::1")), Some(4));
    assert_eq!(listener_for(&listeners, ip("::1")), Some(3));
    // Only listeners on other addresses: none of them took it.
    assert_eq!(listener_for(&listeners[..1], ip("10.0.0.2")), None);
    assert_eq!(listener_for(&[(ip("::"), 3)], ip("10.0.0.2")), Some(3));
    // An IPv6-only `::` listed first does not take IPv4 from `0.0.0.0`.
    let v6_first = [(ip("::"), 3), (ip("0.0.0.0"), 2)];
    assert_eq!(listener_for(&v6_first, ip("127.0.0.1")), Some(2));
    assert_eq!(listener_for(&v6_first, ip("::1")), Some(3));
}
