//! [`Engine::apply`]: one kernel event in, observer calls out.
//!
//! The rules (duplicates, disorder, TIME_WAIT inference, who closed, owner)
//! are described in the module docs of `engine`; this file is their code.
//! Nothing here allocates except when the store grows.
use super::Engine;
use super::handshake;
use super::observer::{Direction, Observer, TimeWaitEnd};
use super::record::{ClosedBy, Record, flag, tw_end};
use super::time_wait::reuses_a_tuple;
use crate::event::{Kind, SockEvent};
use crate::tcp::TcpState::{self, *};

/// The closer a transition reveals.
fn closer_of(to: TcpState) -> Option<ClosedBy> {
    match to {
        FinWait1 => Some(ClosedBy::Local),
        CloseWait => Some(ClosedBy::Remote),
        _ => None,
    }
}

/// What a close's `sk_err` says ended the connection, the record's
/// retransmits beside it: the kernel gave up on the peer when its timers
/// ran out (ETIMEDOUT; or the ICMP error that came meanwhile, which then
/// replaces it, so only after a retransmit), a reset (ECONNRESET, EPIPE,
/// ECONNREFUSED; ECONNABORTED: `ss -K`, which sends one). An ICMP error
/// that closed a connect at once is neither (`None`).
fn ended_by(err: u8, retransmitted: bool) -> Option<ClosedBy> {
    match i32::from(err) {
        0 => None,
        libc::ETIMEDOUT => Some(ClosedBy::Timeout),
        libc::ECONNRESET | libc::EPIPE | libc::ECONNREFUSED | libc::ECONNABORTED => {
            Some(ClosedBy::Reset)
        }
        _ if retransmitted => Some(ClosedBy::Timeout),
        _ => None,
    }
}

/// True when the transition runs in the owner's syscall, so the event's
/// pid/comm are the owner's. `rst_rx`: a reset was received in `from`
/// (then `established -> close` ran in softirq).
fn syscall_context(from: TcpState, to: TcpState, rst_rx: bool) -> bool {
    match (from, to) {
        (Close, SynSent)
        | (Close, Listen)
        | (Listen, Close)
        | (Established, FinWait1)
        | (CloseWait, LastAck) => true,
        (Established, Close) => !rst_rx,
        _ => false,
    }
}

/// True when the transition creates the socket's life as a connection or
/// listener.
fn is_birth(from: TcpState, to: TcpState) -> bool {
    matches!(
        (from, to),
        (Close, SynSent) | (Close, Listen) | (Listen, SynRecv)
    )
}

/// Keep what an event tells regardless of order: who closed, the owner,
/// and how old the socket is.
fn learn(r: &mut Record, from: TcpState, to: TcpState, ev: &SockEvent) {
    if r.closed_by.is_none() {
        r.closed_by = closer_of(to);
    }
    if !r.has(flag::OWNER) && ev.pid != 0 && syscall_context(from, to, r.has(flag::RST_RX)) {
        r.pid = ev.pid;
        r.comm = ev.comm;
        r.set(flag::OWNER, true);
    }
    if is_birth(from, to) && !r.has(flag::BIRTH_SEEN) {
        r.set(flag::BIRTH_SEEN, true);
        r.created_ns = r.created_ns.min(ev.ts_ns);
    } else if ev.ts_ns < r.created_ns {
        r.created_ns = ev.ts_ns;
    }
}

impl Engine {
    /// Ask the CPU for what applying `ev` reads first and most likely
    /// finds out of its caches: the cookie index's entry, and for a
    /// connection's first events its tuple's entry in the TIME_WAIT tuple
    /// index (`apply_state`'s check for a TIME_WAIT it takes over: a key
    /// at random in a table of one entry per TIME_WAIT socket, 4 MiB at
    /// the default `tcp_max_tw_buckets`). Changes nothing; called a few
    /// events before `apply(ev)`, so the wait for memory overlaps the
    /// events between.
    pub fn prefetch(&self, ev: &SockEvent) {
        let tuple = match (ev.kind, ev.old_state, ev.new_state, ev.family) {
            (Kind::State, Some(from), Some(to), Some(family))
                if ev.sport != 0 && reuses_a_tuple(from, to) =>
            {
                self.tuple_to_look_up(ev, family)
            }
            _ => None,
        };
        self.store.prefetch_lookups(ev.cookie, tuple);
    }

