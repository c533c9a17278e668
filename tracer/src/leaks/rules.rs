//! The per-socket rules that need more than an age: half-open stalls,
//! idle sockets without keepalive, per-port stuck handshakes; and how a
//! flag is built and how its clearing is worded.
use super::{Flag, LeakKind, Reason};
use crate::{
    engine::{ClosedBy, TimeWaitEnd},
    snapshot::{FdOwner, OwnerScan, SocketSnapshot, TcpInfo, listener_for},
    tcp::TcpState,
};

pub(super) const MS: u64 = 1_000_000;

/// What the application left unread, as evidence says it: `512 bytes
/// unread`, and once the peer's FIN has arrived whether the application
/// read up to it (`0 bytes unread, EOF read`: the code that handles EOF
/// does not close) or not (`512 bytes unread, EOF not read`: nothing reads
/// the socket any more).
pub(super) fn unread_words(d: &SocketSnapshot) -> String {
    let eof = match d.read_to_end() {
        None => "",
        Some(true) => ", EOF read",
        Some(false) => ", EOF not read",
    };
    format!("{} bytes unread{eof}", d.unread_bytes())
}

#[derive(Clone, Copy)]
pub(super) struct Stall {
    pub(super) reason: Reason,
    /// When the agent first saw it stalled.
    pub(super) since_ns: u64,
    /// When its data was first sent, the earliest `tcp_info` told of
    /// while retransmitting ([`unacked_for`]; `u64::MAX` before): its age.
    pub(super) began_ns: u64,
    /// `tcpi_bytes_acked` when first seen stalled: more is progress.
    pub(super) bytes_acked: u64,
    pub(super) total_retrans: u32,
    /// The retransmit timer's firings in a row when first seen stalled.
    pub(super) retransmits: u8,
    pub(super) generation: u64,
}

/// Request sockets of one listening port, in one dump.
#[derive(Default)]
pub(super) struct PortAcc {
    pub(super) local: Option<std::net::SocketAddr>,
    pub(super) stuck: u32,
    pub(super) retransmitted: u32,
    pub(super) max_retrans: u8,
    pub(super) oldest: Option<(u64, bool)>,
    /// Every listener on the port: its address and inode. The port's
    /// `syn_recv` flag names the last one's process.
    pub(super) listeners: Vec<(std::net::IpAddr, u64)>,
}

/// A flag about one socket, raised at `now` (owners filled in later).
pub(super) fn socket_flag(
    d: &SocketSnapshot,
    kind: LeakKind,
    reason: Option<Reason>,
    now: u64,
    age: (u64, bool),
    evidence: String,
) -> Flag {
    Flag {
        kind,
        reason,
        cookie: Some(d.cookie),
        local: std::net::SocketAddr::new(d.saddr, d.sport),
        remote: Some(std::net::SocketAddr::new(d.daddr, d.dport)),
        state: d.state,
        inode: d.inode,
        sibling_listeners: Vec::new(),
        netns: d.netns,
        raised_at_ns: now,
        raised_at: None,
        age_seconds: Some(secs(age.0)),
        age_is_lower_bound: age.1,
        unread_bytes: d.unread_bytes(),
        read_to_end: d.read_to_end(),
        evidence,
        count: None,
        owners: Vec::new(),
        owner_unknown: false,
        owner_hint: None,
        cleared_at_ns: None,
        cleared_at: None,
        cleared_how: None,
        container: None,
        local_peer: None,
        ifindex: d.ifindex,
    }
}

/// A `close_wait` flag on `d`. One never accepted (no inode: it waits in
/// its listener's accept queue) is `not_accepted`, and nothing could
/// have read it, so its `read_to_end` is unknown; [`attribute_to_listeners`]
/// gives it the listener's inode.
pub(super) fn close_wait_flag(
    d: &SocketSnapshot,
    now: u64,
    age: (u64, bool),
    evidence: String,
) -> Flag {
    let not_accepted = d.awaits_accept();
    let reason = not_accepted.then_some(Reason::NotAccepted);
    let mut f = socket_flag(d, LeakKind::CloseWait, reason, now, age, evidence);
    if not_accepted {
        f.read_to_end = None;
    }
    f
}

