//! The rules that need more than an age: half-open stalls, idle sockets
//! without keepalive, per-port stuck handshakes.
use std::collections::hash_map::Entry;

use super::super::rules::{
    MS, PortAcc, Stall, ns, retransmit_words, rto_capped, secs, socket_flag, span, unacked_for,
};
use super::super::{Flag, LeakKind, Reason, fmt_duration};
use super::{Detector, MAX_TRACKED};
use crate::{
    snapshot::{SocketSnapshot, TcpInfo, TimerKind},
    tcp::TcpState,
};

impl Detector {
    /// A stall is timed from when it was first seen, and goes on for as
    /// long as no ACK arrives, whatever its evidence: keepalive probes
    /// unanswered can turn into retransmits when the application writes, with
    /// a moment between the two (data in flight, first RTO not yet fired)
    /// that shows neither. An ACK after the stall began ends it; while
    /// retransmitting, only one that acknowledges data does. A peer's
    /// segments that acknowledge nothing new (its FIN, retransmitted because
    /// our ACKs never reach it) are no progress.
    pub(super) fn half_open(
        &mut self,
        d: &SocketSnapshot,
        info: &TcpInfo,
        now: u64,
    ) -> Option<Flag> {
        let rto = info.retransmitting();
        let probes = d.timer_retrans.max(info.probes);
        let keepalive = d.timer == TimerKind::Keepalive && probes > 0;
        let no_ack = u64::from(info.last_ack_recv_ms) * MS;
        // A retransmit stall goes on until our data is acknowledged; any
        // other (keepalive probes, and one turning into retransmits) until
        // any ACK.
        let ongoing = self.stalls.get(&d.cookie).copied().filter(|s| {
            info.bytes_acked == s.bytes_acked
                && ((rto && s.reason == Reason::Retransmitting)
                    || now.saturating_sub(no_ack) <= s.since_ns)
        });
        let reason = if rto {
            Reason::Retransmitting
        } else if keepalive {
            Reason::KeepaliveUnanswered
        } else if let Some(s) = ongoing
            && (info.unacked > 0 || info.probes > 0)
        {
            // Still waiting on the peer, between one kind of evidence and the next.
            s.reason
        } else {
            return None;
        };
        let generation = self.generation;
        // When the data in flight was first sent, as tcp_info tells it now;
        // the earliest such word is kept, as a timeout at its cap tells less
        // and less of the stall (see `unacked_for`). An idle spell before
        // it (no ACK, as nothing was sent) is no part of it; the peer's
        // segments that acknowledge nothing new do not bound it.
        let since = ongoing.map_or(now, |s| s.since_ns);
        let waited = if now.saturating_sub(no_ack) <= since {
            // The last ACK came before the stall was first seen: the data
            // has waited no longer than since then.
            unacked_for(info).min(no_ack)
        } else {
            unacked_for(info)
        };
        // Told only while retransmitting: keepalive probes say nothing of it.
        let began = if reason == Reason::Retransmitting {
            now.saturating_sub(waited)
        } else {
            u64::MAX
        };
        let stall = match ongoing {
            Some(s) => Stall {
                reason,
                generation,
                began_ns: s.began_ns.min(began),
                ..s
            },
            None => Stall {
                reason,
                since_ns: now,
                began_ns: began,
                bytes_acked: info.bytes_acked,
                total_retrans: info.total_retrans,
                retransmits: info.retransmits,
                generation,
            },
        };
        let full = self.stalls.len() >= MAX_TRACKED;
        match self.stalls.entry(d.cookie) {
            Entry::Occupied(mut e) => *e.get_mut() = stall,
            Entry::Vacant(e) if !full => {
                e.insert(stall);
            }
            Entry::Vacant(_) => {
                self.untracked += 1;
                return None;
            }
        }
        let threshold = ns(self.thresholds.half_open);
        let stalled = now - stall.since_ns;
        // A retransmit stall is as old as the data waiting for its ACK: an
        // idle spell before it (no ACK, as nothing was sent) is not part of
        // it. Keepalive probes are sent after the idle time they measure.
        let age = match reason {
            Reason::Retransmitting => now.saturating_sub(stall.began_ns).max(stalled),
            _ => no_ack.max(stalled),
        };
        // Judged by the data's wait when tcp_info tells it (an agent that
        // starts beside a stall flags it at its first dump, as a snapshot
        // would); probes only by what the agent saw, as their silence
        // includes the idle time before the first.
        let judged = if reason == Reason::Retransmitting {
            age
        } else {
            stalled
        };
        if judged < threshold {
            return None;
        }
        // A timeout at its cap (TCP_RTO_MAX) no longer doubles: tcp_info
        // then tells less than the stall, unless the agent saw it all.
        let lower_bound = reason == Reason::Retransmitting && rto_capped(info) && age > stalled;
        let evidence = match reason {
            Reason::Retransmitting => {
                let sent = info.total_retrans.saturating_sub(stall.total_retrans);
                let fired = info.retransmits.saturating_sub(stall.retransmits);
                let silence = if no_ack < stalled {
                    // Segments came from the peer since the stall began,
                    // and acknowledged none of ours.
                    format!(
                        "no ACK of our data for {} (the peer's segments acknowledge nothing new, the last {} ago)",
                        span(age),
                        span(no_ack)
                    )
                } else if no_ack > age + (age / 10).max(1_000 * MS) {
                    // Idle before: the last ACK is older than the data.
                    format!(
                        "no ACK for {}, for the data sent {} ago",
                        span(no_ack),
                        span(age)
                    )
                } else {
                    format!("no ACK for {}", span(age))
                };
                // An agent that started beside an older stall counts only
                // what it watched.
                let watched = if age > stalled + 1_000 * MS {
                    format!("{sent} in the {} this agent has watched it", span(stalled))
                } else {
                    format!("{sent} while stalled")
                };
                format!(
                    "{silence} (threshold {}) {}; {} segments retransmitted in total, \
                     {watched}{}; the kernel gives up after net.ipv4.tcp_retries2 timeouts (15 by \
                     default, about 15 min) or the socket's TCP_USER_TIMEOUT",
                    fmt_duration(self.thresholds.half_open),
                    retransmit_words(info),
                    info.total_retrans,
                    // The timer fires whether or not a segment can leave.
                    if sent < u32::from(fired) {
                        " (fewer than the timer fired: the host may have no route to the peer)"
                    } else {
                        ""
                    }
                )
            }
            _ => format!(
                "{probes} keepalive probes unanswered; no ACK for {}, probing for {} (threshold {})",
                span(no_ack),
                span(stalled),
                fmt_duration(self.thresholds.half_open)
            ),
        };
        Some(socket_flag(
            d,
            LeakKind::HalfOpen,
            Some(reason),
            now,
            (age, lower_bound),
            evidence,
        ))
    }

