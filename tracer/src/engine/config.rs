//! The engine's settings and its self-monitoring counters.
use super::{NS_PER_SEC, TimeWaitClock};

/// Engine settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most records held at once (at least 1). Default 1,000,000.
    pub max_sockets: usize,
    /// How long a finished record stays readable after it closed (and any
    /// TIME_WAIT ended). Default 5 s.
    pub retention_ns: u64,
    /// Reconcile grace: records that changed less than this before the dump
    /// started are not judged. Default 200 ms.
    pub reconcile_slack_ns: u64,
    /// A FIN_WAIT2 or CLOSE_WAIT stay longer than this marks the connection
    /// `half_closed`. Default 1 s.
    pub half_closed_threshold_ns: u64,
    /// The kernel's timer wheel, to end TIME_WAIT stays when it does;
    /// `None`: after exactly 60 s. Default `None`.
    pub time_wait_clock: Option<TimeWaitClock>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_sockets: 1_000_000,
            retention_ns: 5 * NS_PER_SEC,
            reconcile_slack_ns: 200_000_000,
            half_closed_threshold_ns: NS_PER_SEC,
            time_wait_clock: None,
        }
    }
}

/// Engine counters, for self-monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events passed to `apply`.
    pub events: u64,
    /// Exact duplicates ignored.
    pub duplicates: u64,
    /// Events older than the record's current state (clamped or stale).
    pub out_of_order: u64,
    /// State events whose `from` was not the tracked state.
    pub path_gap: u64,
    /// Records evicted at the cap.
    pub evictions: u64,
    /// Records held now (live and finished).
    pub tracked: usize,
    /// Live records now (the sum of `counts_by_state`).
    pub live: u64,
    /// Retransmit/reset events for cookies not tracked (still reported).
    pub untracked_events: u64,
    /// Dump sockets not adopted because the store was full of live records.
    pub not_adopted: u64,
    /// New sockets whose events were not followed because the store was
    /// full of live records not in TIME_WAIT (see `Config::max_sockets`).
    pub refused: u64,
    /// Finished records dropped after their retention.
    pub expired: u64,
    /// Closes that left no timewait socket because their namespace held
    /// `tcp_max_tw_buckets` of them already (as the kernel decides).
    pub time_wait_overflows: u64,
    /// TIME_WAIT stays ended by a new connection on their 4-tuple.
    pub time_wait_reused: u64,
    /// Orphaned FIN_WAIT2 (and unconfirmed TIME_WAIT) stays ended by a
    /// reset their peer's socket on this host sent.
    pub time_wait_reset_by_peer: u64,
    /// SYN-ACKs retransmitted: handshakes in trouble, whose request
    /// sockets only a walk of the kernel's tables lists.
    pub synack_retransmits: u64,
}