/// Give each `not_accepted` flag of `flags`, and each local peer never
/// accepted, its listener's inode, from `listeners` by namespace and port,
/// so that its owners are the process that should accept it; and the
/// other listeners on the same address (`SO_REUSEPORT`: one of them holds
/// it, and the kernel does not say which).
pub(super) fn attribute_to_listeners<'a>(
    flags: impl Iterator<Item = &'a mut Flag>,
    listeners: impl Fn(u32, u16) -> Option<&'a [(std::net::IpAddr, u64)]>,
) {
    let of = |netns: u32, local: std::net::SocketAddr| {
        let all = listeners(netns, local.port())?;
        let &(at, inode) = listener_for(all, local.ip())?;
        let mut siblings: Vec<u64> = all
            .iter()
            .filter(|&&(a, i)| a == at && i != inode)
            .map(|&(_, i)| i)
            .collect();
        siblings.sort_unstable();
        Some((inode, siblings))
    };
    for f in flags {
        if f.reason == Some(Reason::NotAccepted)
            && f.inode == 0
            && let Some((inode, siblings)) = of(f.netns, f.local)
        {
            f.inode = inode;
            f.sibling_listeners = siblings;
        }
        if let (Some(p), Some(remote)) = (&mut f.local_peer, f.remote)
            && p.not_accepted
            && p.inode == 0
            && let Some((inode, siblings)) = of(p.netns.unwrap_or(f.netns), remote)
        {
            p.inode = inode;
            p.sibling_listeners = siblings;
        }
    }
}

/// The owners of `inode` and of its `siblings` (listeners sharing its
/// address) in `scan`, each (pid, fd) once; `None` when none of them is
/// in it.
fn owners_of(scan: &OwnerScan, inode: u64, siblings: &[u64]) -> Option<Vec<FdOwner>> {
    let of = |i: &u64| scan.get(i).filter(|_| *i != 0);
    if siblings.is_empty() {
        return of(&inode).cloned();
    }
    let mut all: Vec<FdOwner> = std::iter::once(&inode)
        .chain(siblings)
        .filter_map(of)
        .flatten()
        .cloned()
        .collect();
    all.sort_by_key(|o| (o.pid, o.fd));
    all.dedup_by_key(|o| (o.pid, o.fd));
    (!all.is_empty()).then_some(all)
}

/// What a retransmit stall shows in `tcp_info`: `with 2 segments unacked;
/// retransmit timer fired 6 times, RTO backoff 6 (rto 12.8s)`.
pub(super) fn retransmit_words(info: &TcpInfo) -> String {
    format!(
        "with {} segment{} unacked; retransmit timer fired {} times, RTO backoff {} (rto {:.1}s)",
        info.unacked,
        if info.unacked == 1 { "" } else { "s" },
        info.retransmits,
        info.backoff,
        f64::from(info.rto_us) / 1e6,
    )
}

/// How long the data in flight of a retransmitting socket has waited for
/// its ACK, from `tcp_info` alone: the time since the peer's last segment
/// is no measure of it (a connection idle for an hour that just lost one
/// segment has that too). Each backoff doubled the timeout, so the
/// timeouts before the current one add up to `rto · (1 − 2^-backoff)`
/// (less when the timeout reached its cap), and the current one began at
/// the last retransmission (`tcpi_last_data_sent`). Nothing was
/// acknowledged meanwhile: unless the peer's segments acknowledge nothing
/// new, it is at most the time since the last ACK, as callers cap it.
///
/// Two cases tell less. With no route to the peer the timer fires and
/// sends nothing, so the last send is older than the current timeout: the
/// time since it then holds the timeouts spent since, and the larger of
/// the two is the wait. Once the timeout reaches its cap ([`rto_capped`])
/// it no longer doubles, and the sum is short of the stall.
pub(super) fn unacked_for(info: &TcpInfo) -> u64 {
    let rto_ns = u64::from(info.rto_us) * 1_000;
    let spent = rto_ns - (rto_ns >> info.backoff.min(63));
    let since_sent = u64::from(info.last_data_sent_ms) * MS;
    if since_sent >= rto_ns {
        spent.max(since_sent)
    } else {
        spent + since_sent
    }
}

/// The retransmit timeout is at its cap (`TCP_RTO_MAX`, 120 s).
pub(super) fn rto_capped(info: &TcpInfo) -> bool {
    info.rto_us >= 120_000_000
}

