//! How a TIME_WAIT stay ends: at its timer, when a new connection recycles
//! its 4-tuple, or when something else ends it (a reset, a dump that no
//! longer shows it). [`super::apply`] calls these as events arrive.
use std::net::IpAddr;

use super::observer::{Observer, TimeWaitEnd};
use super::record::{flag, tw_end};
use super::{Engine, hash};
use crate::event::SockEvent;
use crate::tcp::Family;
use crate::tcp::TcpState::{self, *};

/// At most this many namespaces with timewait records are asked for the
/// tuple a reset from another namespace names: one lookup each, only for a
/// reset its peer's socket sent from `close_wait`.
const NAMESPACES_ASKED: usize = 256;

/// The two ends of one connection are born this close together, at most:
/// a handshake, SYN retransmissions included (1 s, then 2 s).
const HANDSHAKE_SPAN_NS: u64 = 3_500_000_000;

/// True when a transition shows a new connection on its 4-tuple, which
/// the kernel allows only once no other socket holds it: a timewait socket
/// on the same tuple was recycled. A client's `close -> syn_sent` runs
/// before `connect()` picks the port (sport 0 unless bound), so its
/// `syn_sent -> established` is the first to show the tuple; a server's
/// `listen -> syn_recv` shows it at once. The kernel skips events that fire
/// while its program runs on the same CPU, so any event that shows a
/// socket's tuple for the first time is checked too.
pub(super) fn reuses_a_tuple(from: TcpState, to: TcpState) -> bool {
    matches!(
        (from, to),
        (_, SynSent) | (_, SynRecv) | (SynSent | SynRecv, Established)
    )
}

impl Engine {
    /// The fingerprint of the 4-tuple `ev` names, as a record of `family`
    /// with that tuple has it, when a TIME_WAIT record may hold it; `None`
    /// when no timewait record has `ev`'s local port, so that neither the
    /// check nor the ask ahead reads the tuple index.
    pub(super) fn tuple_to_look_up(&self, ev: &SockEvent, family: Family) -> Option<u64> {
        self.time_wait_tuple(ev.netns, family, (ev.saddr, ev.sport), (ev.daddr, ev.dport))
    }

    /// The fingerprint of a 4-tuple of `family` in `netns`, when a timewait
    /// record may hold it (one has its local port).
    fn time_wait_tuple(
        &self,
        netns: u32,
        family: Family,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
    ) -> Option<u64> {
        self.store.time_wait_tuples_on_port(local.1).then(|| {
            hash::tuple_hash(
                netns,
                family,
                &super::record::addr_bytes(local.0),
                local.1,
                &super::record::addr_bytes(remote.0),
                remote.1,
            )
        })
    }

    /// The slot of the timewait record that holds this 4-tuple, if any, of
    /// either family when the tuple is IPv4 (`Record::holds_tuple`).
    fn time_wait_holding(
        &self,
        netns: u32,
        family: Family,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
    ) -> Option<u32> {
        let hash = self.time_wait_tuple(netns, family, local, remote)?;
        let slot = self.store.slot(self.store.time_wait_with_tuple(hash)?)?;
        self.store
            .rec(slot)
            .holds_tuple(netns, local, remote)
            .then_some(slot)
    }

    /// The slot of the one timewait record of another namespace than
    /// `netns` that holds this 4-tuple: the other end of a connection over
    /// a veth (pods on one node). None when the tuple is loopback's or
    /// link-local, which every namespace or link may have, when two
    /// namespaces hold it (addresses
    /// reused in isolated namespaces: which one the packet reached is
    /// unknown), or when more than [`NAMESPACES_ASKED`] hold timewait
    /// records (the dumps settle it).
    fn time_wait_holding_elsewhere(
        &self,
        netns: u32,
        family: Family,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
    ) -> Option<u32> {
        let namespaces = self.store.time_wait_namespaces();
        if namespaces.len() > NAMESPACES_ASKED
            || !unique_on_a_host(local.0)
            || !unique_on_a_host(remote.0)
            || !self.store.time_wait_tuples_on_port(local.1)
        {
            return None;
        }
        let mut holding = namespaces
            .filter(|&n| n != netns)
            .filter_map(|n| self.time_wait_holding(n, family, local, remote));
        let slot = holding.next()?;
        holding.next().is_none().then_some(slot)
    }

    /// The timewait record of another namespace that a reset `ev` names,
    /// when `ev` is its peer's: a socket this engine follows, that the
    /// orphan's FIN left in CLOSE_WAIT (a listener's child it never
    /// accepted, a `close()` with unread data), first seen within
    /// [`HANDSHAKE_SPAN_NS`] of the orphan's birth (the two ends of one
    /// handshake; a server's child may show itself only at
    /// `syn_recv -> established`).
    /// Addresses reused in isolated namespaces could otherwise make a
    /// stranger's reset end an orphan; and a reset of any other kind (a
    /// socketless one answering a port scan, `SO_LINGER` 0 on an open
    /// connection) asks nothing.
    fn orphans_peer_elsewhere(
        &self,
        ev: &SockEvent,
        family: Family,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
    ) -> Option<u32> {
        let sender = self.store.rec(self.store.slot(ev.cookie)?);
        let closing =
            sender.state == CloseWait || (sender.state == Close && sender.prev == Some(CloseWait));
        if !closing {
            return None;
        }
        let slot = self.time_wait_holding_elsewhere(ev.netns, family, local, remote)?;
        let orphan = self.store.rec(slot);
        (orphan.has(flag::BIRTH_SEEN)
            && orphan.created_ns.abs_diff(sender.created_ns) <= HANDSHAKE_SPAN_NS)
            .then_some(slot)
    }

