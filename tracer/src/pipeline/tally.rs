//! What the pipeline says about namespaces after a dump or a survey: how
//! many are followed, refused, unnamed or over the cap, to the sink; and,
//! once each, the sentences about the ones that cannot be followed.
use std::{collections::HashMap, time::Duration};

use super::{
    Census, Dump, MAX_NETNS, Tracking,
    sink::{NetnsTally, Sink},
};
use crate::leaks::fmt_duration;

/// How long a namespace seen only in events stays counted without events.
const UNNAMED_TTL_NS: u64 = 300_000_000_000;

/// Namespaces seen in events that no discovery found yet (at most
/// [`MAX_NETNS`]), with when their events came.
pub(super) type EventNetns = HashMap<u32, EventSpan>;

/// The first and last event of a namespace (monotonic ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EventSpan {
    first_ns: u64,
    last_ns: u64,
}

/// Note an event of namespace `netns` at `ts_ns`.
pub(super) fn note_event_netns(seen: &mut EventNetns, netns: u32, ts_ns: u64) {
    if let Some(s) = seen.get_mut(&netns) {
        s.first_ns = s.first_ns.min(ts_ns);
        s.last_ns = s.last_ns.max(ts_ns);
    } else if seen.len() < MAX_NETNS {
        seen.insert(
            netns,
            EventSpan {
                first_ns: ts_ns,
                last_ns: ts_ns,
            },
        );
    }
}

/// The namespaces of `seen` that cannot be opened, sorted: those the dump
/// that started at `start_ns` did not find although they had events
/// before it (one made since is left for the next dump), and that had
/// events in the last 5 minutes. Forgets those found and those quiet for
/// longer.
fn unnamed(seen: &mut EventNetns, known: &[u32], start_ns: u64) -> Vec<u32> {
    let newest = seen.values().map(|s| s.last_ns).max().unwrap_or(0);
    seen.retain(|n, s| {
        known.binary_search(n).is_err() && s.last_ns.saturating_add(UNNAMED_TTL_NS) >= newest
    });
    let mut unnamed: Vec<u32> = seen
        .iter()
        .filter(|(_, s)| s.first_ns < start_ns)
        .map(|(&n, _)| n)
        .collect();
    unnamed.sort_unstable();
    unnamed
}

/// Of the `unnamed` namespaces, those with events after the dump that
/// missed them began: there while it looked, not gone before it could
/// (a short-lived namespace, a test's or a build's, is no reason to warn).
fn alive(unnamed: &[u32], seen: &EventNetns, start_ns: u64) -> Vec<u32> {
    unnamed
        .iter()
        .copied()
        .filter(|n| seen.get(n).is_some_and(|s| s.last_ns >= start_ns))
        .collect()
}

/// Which sentences about namespaces, and about events the kernel skipped,
/// were said.
#[derive(Debug, Default)]
pub(super) struct Warned {
    refused: bool,
    unnamed: bool,
    over_cap: bool,
    shared_table: bool,
    /// The `recursion_misses` count last said (0: never).
    skipped: u64,
}

/// The sentence for `misses` events the kernel skipped so far, when it is
/// worth one after `said` were last said: the first, then each time the
/// count has grown tenfold, so a steady trickle is named a few times, not
/// every second.
fn skipped_sentence(misses: u64, said: u64) -> Option<String> {
    (misses > 0 && misses >= said.saturating_mul(10)).then(|| {
        format!(
            "the kernel has skipped {misses} events since start: a state change that interrupted \
             another on the same CPU (recursion_misses); the sock_diag dumps repair the state they \
             would have changed, and tracer_events_lost_total counts them (said again at ten times \
             as many)"
        )
    })
}