/// A one-shot snapshot's half-open suspect: an ESTABLISHED or CLOSE_WAIT
/// socket with data unacknowledged whose retransmit timer has backed off
/// for `threshold` or more ([`unacked_for`]). One look cannot time the
/// stall (the agent does, across dumps): that is the age, a lower bound.
pub(super) fn stall_suspect(d: &SocketSnapshot, threshold: std::time::Duration) -> Option<Flag> {
    let info = d.info.as_ref()?;
    let live = matches!(d.state, TcpState::Established | TcpState::CloseWait) && !d.timewait;
    let rto = info.retransmitting();
    let stalled = unacked_for(info).min(u64::from(info.last_ack_recv_ms) * MS);
    if !live || !rto || stalled < ns(threshold) {
        return None;
    }
    let evidence = format!(
        "no ACK for at least {} (threshold {}) {} (snapshot)",
        span(stalled),
        super::fmt_duration(threshold),
        retransmit_words(info),
    );
    let reason = Some(Reason::Retransmitting);
    Some(socket_flag(
        d,
        LeakKind::HalfOpen,
        reason,
        0,
        (stalled, true),
        evidence,
    ))
}

/// A flag on listener `d`, whose accept queue is full `held` ("at every
/// dump for 12.0s (threshold 10s)"): about the listener, so with no peer.
pub(super) fn queue_flag(d: &SocketSnapshot, now: u64, age: (u64, bool), held: &str) -> Flag {
    let evidence = format!(
        "accept queue full {held}: {} connections wait for accept(), backlog {}; \
         the kernel drops new handshakes until the process accepts",
        d.rqueue, d.wqueue
    );
    let reason = Some(Reason::AcceptQueueFull);
    let mut f = socket_flag(d, LeakKind::StuckHandshake, reason, now, age, evidence);
    f.remote = None;
    f.unread_bytes = 0;
    f
}

/// Give each `orphaned_fin_wait2` flag of `flags` its peer, when the
/// other end of its connection is in `dump` (the 4-tuple reversed) in
/// CLOSE_WAIT: a connection between two processes of this host, whose
/// other process has not closed. Likewise each `close_wait` flag whose
/// other end is in FIN_WAIT2 held by a process (not an orphan): a
/// half-close, its peer waiting for the answer. In the same namespace first; else, for
/// addresses that are not loopback (every namespace has its own), in the
/// one other namespace that has it (a container's peer over a veth; two
/// namespaces with the same addresses are not told apart, and name none).
/// One pass over the dump, and only when there is such a flag.
pub(super) fn find_local_peers<'a>(
    flags: impl Iterator<Item = &'a mut Flag>,
    dump: &[SocketSnapshot],
) {
    use std::{collections::HashMap, net::SocketAddr};
    type Tuple = (SocketAddr, SocketAddr);
    // The peer's state each kind looks for.
    let wanted = |kind| match kind {
        LeakKind::OrphanedFinWait2 => Some(TcpState::CloseWait),
        LeakKind::CloseWait => Some(TcpState::FinWait2),
        _ => None,
    };
    let mut seeking: HashMap<(u32, SocketAddr, SocketAddr), &mut Flag> = flags
        .filter(|f| wanted(f.kind).is_some())
        .filter_map(|f| Some(((f.netns, f.remote?, f.local), f)))
        .collect();
    if seeking.is_empty() {
        return;
    }
    let routed: std::collections::HashSet<Tuple> = seeking
        .keys()
        .filter(|(_, remote, local)| {
            !remote.ip().to_canonical().is_loopback() && !local.ip().to_canonical().is_loopback()
        })
        .map(|&(_, remote, local)| (remote, local))
        .collect();
    // Other namespaces' candidates, by tuple: the first, and how many.
    let mut elsewhere: HashMap<Tuple, (&SocketSnapshot, usize)> = HashMap::new();
    let peer = |d: &SocketSnapshot, netns: Option<u32>| super::LocalPeer {
        cookie: d.cookie,
        state: d.state,
        inode: d.inode,
        netns,
        sibling_listeners: Vec::new(),
        not_accepted: d.awaits_accept(),
        owners: Vec::new(),
    };
    // A FIN_WAIT2 peer counts only when a process holds it (an orphan
    // has no file): that process shut its side down.
    let candidate = |d: &&SocketSnapshot| {
        !d.timewait
            && (d.state == TcpState::CloseWait || (d.state == TcpState::FinWait2 && d.inode != 0))
    };
    for d in dump.iter().filter(candidate) {
        let tuple = (
            SocketAddr::new(d.saddr, d.sport),
            SocketAddr::new(d.daddr, d.dport),
        );
        let key = (d.netns, tuple.0, tuple.1);
        if seeking
            .get(&key)
            .is_some_and(|f| wanted(f.kind) == Some(d.state))
        {
            if let Some(f) = seeking.remove(&key) {
                f.local_peer = Some(peer(d, None));
            }
        } else if routed.contains(&tuple) {
            elsewhere.entry(tuple).or_insert((d, 0)).1 += 1;
        }
    }
    for ((netns, remote, local), f) in seeking {
        if let Some(&(d, 1)) = elsewhere.get(&(remote, local))
            && d.netns != netns
            && wanted(f.kind) == Some(d.state)
        {
            f.local_peer = Some(peer(d, Some(d.netns)));
        }
    }
}