    /// Apply one decoded kernel event. Idempotent for an exact duplicate;
    /// never reports a negative (wrapped) duration.
    pub fn apply(&mut self, ev: &SockEvent, obs: &mut impl Observer) {
        self.stats.events += 1;
        self.expire(ev.ts_ns, obs);
        match ev.kind {
            Kind::State => self.apply_state(ev, obs),
            Kind::Retransmit => {
                obs.retransmit(ev.cookie, ev.new_state);
                let ts = ev.ts_ns;
                self.bump(ev.cookie, |r| {
                    r.retransmits = r.retransmits.saturating_add(1);
                    if ts >= r.since_ns && !r.has(flag::FINISHED) {
                        r.set(flag::RTX, true);
                    }
                });
            }
            Kind::SynackRetransmit => {
                obs.synack_retransmit(ev.cookie);
                self.stats.synack_retransmits += 1;
                self.bump(ev.cookie, |r| {
                    r.synack_retransmits = r.synack_retransmits.saturating_add(1)
                });
            }
            Kind::ResetSent => self.apply_reset(ev, Direction::Sent, obs),
            Kind::ResetReceived => self.apply_reset(ev, Direction::Received, obs),
        }
        // The event may have taken the front off the finished queue (a
        // reconnect) and bared records already due: drop them now, so
        // that applying the same event again finds nothing left to do.
        self.drop_retained();
    }

    /// Update a counter of a tracked record, or count the event as untracked.
    fn bump(&mut self, cookie: u64, f: impl FnOnce(&mut Record)) -> Option<u32> {
        match self.store.slot(cookie) {
            Some(slot) => {
                self.store.update(slot, f);
                Some(slot)
            }
            None => {
                self.stats.untracked_events += 1;
                None
            }
        }
    }

    fn apply_reset(&mut self, ev: &SockEvent, dir: Direction, obs: &mut impl Observer) {
        obs.reset(ev.cookie, dir, ev.new_state);
        if let (Direction::Sent, Some(family)) = (dir, ev.family) {
            self.end_time_wait_reset_by_peer(ev, family, obs);
        }
        let (bit, counter): (u16, fn(&mut Record)) = match dir {
            Direction::Sent => (flag::RST_TX, |r| {
                r.resets_sent = r.resets_sent.saturating_add(1)
            }),
            Direction::Received => (flag::RST_RX, |r| {
                r.resets_received = r.resets_received.saturating_add(1)
            }),
        };
        let Some(slot) = self.bump(ev.cookie, counter) else {
            return;
        };
        let r = self.store.rec(slot);
        if r.has(flag::TW) {
            if ev.ts_ns > r.since_ns {
                self.end_time_wait(slot, ev.ts_ns, TimeWaitEnd::Reset, obs);
            } else if !r.has(flag::TW_CONFIRMED) {
                // The reset came first (delivered late): it caused the close,
                // and a reset close leaves no timewait socket.
                self.store.update(slot, |r| {
                    r.set(flag::FINISHED, true);
                    r.state = Close;
                    r.pop_path(TimeWait);
                });
            }
        } else if !r.has(flag::FINISHED) && ev.ts_ns >= r.since_ns {
            self.store.update(slot, |r| r.set(bit, true));
        }
    }

