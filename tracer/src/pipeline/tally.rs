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

/// Which sentences about namespaces were said.
#[derive(Debug, Default)]
pub(super) struct Warned {
    refused: bool,
    unnamed: bool,
    over_cap: bool,
    shared_table: bool,
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
            tracing::info!("{s}");
        }
    }

    /// Say, once per reason, which namespaces cannot be followed and why.
    fn say(&mut self, c: &Census, unnamed: &[u32]) {
        const LOSS: &str = "their sockets are known only from kernel events, \
            without adoption, reconciliation, TIME_WAIT confirmation or leak detection";
        if !self.refused && !c.refused.is_empty() {
            self.refused = true;
            tracing::warn!(
                "{} network namespace(s) cannot be followed ({}): entering another \
                 namespace needs CAP_SYS_ADMIN; {LOSS}",
                c.refused.len(),
                some(&c.refused)
            );
        }
        if !self.unnamed && !unnamed.is_empty() {
            self.unnamed = true;
            tracing::warn!(
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
                "{} network namespace(s) beyond the cap of {MAX_NETNS} are not \
                 followed; {LOSS}",
                c.over_cap
            );
        }
    }
}

/// After a dump: which namespaces are followed, which cannot be, and tell
/// the sink. Namespaces seen in events that no discovery found (and that
/// had events in the last 5 minutes) count as unnamed.
pub(super) fn tally_netns<S: Sink>(
    t: &mut Tracking,
    event_netns: &mut HashMap<u32, u64>,
    dump: &Dump,
    ended: u64,
    sink: &mut S,
) {
    let c = &dump.census;
    let newest = event_netns.values().copied().max().unwrap_or(0);
    event_netns.retain(|n, ts| {
        c.known.binary_search(n).is_err() && ts.saturating_add(UNNAMED_TTL_NS) >= newest
    });
    let mut unnamed: Vec<u32> = event_netns.keys().copied().collect();
    unnamed.sort_unstable();
    t.warned.say(c, &unnamed);
    sink.netns(&NetnsTally {
        tracked: c.tracked,
        refused: c.refused.len(),
        unnamed: unnamed.len(),
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
    fn the_hint_is_said_once() {
        let s = Duration::from_secs;
        let mut w = Warned::default();
        w.stretched(&census(3, 2), false, s(1), s(1));
        assert!(!w.shared_table, "nothing to say yet");
        w.stretched(&census(3, 2), false, s(5), s(1));
        assert!(w.shared_table);
    }
}