/// Fill in `f`'s owners from `scan`, or mark them unknown (with the hint)
/// when the socket has an owner the scan could not see; and its local
/// peer's owners.
pub(super) fn apply_scan(f: &mut Flag, scan: &OwnerScan) {
    if let Some(p) = &mut f.local_peer {
        p.owners = owners_of(scan, p.inode, &p.sibling_listeners).unwrap_or_default();
    }
    if let Some(list) = owners_of(scan, f.inode, &f.sibling_listeners) {
        f.owners = list;
        f.owner_unknown = false;
        f.owner_hint = None;
    } else {
        // No process holds it now (or none we may see).
        f.owners.clear();
        let hint = scan.unknown(f.inode);
        f.owner_unknown = hint.is_some();
        f.owner_hint = hint.map(str::to_owned);
    }
}

/// Why a flag ended when its socket is no longer in the dump, until the
/// engine says more ([`gone_how`]).
pub(super) const GONE: &str = "socket gone (closed, or its process exited)";

/// What a flag's end adds when the socket was closed under its owner (a
/// reset, a timeout, `ss -K`), which still holds the descriptor.
pub(super) const HELD_ON: &str =
    "its process still holds the descriptor: the fd leaks on until the application closes it";

/// Why a CLOSE_WAIT flag ended when its process sent its FIN
/// (`shutdown(SHUT_WR)`: LAST_ACK) and the connection ended, while it
/// still holds the descriptor.
pub(super) const SHUT_DOWN: &str = "its process shut its side down (shutdown(SHUT_WR)) and the \
     connection ended; it still holds the descriptor: the fd leaks on until the application \
     closes it";

/// Why a flag ended when its socket is no longer in the dump but its
/// owner still holds the descriptor, and nothing the engine read closed
/// it: it was closed under the process.
pub(super) const STILL_HELD: &str = "socket closed under its process (ss -K, or a sock_diag \
     destroy), which still holds the descriptor: the fd leaks on until the application closes it";

/// Why an orphan's flag ended when it is no longer in the dump: no process
/// held it, so neither did one close it.
pub(super) const ORPHAN_GONE: &str = "it left FIN_WAIT2: the peer's FIN came (then TIME_WAIT, \
     which the live dumps leave out), or its timer ran out (tcp_fin_timeout)";

/// What the engine's record of a flagged socket says of its end (kept a
/// few seconds after its close).
#[derive(Clone, Copy, Debug)]
pub struct Ending {
    /// Still open (or in TIME_WAIT).
    pub live: bool,
    /// Its state now.
    pub state: TcpState,
    /// Who closed it.
    pub closed_by: Option<ClosedBy>,
    /// Its process closed it after the peer had: it went through
    /// LAST_ACK, by a `close()` or by the process's exit.
    pub app_closed: bool,
    /// How its TIME_WAIT, or an orphan's FIN_WAIT2, ended.
    pub time_wait_end: Option<TimeWaitEnd>,
    /// It sent a reset (an orphan answers data that comes after its
    /// close with one).
    pub reset_sent: bool,
}

/// How an orphan's FIN_WAIT2 ended at its timer.
pub(super) const ORPHAN_EXPIRED: &str =
    "its timer ran out (tcp_fin_timeout): the peer never sent its FIN";

/// How an orphan's FIN_WAIT2 ended at a reset it did not send.
pub(super) const ORPHAN_RESET: &str = "a reset ended it before its timer (its peer's socket \
     closed with one: unread data, SO_LINGER 0, a listener closed before accepting it; or ss -K)";

/// How an orphan's FIN_WAIT2 ended at a reset it sent.
pub(super) const ORPHAN_ANSWERED: &str = "the peer sent data after this side had closed, and the \
     orphan answered with a reset, which ended it (the peer's application wrote to a connection \
     this one had given up on)";