    fn apply_state(&mut self, ev: &SockEvent, obs: &mut impl Observer) {
        let (Some(from), Some(to), Some(family)) = (ev.old_state, ev.new_state, ev.family) else {
            self.stats.untracked_events += 1;
            return;
        };
        // Ending another record's stay changes no slot: look this one up once.
        let tracked = self.store.slot(ev.cookie);
        let known_tuple = tracked.is_some_and(|s| {
            self.store
                .rec(s)
                .has_tuple(ev.netns, ev.saddr, ev.sport, ev.daddr, ev.dport)
        });
        if from != to && ev.sport != 0 && (reuses_a_tuple(from, to) || !known_tuple) {
            // Even a request socket the kernel names no cookie for (a SYN
            // that took over a server-side TIME_WAIT) ends the old stay.
            self.end_reused_time_wait(ev, family, obs);
        }
        if ev.cookie == 0 {
            // No socket to follow (the kernel could not name it): count it.
            self.stats.untracked_events += 1;
            obs.transition(0, from, to);
            return;
        }
        if from == to {
            // Not a change: nothing to end or start.
            self.stats.duplicates += 1;
            return;
        }
        let mut seen = None;
        let slot = match tracked {
            Some(slot) => {
                if matches!(from, SynSent | SynRecv) {
                    seen = self.seen_in(slot, from, ev.ts_ns);
                }
                if !self.advance_record(slot, ev, from, to, obs) {
                    return;
                }
                slot
            }
            None => {
                let mut rec = Record::new(ev.cookie, family, from, ev.ts_ns);
                rec.netns = ev.netns;
                rec.push_path(from);
                match self.store.insert(rec, true, obs) {
                    Some(slot) => slot,
                    None => {
                        // At the cap with only live records that are not
                        // in TIME_WAIT: this socket goes untracked.
                        self.stats.refused += 1;
                        self.refused_since_dump += 1;
                        return;
                    }
                }
            }
        };
        self.enter(slot, from, to, ev, obs);
        if let Some((role, outcome)) = handshake::outcome(from, to, ev.err, ev.sport, seen) {
            obs.handshake(ev.cookie, role, outcome);
        }
    }

    /// Decide what a state event for a tracked record means. Returns true
    /// when the record should enter `to` now (after reporting the stay it
    /// leaves); false when the event was a duplicate or stale.
    fn advance_record(
        &mut self,
        slot: u32,
        ev: &SockEvent,
        from: TcpState,
        to: TcpState,
        obs: &mut impl Observer,
    ) -> bool {
        let r = self.store.rec(slot);
        let ts = ev.ts_ns;
        let cur = r.kernel_state();
        let lower_bound = r.has(flag::LOWER_BOUND);
        if ts <= r.since_ns && r.is_now(to) && lower_bound {
            // A late event says when the unseen entry into `cur` happened.
            // (Not for a full socket a dump showed in TIME_WAIT, which the
            // kernel never reports: no timer bounds that stay, so its age
            // stays a lower bound.)
            self.stats.out_of_order += 1;
            self.store.update(slot, |r| {
                learn(r, from, to, ev);
                r.since_ns = ts;
                r.prev = Some(from);
                let unbounded = r.state == TimeWait && !r.has(flag::TW);
                r.set(flag::LOWER_BOUND, unbounded);
            });
            return false;
        }
        if ts <= r.since_ns && r.prev == Some(from) && r.is_now(to) {
            self.stats.duplicates += 1;
            return false;
        }
        let closed = r.has(flag::FINISHED) || r.has(flag::TW);
        if ts < r.since_ns && (from != cur || closed) {
            // Stale: the record is already past this event (a closed socket
            // can start again, but only after it closed).
            self.stats.out_of_order += 1;
            self.store.update(slot, |r| learn(r, from, to, ev));
            return false;
        }
        let at = if ts < r.since_ns {
            self.stats.out_of_order += 1;
            r.since_ns
        } else {
            ts
        };
        if from != cur {
            self.stats.path_gap += 1;
        }
        let (cookie, state, since) = (r.cookie, r.state, r.since_ns);
        if closed {
            // The full socket had closed; a reconnect (close -> syn_sent)
            // starts a new life on the same cookie. A TIME_WAIT cannot be
            // left by a state event: end it silently (the kernel wins).
            self.store.update(slot, |r| {
                if r.has(flag::FINISHED) {
                    r.set(
                        flag::FINISHED | flag::TW_CONFIRMED | flag::HALF_CLOSED | flag::RST_RX,
                        false,
                    );
                    r.closed_by = None;
                    r.tw_end = tw_end::NONE;
                }
                r.set(flag::TW | flag::FW2_KEPT, false);
            });
        } else if from == cur {
            let dur = at - since;
            obs.stay(cookie, state, dur, lower_bound);
            if self.half_closed(state, dur) {
                self.store.update(slot, |r| r.set(flag::HALF_CLOSED, true));
            }
        }
        true
    }