/// Why dumps come at least twice as far apart as configured, when
/// namespaces without a TCP table of their own are part of the reason;
/// `None` otherwise (a little stretch is not worth a line).
fn shared_table_hint(
    c: &Census,
    full: bool,
    interval: Duration,
    configured: Duration,
) -> Option<String> {
    if interval < configured.saturating_mul(2) || c.sharing_host_table == 0 {
        return None;
    }
    Some(format!(
        "{} dumps run every {} instead of every {} to keep within --reconcile-budget; \
         {} of the {} network namespaces followed share the host's TCP hash table, and a \
         dump of each walks every TCP socket on the host; setting \
         net.ipv4.tcp_child_ehash_entries (Linux 6.1+) before containers start gives each \
         new namespace a table of its own (see docs/agent.md)",
        if full { "full" } else { "live" },
        fmt_duration(interval),
        fmt_duration(configured),
        c.sharing_host_table,
        c.tracked,
    ))
}

/// Up to 8 inodes, and how many more.
fn some(inodes: &[u32]) -> String {
    let mut s: Vec<String> = inodes.iter().take(8).map(u32::to_string).collect();
    if inodes.len() > 8 {
        s.push(format!("and {} more", inodes.len() - 8));
    }
    s.join(", ")
}

impl Warned {
    /// Say, when worth it ([`skipped_sentence`]), how many events the
    /// kernel skipped.
    pub(super) fn skipped(&mut self, misses: u64) {
        if let Some(s) = skipped_sentence(misses, self.skipped) {
            self.skipped = misses;
            tracing::warn!(event = "events_skipped", skipped = misses, "{s}");
        }
    }

    /// Say, once, that namespaces sharing the host's TCP table stretch the
    /// dumps (a dump of `full` kind now `interval` apart, `configured`
    /// asked for).
    pub(super) fn stretched(
        &mut self,
        c: &Census,
        full: bool,
        interval: Duration,
        configured: Duration,
    ) {
        if self.shared_table {
            return;
        }
        if let Some(s) = shared_table_hint(c, full, interval, configured) {
            self.shared_table = true;
            tracing::info!(event = "dumps_stretched", "{s}");
        }
    }

    /// Say, once per reason, which namespaces cannot be followed and why.
    fn say(&mut self, c: &Census, unnamed: &[u32]) {
        const LOSS: &str = "their sockets are known only from kernel events, \
            without adoption, reconciliation, TIME_WAIT confirmation or leak detection";
        if !self.refused && !c.refused.is_empty() {
            self.refused = true;
            tracing::warn!(
                event = "netns_refused",
                netns_count = c.refused.len(),
                "{} network namespace(s) cannot be followed ({}): entering another \
                 namespace needs CAP_SYS_ADMIN; {LOSS}",
                c.refused.len(),
                some(&c.refused)
            );
        }
        if !self.unnamed && !unnamed.is_empty() {
            self.unnamed = true;
            tracing::warn!(
                event = "netns_unnamed",
                netns_count = unnamed.len(),
                "{} network namespace(s) seen in events cannot be opened ({}): no \
                 process or /run/netns mount that tracer may read holds them (reading other \
                 users' /proc/<pid>/ns/net needs CAP_SYS_PTRACE, and tracer must share the \
                 host's pid namespace); {LOSS}",
                unnamed.len(),
                some(unnamed)
            );
        }
        if !self.over_cap && c.over_cap > 0 {
            self.over_cap = true;
            tracing::warn!(
                event = "netns_over_cap",
                netns_count = c.over_cap,
                "{} network namespace(s) beyond the cap of {MAX_NETNS} are not \
                 followed; {LOSS}",
                c.over_cap
            );
        }
    }
}