/// How a socket missing from a dump ended, from the engine's record of it.
/// `None` when the record says no more than [`GONE`].
pub(super) fn gone_how(kind: LeakKind, e: &Ending) -> Option<&'static str> {
    let &Ending {
        live,
        state,
        closed_by,
        app_closed,
        time_wait_end,
        reset_sent,
    } = e;
    if kind == LeakKind::OrphanedFinWait2 && !live {
        match time_wait_end {
            Some(TimeWaitEnd::Expired) => return Some(ORPHAN_EXPIRED),
            Some(TimeWaitEnd::Reset) if reset_sent => return Some(ORPHAN_ANSWERED),
            Some(TimeWaitEnd::Reset) => return Some(ORPHAN_RESET),
            _ => {}
        }
    }
    if kind == LeakKind::CloseWait && app_closed && !live {
        // The application's close (or its exit) ended the leak; a reset
        // after it is the peer, long gone, answering its FIN.
        return Some(match closed_by {
            Some(ClosedBy::Reset) => {
                "its process closed it (close(), or the process exited); the peer, gone by \
                 then, answered its FIN with a reset"
            }
            _ => "its process closed it (close(), or the process exited)",
        });
    }
    match (live, state, closed_by) {
        (true, TcpState::TimeWait, _) => Some("the connection closed: its socket is in TIME_WAIT"),
        (false, _, Some(ClosedBy::Timeout)) if kind == LeakKind::StuckHandshake => Some(
            "the kernel gave up on the handshake (its SYNs unanswered: connect() fails with \
             ETIMEDOUT, or the ICMP error that came meanwhile)",
        ),
        (false, _, Some(ClosedBy::Timeout)) => Some(
            "the kernel gave up on the peer and closed the connection (keepalive probes or \
             retransmissions unanswered: the next read or write fails with ETIMEDOUT, or the ICMP \
             error that came meanwhile)",
        ),
        (false, _, Some(ClosedBy::Reset)) => Some("a reset ended the connection"),
        _ => None,
    }
}

/// Why a flag ended, given the socket's state now (`None`: not in the dump).
pub(super) fn cleared_how(f: &Flag, now: Option<TcpState>) -> String {
    match (f.cookie, now) {
        (None, _) => "no stuck handshakes left on the port".into(),
        (Some(_), None) if f.kind == LeakKind::OrphanedFinWait2 => ORPHAN_GONE.into(),
        (Some(_), None) => GONE.into(),
        (Some(_), Some(st)) if st != f.state => format!("socket left {} (now {st})", f.state),
        (Some(_), Some(_)) if f.reason == Some(Reason::AcceptQueueFull) => {
            "the process accepted: its accept queue has room again".into()
        }
        (Some(_), Some(_)) => match f.kind {
            LeakKind::HalfOpen => "ACK progress resumed".into(),
            LeakKind::IdleNoKeepalive => "traffic resumed or keepalive armed".into(),
            LeakKind::CloseWait => {
                "still in CLOSE_WAIT, no longer a leak: it sent data again (a half-close in use), \
                 or its age was corrected"
                    .into()
            }
            _ => format!("no longer {}", f.kind.name()),
        },
    }
}

pub(super) fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(super) fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// How a CLOSE_WAIT socket's evidence ends: that no process accepted it,
/// or what its application left unread.
pub(super) fn close_wait_words(d: &SocketSnapshot) -> String {
    if d.awaits_accept() {
        "never accepted: it waits in the listener's accept queue".to_owned()
    } else {
        unread_words(d)
    }
}

/// A span for evidence text, written as the AGE column writes ages:
/// `73.2s`, `12m05s`, `3h04m`.
pub(super) fn span(ns: u64) -> String {
    super::table::fmt_age(Some(secs(ns)), false)
}

/// A CLOSE_WAIT socket's age at least since the peer's FIN
/// ([`SocketSnapshot::close_wait_at_least_ns`]). It raises a lower bound
/// (a socket older than the agent, or than its first sight) and leaves an
/// exact age alone.
pub(super) fn fin_floor(d: &SocketSnapshot, (age, lb): (u64, bool)) -> (u64, bool) {
    match d.close_wait_at_least_ns() {
        Some(floor) if lb => (age.max(floor), true),
        _ => (age, lb),
    }
}
