//! Judging one socket of a dump: which rule it meets, and since when.
use std::collections::{BTreeMap, hash_map::Entry};

use super::super::rules::{
    PortAcc, close_wait_flag, close_wait_words, fin_floor, queue_flag, socket_flag,
};
use super::super::rules::{ns, span};
use super::super::{Flag, LeakKind, Reason, fmt_duration};
use super::{Detector, Key, MAX_TRACKED, Seen, Subject};
use crate::{snapshot::SocketSnapshot, tcp::TcpState};

/// How much later than the entry into CLOSE_WAIT a socket's last send
/// must be for its evidence to say how long it has sent nothing:
/// `tcpi_last_data_sent` counts in jiffies (up to 10 ms), and a connection
/// closed right after its last send reads as sent in CLOSE_WAIT otherwise.
const SENT_SINCE_NS: u64 = 50_000_000;

impl Detector {
    pub(super) fn check<S>(
        &mut self,
        d: &SocketSnapshot,
        now: u64,
        since: &S,
        found: &mut BTreeMap<Key, Flag>,
        ports: &mut BTreeMap<(u32, u16), PortAcc>,
    ) where
        S: Fn(u64, TcpState) -> Option<(u64, bool)>,
    {
        let t = self.thresholds;
        let key = |k| (k, Subject::Socket(d.cookie));
        match d.state {
            TcpState::CloseWait | TcpState::Established if !d.timewait => {
                // A half-close in use: the peer shut down its side and the
                // application still sends its answer. Only a socket idle on
                // our side for the threshold too is left unclosed.
                let quiet = d.info.map(|i| u64::from(i.last_data_sent_ms) * 1_000_000);
                if d.state == TcpState::CloseWait
                    && let Some((age, lb)) = self.age(d, now, since).map(|a| fin_floor(d, a))
                    && age >= ns(t.close_wait)
                    && quiet.is_none_or(|q| q >= ns(t.close_wait))
                {
                    let evidence = format!(
                        "in CLOSE_WAIT for {}{} (threshold {}){}; {}",
                        if lb { "at least " } else { "" },
                        span(age),
                        fmt_duration(t.close_wait),
                        // Said when the application sent in CLOSE_WAIT (a
                        // half-close in use, then silence): not for the
                        // jiffy by which the last send before the FIN can
                        // read as later than it.
                        match quiet {
                            Some(q) if q.saturating_add(SENT_SINCE_NS) < age => {
                                format!(", nothing sent for {}", span(q))
                            }
                            _ => String::new(),
                        },
                        close_wait_words(d)
                    );
                    found.insert(
                        key(LeakKind::CloseWait),
                        close_wait_flag(d, now, (age, lb), evidence),
                    );
                }
                if let Some(info) = d.info {
                    if let Some(f) = self.half_open(d, &info, now) {
                        found.insert(key(LeakKind::HalfOpen), f);
                    }
                    if let Some(f) = self.idle(d, &info, now) {
                        found.insert(key(LeakKind::IdleNoKeepalive), f);
                    }
                }
            }
            TcpState::SynSent => {
                if let Some((age, lb)) = self.age(d, now, since)
                    && age >= ns(t.handshake)
                {
                    let evidence = format!(
                        "in SYN_SENT for {}{} (threshold {}); {} SYN retransmits, no answer",
                        if lb { "at least " } else { "" },
                        span(age),
                        fmt_duration(t.handshake),
                        d.timer_retrans
                    );
                    let f = socket_flag(
                        d,
                        LeakKind::StuckHandshake,
                        Some(Reason::SynSent),
                        now,
                        (age, lb),
                        evidence,
                    );
                    found.insert(key(LeakKind::StuckHandshake), f);
                }
            }
            TcpState::NewSynRecv | TcpState::SynRecv => {
                let age = self.age(d, now, since);
                let old = age.is_some_and(|(a, _)| a >= ns(t.handshake));
                // One retransmitted SYN-ACK is ordinary packet loss; two in a
                // row (3 s with the 1 s initial RTO) is a handshake in trouble.
                if old || d.timer_retrans >= 2 {
                    let acc = ports.entry((d.netns, d.sport)).or_default();
                    acc.local
                        .get_or_insert(std::net::SocketAddr::new(d.saddr, d.sport));
                    acc.stuck += 1;
                    if d.timer_retrans > 0 {
                        acc.retransmitted += 1;
                        acc.max_retrans = acc.max_retrans.max(d.timer_retrans);
                    }
                    if let Some(a) = age
                        && acc.oldest.is_none_or(|(o, _)| a.0 > o)
                    {
                        acc.oldest = Some(a);
                    }
                }
            }
            TcpState::Listen => {
                if d.inode != 0 {
                    ports
                        .entry((d.netns, d.sport))
                        .or_default()
                        .listeners
                        .push((d.saddr, d.inode));
                }
                if !d.accept_queue_full() {
                    // Only a queue full at every dump counts.
                    self.seen.remove(&d.cookie);
                } else if let Some((age, lb)) = self.age(d, now, &|_, _| None)
                    && age >= ns(t.handshake)
                {
                    let held = format!(
                        "at every dump for {} (threshold {})",
                        span(age),
                        fmt_duration(t.handshake)
                    );
                    let f = queue_flag(d, now, (age, lb), &held);
                    found.insert((LeakKind::StuckHandshake, Subject::Listener(d.cookie)), f);
                }
            }
            TcpState::FinWait1 if d.inode == 0 => {}
            TcpState::FinWait2 if d.timewait || d.inode == 0 => {
                if let Some((age, lb)) = self.age(d, now, since)
                    && age >= ns(t.fin_wait2)
                {
                    let evidence = format!(
                        "in FIN_WAIT2 for {}{} (threshold {}), orphaned: we closed, the peer never sent its FIN",
                        if lb { "at least " } else { "" },
                        span(age),
                        fmt_duration(t.fin_wait2)
                    );
                    let f = socket_flag(
                        d,
                        LeakKind::OrphanedFinWait2,
                        None,
                        now,
                        (age, lb),
                        evidence,
                    );
                    found.insert(key(LeakKind::OrphanedFinWait2), f);
                }
            }
            // Held after `shutdown(SHUT_WR)`: no kernel timer ends it (the
            // FIN_WAIT2 timer is an orphan's), so a peer that vanished, or
            // never closes its side, leaves it to the process.
            TcpState::FinWait1 | TcpState::FinWait2 => {
                if let Some(info) = d.info {
                    if let Some(f) = self.half_open(d, &info, now) {
                        found.insert(key(LeakKind::HalfOpen), f);
                    }
                    if let Some(f) = self.idle(d, &info, now) {
                        found.insert(key(LeakKind::IdleNoKeepalive), f);
                    }
                }
            }
            _ => {}
        }
    }