/// After a dump: which namespaces are followed, which cannot be, and tell
/// the sink. Namespaces seen in events that no discovery found count as
/// unnamed ([`unnamed`]).
pub(super) fn tally_netns<S: Sink>(
    t: &mut Tracking,
    event_netns: &mut EventNetns,
    dump: &Dump,
    ended: u64,
    sink: &mut S,
) {
    let c = &dump.census;
    let unnamed = unnamed(event_netns, &c.known, dump.start_ns);
    let living = alive(&unnamed, event_netns, dump.start_ns);
    t.warned.say(c, &living);
    sink.netns(&NetnsTally {
        tracked: c.tracked,
        refused: c.refused.len(),
        unnamed: unnamed.len(),
        unnamed_alive: living.len(),
        over_cap: c.over_cap,
        sharing_host_table: c.sharing_host_table,
        ended,
        containers: c.resolver,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(tracked: usize, sharing: usize) -> Census {
        Census {
            tracked,
            sharing_host_table: sharing,
            ..Census::default()
        }
    }

    #[test]
    fn skipped_events_are_said_first_and_then_at_each_tenfold() {
        let mut said = 0;
        let mut lines = Vec::new();
        for misses in [0, 3, 5, 29, 30, 200, 299, 300, 301] {
            if let Some(s) = skipped_sentence(misses, said) {
                said = misses;
                lines.push((misses, s));
            }
        }
        let counts: Vec<u64> = lines.iter().map(|(m, _)| *m).collect();
        assert_eq!(counts, [3, 30, 300]);
        assert!(
            lines[0]
                .1
                .starts_with("the kernel has skipped 3 events since start"),
            "{}",
            lines[0].1
        );
        assert!(lines[0].1.contains("tracer_events_lost_total"));
    }

    #[test]
    fn namespaces_sharing_the_host_table_are_named_when_the_budget_stretches_dumps() {
        let s = Duration::from_secs;
        let hint = shared_table_hint(&census(38, 37), true, s(23), s(10)).expect("a hint");
        assert!(
            hint.starts_with("full dumps run every 23s instead of every 10s"),
            "{hint}"
        );
        assert!(hint.contains("37 of the 38 network namespaces"), "{hint}");
        assert!(hint.contains("net.ipv4.tcp_child_ehash_entries"), "{hint}");
        assert_eq!(
            shared_table_hint(&census(38, 37), false, s(1), s(1)),
            None,
            "not stretched"
        );
        assert_eq!(
            shared_table_hint(&census(38, 37), false, Duration::from_millis(1500), s(1)),
            None,
            "stretched by less than twice"
        );
        assert_eq!(
            shared_table_hint(&census(1, 0), false, s(9), s(1)),
            None,
            "no namespace shares"
        );
    }

    #[test]
    fn a_namespace_is_unnamed_only_when_a_dump_after_its_first_event_missed_it() {
        let s = |secs: u64| secs * 1_000_000_000;
        let mut seen = EventNetns::new();
        for (netns, ts) in [(7, s(10)), (7, s(12)), (8, s(11)), (9, s(13)), (7, s(9))] {
            note_event_netns(&mut seen, netns, ts);
        }
        assert_eq!(
            seen[&7],
            EventSpan {
                first_ns: s(9),
                last_ns: s(12)
            }
        );
        // A dump that started at 12 s found 8. 9 began after its start:
        // made since, perhaps; the next dump judges it.
        assert_eq!(unnamed(&mut seen, &[8], s(12)), [7]);
        assert!(!seen.contains_key(&8), "found: forgotten");
        assert_eq!(unnamed(&mut seen, &[], s(14)), [7, 9]);
        // Quiet for more than 5 minutes while another namespace is not.
        note_event_netns(&mut seen, 9, s(400));
        assert_eq!(unnamed(&mut seen, &[], s(401)), [9]);
        // Warned of only while it has events after the dump began: one
        // whose last came before may have been gone when the dump looked.
        assert_eq!(alive(&[9], &seen, s(401)), [] as [u32; 0]);
        assert_eq!(alive(&[9], &seen, s(400)), [9]);
    }

    #[test]
    fn the_event_namespaces_stay_within_the_cap() {
        let mut seen = EventNetns::new();
        for n in 0..MAX_NETNS as u32 + 10 {
            note_event_netns(&mut seen, n, 1);
        }
        assert_eq!(seen.len(), MAX_NETNS);
        note_event_netns(&mut seen, 0, 5);
        assert_eq!(seen[&0].last_ns, 5, "a known one is still updated");
    }

    #[test]
    fn the_hint_is_said_once() {
        let s = Duration::from_secs;
        let mut w = Warned::default();
        w.stretched(&census(3, 2), false, s(1), s(1));
        assert!(!w.shared_table, "nothing to say yet");
        w.stretched(&census(3, 2), false, s(5), s(1));
        assert!(w.shared_table);
    }
}