    /// sock_diag reports one timer per socket, and a pending retransmit or
    /// zero-window probe timer hides the keepalive timer; either of them
    /// notices a dead peer anyway. So only a socket with no timer at all is
    /// at risk.
    pub(super) fn idle(&self, d: &SocketSnapshot, info: &TcpInfo, now: u64) -> Option<Flag> {
        let held = match d.state {
            TcpState::Established => false,
            TcpState::FinWait2 => true,
            _ => return None,
        };
        if d.timer != TimerKind::None {
            return None;
        }
        let idle = u64::from(info.last_data_recv_ms.min(info.last_data_sent_ms)) * MS;
        if idle < ns(self.thresholds.idle) {
            return None;
        }
        let mut evidence = format!(
            "{}no data received for {} nor sent for {} (threshold {}); no keepalive timer armed, \
             a dead peer would go unnoticed{} (SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL and \
             TCP_KEEPCNT notices one in minutes, the defaults in 2h11m; or an application \
             heartbeat with a read timeout)",
            if held {
                "in FIN_WAIT2 and held: the process shut its side down (shutdown(SHUT_WR)) and \
                 the peer has not closed its side; "
            } else {
                ""
            },
            span(u64::from(info.last_data_recv_ms) * MS),
            span(u64::from(info.last_data_sent_ms) * MS),
            fmt_duration(self.thresholds.idle),
            if held {
                ", and no timer ends FIN_WAIT2 while a process holds the socket"
            } else {
                ""
            }
        );
        // Idle because no process took it yet: its owners are then the
        // listener's (attribute_to_listeners), which should accept it.
        let not_accepted = d.awaits_accept();
        if not_accepted {
            evidence.push_str("; never accepted: it waits in the listener's accept queue");
        }
        Some(socket_flag(
            d,
            LeakKind::IdleNoKeepalive,
            not_accepted.then_some(Reason::NotAccepted),
            now,
            (idle, false),
            evidence,
        ))
    }

    pub(super) fn port_flag(
        &self,
        (netns, port): (u32, u16),
        acc: &PortAcc,
        now: u64,
    ) -> Option<Flag> {
        let local = acc.local?;
        // Every listener on the port (SO_REUSEPORT workers, IPv4 and
        // IPv6): which queue a request sits in, the dump does not say.
        let mut sibling_listeners: Vec<u64> = acc.listeners.iter().map(|&(_, i)| i).collect();
        sibling_listeners.sort_unstable();
        sibling_listeners.dedup();
        let inode = sibling_listeners.pop().unwrap_or(0);
        let (age, lb) = acc.oldest.unwrap_or((0, true));
        let evidence = format!(
            "{} handshakes stuck on port {port}: {} needed SYN-ACK retransmits (up to {}), oldest {}{} \
             (threshold {}, or 2 SYN-ACK retransmits); a SYN flood, a lost ACK or a full accept queue",
            acc.stuck,
            acc.retransmitted,
            acc.max_retrans,
            if lb { "at least " } else { "" },
            span(age),
            fmt_duration(self.thresholds.handshake)
        );
        Some(Flag {
            kind: LeakKind::StuckHandshake,
            reason: Some(Reason::SynRecv),
            cookie: None,
            local,
            remote: None,
            state: TcpState::NewSynRecv,
            inode,
            sibling_listeners,
            netns,
            raised_at_ns: now,
            raised_at: None,
            age_seconds: Some(secs(age)),
            age_is_lower_bound: lb,
            unread_bytes: 0,
            read_to_end: None,
            evidence,
            count: Some(acc.stuck),
            owners: Vec::new(),
            owner_unknown: false,
            owner_hint: None,
            cleared_at_ns: None,
            cleared_at: None,
            cleared_how: None,
            container: None,
            local_peer: None,
            ifindex: 0,
        })
    }
}