    /// Move `slot` into `to` at the event's time: path, facts, and the
    /// close (finish, or infer TIME_WAIT).
    fn enter(
        &mut self,
        slot: u32,
        from: TcpState,
        to: TcpState,
        ev: &SockEvent,
        obs: &mut impl Observer,
    ) {
        let at = ev.ts_ns.max(self.store.rec(slot).since_ns);
        // A close that would leave a timewait socket where the namespace
        // holds its limit of them leaves none (the kernel counts it in
        // `TCPTimeWaitOverflow`).
        let tw_full = matches!(to, Close | TimeWait) && self.time_wait_full(ev.netns);
        let mut overflowed = false;
        let (cookie, closed) = self.store.update(slot, |r| {
            // How long a full socket's FIN_WAIT2 had lasted, when this
            // close leaves it (no event missed between) and its entry was
            // seen: an orphan's timewait socket goes on in it.
            let fin_wait2 =
                (from == FinWait2 && r.state == FinWait2 && !r.has(flag::TW | flag::LOWER_BOUND))
                    .then(|| at.saturating_sub(r.since_ns));
            learn(r, from, to, ev);
            r.set_tuple(ev.saddr, ev.sport, ev.daddr, ev.dport);
            r.netns = ev.netns;
            r.prev = Some(from);
            r.push_path(to);
            r.since_ns = at;
            r.set(flag::LOWER_BOUND, false);
            let closing = matches!(to, Close | TimeWait);
            // Whether a reset received ended it, kept once finished.
            let mut reset_ended = false;
            if closing {
                let rst = r.has(flag::RST_RX | flag::RST_TX);
                if r.closed_by.is_none() {
                    let retransmitted = r.retransmits > 0 || r.has(flag::RTX);
                    r.closed_by = match ended_by(ev.err, retransmitted) {
                        None if rst => Some(ClosedBy::Reset),
                        by => by,
                    };
                }
                let tw = to == TimeWait || (matches!(from, FinWait2 | Closing) && !rst);
                overflowed = tw && tw_full;
                if tw && !tw_full {
                    r.keep_fin_wait2_before(fin_wait2);
                    r.set(flag::TW, true);
                    r.set(flag::TW_CONFIRMED, false);
                    r.tw_end = tw_end::NONE;
                    r.state = TimeWait;
                    if to == Close {
                        r.push_path(TimeWait);
                    }
                } else {
                    r.keep_fin_wait2_before(None);
                    r.set(flag::FINISHED, true);
                    r.state = Close;
                    reset_ended = r.has(flag::RST_RX)
                        || matches!(i32::from(ev.err), libc::ECONNRESET | libc::EPIPE);
                }
            } else {
                r.keep_fin_wait2_before(None);
                r.state = to;
            }
            // A dump's absence counts only for the state it judged.
            r.set(
                flag::RST_RX | flag::RST_TX | flag::RTX | flag::MISSING,
                false,
            );
            r.set(flag::RST_RX, reset_ended);
            (r.cookie, closing.then_some(r.closed_by))
        });
        if overflowed {
            self.stats.time_wait_overflows += 1;
            self.tw_overflowed_in.insert(ev.netns);
            obs.time_wait_overflowed(cookie);
        }
        obs.transition(cookie, from, to);
        if let Some(by) = closed {
            obs.closed(cookie, by);
        }
    }
}