    /// End the TIME_WAIT (or orphaned FIN_WAIT2) stay of `slot` at `at_ns`,
    /// or at its 60 s timer if that came first (an inferred TIME_WAIT keeps
    /// no timer of its own until `since + 60 s + slack`).
    pub(super) fn end_time_wait(
        &mut self,
        slot: u32,
        at_ns: u64,
        how: TimeWaitEnd,
        obs: &mut impl Observer,
    ) {
        let r = self.store.rec(slot);
        let (cookie, state, since) = (r.cookie, r.state, r.since_ns);
        // An orphan's FIN_WAIT2 began before the handover `since` is.
        let first = r.state_entry_ns();
        let timer = self.store.time_wait_end(since);
        let (at_ns, how) = if state == TimeWait && timer < at_ns {
            (timer, TimeWaitEnd::Expired)
        } else {
            (at_ns, how)
        };
        let dur = at_ns.saturating_sub(since);
        obs.stay(cookie, state, dur, r.has(flag::LOWER_BOUND));
        if state == TimeWait {
            obs.time_wait_ended(cookie, how);
        }
        let half = self.half_closed(state, at_ns.saturating_sub(first));
        self.store.update(slot, |r| {
            r.set(flag::FINISHED, true);
            r.set(flag::LOWER_BOUND, false);
            r.set(flag::HALF_CLOSED, half || r.has(flag::HALF_CLOSED));
            r.state = Close;
            r.since_ns = at_ns.max(since);
            r.tw_end = match how {
                TimeWaitEnd::Expired => tw_end::EXPIRED,
                TimeWaitEnd::Reused => tw_end::REUSED,
                TimeWaitEnd::Reset => tw_end::RESET,
            };
        });
    }

    /// A new connection on the 4-tuple of a TIME_WAIT record ends it.
    pub(super) fn end_reused_time_wait(
        &mut self,
        ev: &SockEvent,
        family: Family,
        obs: &mut impl Observer,
    ) {
        let Some(slot) =
            self.time_wait_holding(ev.netns, family, (ev.saddr, ev.sport), (ev.daddr, ev.dport))
        else {
            return;
        };
        let r = self.store.rec(slot);
        // A connection that started before the TIME_WAIT did cannot reuse it.
        if r.cookie != ev.cookie && ev.ts_ns >= r.since_ns {
            self.stats.time_wait_reused += 1;
            self.end_time_wait(slot, ev.ts_ns, TimeWaitEnd::Reused, obs);
        }
    }

    /// A reset this host sent on a connection whose other end is a
    /// timewait record here: in the same namespace (loopback, a sidecar),
    /// or the only one of another namespace that holds the tuple (pods on
    /// one node, over a veth). The peer's socket closed with the client's
    /// orphan still waiting in
    /// FIN_WAIT2 for its FIN (unread data, a listener closed with
    /// connections it never accepted, `SO_LINGER` 0). The orphan dies of
    /// the reset with no event of its own; without this, it counted until
    /// two full dumps had missed it. Ends an orphan's stay, or one inferred
    /// at its close and not yet confirmed (most likely an orphan: the
    /// peer's socket sent its FIN otherwise); a confirmed TIME_WAIT is left
    /// to the dumps, as `tcp_rfc1337=1` keeps it through a reset.
    pub(super) fn end_time_wait_reset_by_peer(
        &mut self,
        ev: &SockEvent,
        family: Family,
        obs: &mut impl Observer,
    ) {
        if ev.sport == 0 {
            return;
        }
        let (local, remote) = ((ev.daddr, ev.dport), (ev.saddr, ev.sport));
        let Some(slot) = self
            .time_wait_holding(ev.netns, family, local, remote)
            .or_else(|| self.orphans_peer_elsewhere(ev, family, local, remote))
        else {
            return;
        };
        let r = self.store.rec(slot);
        let dies = r.state == FinWait2 || !r.has(flag::TW_CONFIRMED);
        if r.cookie != ev.cookie && dies && ev.ts_ns >= r.since_ns {
            self.stats.time_wait_reset_by_peer += 1;
            if r.state == TimeWait {
                // Inferred at the close, and most likely the orphan a
                // reset kills: its stay was FIN_WAIT2's, not TIME_WAIT's.
                self.store.update(slot, |r| {
                    r.state = FinWait2;
                    r.replace_last_path(TimeWait, FinWait2);
                });
            }
            self.end_time_wait(slot, ev.ts_ns, TimeWaitEnd::Reset, obs);
        }
    }
}

/// False for the addresses every namespace, or every link, may have:
/// loopback's and link-local ones.
fn unique_on_a_host(a: IpAddr) -> bool {
    match a.to_canonical() {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
    }
}