    /// How long `d` has been in its state: the engine's time when exact,
    /// else the earliest of the engine's lower bound and our first sight.
    fn age<S>(&mut self, d: &SocketSnapshot, now: u64, since: &S) -> Option<(u64, bool)>
    where
        S: Fn(u64, TcpState) -> Option<(u64, bool)>,
    {
        let generation = self.generation;
        let full = self.seen.len() >= MAX_TRACKED;
        let first = match self.seen.entry(d.cookie) {
            Entry::Occupied(mut e) => {
                let s = e.get_mut();
                if s.state != d.state {
                    *s = Seen {
                        state: d.state,
                        since_ns: now,
                        generation,
                    };
                }
                s.generation = generation;
                Some(s.since_ns)
            }
            Entry::Vacant(e) if !full => {
                e.insert(Seen {
                    state: d.state,
                    since_ns: now,
                    generation,
                });
                Some(now)
            }
            Entry::Vacant(_) => {
                self.untracked += 1;
                None
            }
        };
        let known = since(d.cookie, d.state).filter(|&(s, _)| s <= now);
        match (known, first) {
            (Some((s, false)), _) => Some((now - s, false)),
            (Some((s, true)), f) => Some((now - f.map_or(s, |f| s.min(f)), true)),
            (None, Some(f)) => Some((now - f, true)),
            (None, None) => None,
        }
    }
}
