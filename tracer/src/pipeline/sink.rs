//! What a command plugs into the pipeline: a [`Sink`] that hears of every
//! event, adoption, reconcile and dump, and the state it keeps beside the
//! engine under the same lock ([`super::Core::derived`]).
use std::{sync::Arc, time::Duration};

use super::Core;
use crate::{
    container::{ContainerMap, ResolverStats},
    event::SockEvent,
    leaks::Change,
    snapshot::SocketSnapshot,
};

/// Whether the pipeline goes on after a turn of its loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Stop the loop (e.g. the reader of the stream went away).
    Stop,
}

/// One dump done, successful or not, and the schedule it left.
#[derive(Debug)]
pub struct Dumped<'a> {
    /// TIME_WAIT sockets included.
    pub full: bool,
    /// CPU the budget charges for it: the kernel's walk plus the engine's
    /// reconcile (the walk alone when the dump failed or only adopted).
    pub cpu_ns: u64,
    /// The gap to the next dump of this kind now in force.
    pub interval: Duration,
    /// Sockets a live dump looked up one by one instead of walking the
    /// kernel's tables (0 for a walk).
    pub looked_up: usize,
    /// Why the dump failed, if it did (the next one comes at its interval).
    pub error: Option<&'a anyhow::Error>,
}

/// Counts the pipeline refreshes every tick and after every reconcile dump.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tallies {
    /// Events the kernel programs lost so far.
    pub lost: u64,
    /// Records read so far that could not be decoded.
    pub undecodable: u64,
}

/// The network namespaces after a dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsTally {
    /// Namespaces followed (each with its own sock_diag sockets).
    pub tracked: usize,
    /// Namespaces that could not be entered (no `CAP_SYS_ADMIN`).
    pub refused: usize,
    /// Namespaces seen only in events: no process or mount tracer may
    /// read names them (no `CAP_SYS_PTRACE`, or another pid namespace).
    pub unnamed: usize,
    /// Of those, the ones with events since the dump began: alive still,
    /// not a build's namespace that lived a moment.
    pub unnamed_alive: usize,
    /// Namespaces found beyond the cap.
    pub over_cap: usize,
    /// Namespaces followed that share the host's TCP hash table (a dump of
    /// each walks every TCP socket of the host).
    pub sharing_host_table: usize,
    /// Sockets ended because their namespace vanished, in this dump.
    pub ended: u64,
    /// Namespaces attributed to containers, and the resolver's cache.
    pub containers: ResolverStats,
}

impl NetnsTally {
    /// Namespaces not followed, and why, in one sentence for a reader of
    /// a report ("2 network namespace(s) are not followed (...): leaks
    /// there are not in this report"); `None` when every one is.
    pub fn not_followed(&self) -> Option<(usize, String)> {
        let why: Vec<String> = [
            (self.refused, "cannot be entered without CAP_SYS_ADMIN"),
            (
                self.unnamed_alive,
                "seen only in events, held by no process tracer may read (CAP_SYS_PTRACE)",
            ),
            (self.over_cap, "beyond the cap on namespaces"),
        ]
        .into_iter()
        .filter(|&(n, _)| n > 0)
        .map(|(n, why)| format!("{n} {why}"))
        .collect();
        let n = self.refused + self.unnamed_alive + self.over_cap;
        (n > 0).then(|| {
            (
                n,
                format!(
                    "{n} network namespace(s) are not followed ({}): leaks there are not in this \
                     report (the agent's log names them)",
                    why.join("; ")
                ),
            )
        })
    }
}

/// A command's outputs. Every method has a default that does nothing.
/// Methods given a [`Core`] are called with its lock held: be brief.
#[expect(unused_variables, reason = "default methods ignore their arguments")]
pub trait Sink {
    /// What the command keeps beside the engine, under the same lock; it
    /// observes every outcome of the engine (`()` when nothing does).
    type Derived: crate::engine::Observer;

    /// Every event read, whatever its namespace; `in_scope`: the engine
    /// followed it (it has already applied it).
    fn event(&mut self, ev: &SockEvent, in_scope: bool) {}

    /// A batch of `read` records was handed out; `core` is the core the
    /// batch changed, when it changed it.
    fn batch(&mut self, read: usize, core: Option<&Core<Self::Derived>>) {}

    /// The engine ended what was due at the current time, with no dump.
    fn advanced(&mut self, core: &Core<Self::Derived>) {}

    /// The engine adopted or reconciled `dump` (taken at `start_ns`) and
    /// the detectors raised or cleared `changes`.
    fn reconciled(
        &mut self,
        core: &mut Core<Self::Derived>,
        dump: &[SocketSnapshot],
        changes: &[Change],
        start_ns: u64,
    ) {
    }

    /// Each namespace's ephemeral port settings, read with a dump that
    /// succeeded, before its reconcile.
    fn port_settings(&mut self, settings: &[(u32, crate::forecast::PortSettings)]) {}

    /// A dump ended (adoption included), after any reconcile it brought.
    fn dumped(&mut self, dump: &Dumped<'_>) {}

    /// The counts at each tick, and after each reconcile dump (not after
    /// adoption).
    fn tallied(&mut self, tallies: &Tallies) {}

    /// The namespaces after each dump (adoption included).
    fn netns(&mut self, tally: &NetnsTally) {}

    /// The containers of the namespaces changed (found in a discovery,
    /// before the dump's reconcile); the same map is in [`Core::containers`].
    fn containers(&mut self, map: &Arc<ContainerMap>) {}

    /// One turn of the loop ended; the pipeline stops on [`Flow::Stop`] or
    /// an error.
    fn turn(&mut self) -> anyhow::Result<Flow> {
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::NetnsTally;

    #[test]
    fn namespaces_not_followed_are_one_sentence_for_the_report() {
        assert_eq!(NetnsTally::default().not_followed(), None);
        // Four seen in events, all gone since: a build's, not a gap.
        let t = NetnsTally {
            refused: 2,
            unnamed: 4,
            over_cap: 1,
            ..NetnsTally::default()
        };
        assert_eq!(
            t.not_followed(),
            Some((
                3,
                "3 network namespace(s) are not followed (2 cannot be entered without \
                 CAP_SYS_ADMIN; 1 beyond the cap on namespaces): leaks there are not in this \
                 report (the agent's log names them)"
                    .to_owned()
            ))
        );
    }
}
