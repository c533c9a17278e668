//! A verdict in words: the outcome for a new listener, and the sockets
//! in its way counted by reason.
use serde::Serialize;

use super::bind::{Outcome, Reason};

/// Whether a new listener could bind, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// `free`, `busy` or `unknown`.
    pub outcome: &'static str,
    /// Sockets in the way (for `unknown`: those whose `SO_REUSEADDR` decides).
    pub blockers: usize,
    /// The reason in words.
    pub why: String,
    /// A test `bind()` gave the answer (see docs/port.md).
    pub test_bind: bool,
}

/// `k` sockets in the way for reason `r`, in words.
fn phrase(r: Reason, k: usize) -> String {
    let s = if k == 1 { "" } else { "s" };
    match r {
        Reason::Listening => format!(
            "{k} listener{s} on an overlapping address (a listener keeps out any new one, SO_REUSEADDR or not)"
        ),
        Reason::Bound => format!(
            "{k} socket{s} bound to the port on an overlapping address (without SO_REUSEADDR, any of them blocks, TIME_WAIT included)"
        ),
        Reason::NoReuseAddr => format!(
            "{k} socket{s} that did not set SO_REUSEADDR (Linux shares a port only when both sockets set it)"
        ),
        Reason::ReuseAddrUnknown => format!("{k} more unless they set SO_REUSEADDR"),
    }
}

/// A verdict in words.
pub(super) fn say(outcome: Outcome, blockers: &[(usize, Reason)], test_bind: bool) -> Verdict {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let unknown = blockers
        .iter()
        .filter(|&&(_, r)| r == Reason::ReuseAddrUnknown)
        .count();
    let sure = blockers.len() - unknown;
    let count = |r: Reason| blockers.iter().filter(|&&(_, b)| b == r).count();
    let parts: Vec<String> = [Reason::Listening, Reason::Bound, Reason::NoReuseAddr]
        .into_iter()
        .filter(|&r| count(r) > 0)
        .map(|r| phrase(r, count(r)))
        .collect();
    let (n, why) = match (outcome, parts.is_empty()) {
        (Outcome::Free, _) if test_bind => (
            0,
            "a test bind() with SO_REUSEADDR succeeded: the sockets on the port set SO_REUSEADDR too"
                .to_owned(),
        ),
        (Outcome::Free, _) => (
            0,
            "nothing on the port is in the way at this address".to_owned(),
        ),
        (Outcome::Busy, _) if test_bind => (
            unknown,
            format!(
                "a test bind() with SO_REUSEADDR failed (EADDRINUSE): of the {unknown} socket{} below whose SO_REUSEADDR is unknown, some did not set it, and Linux needs it on both",
                plural(unknown)
            ),
        ),
        (Outcome::Busy, false) => {
            let mut why = parts.join("; ");
            if unknown > 0 {
                why.push_str("; ");
                why.push_str(&phrase(Reason::ReuseAddrUnknown, unknown));
            }
            (sure, why)
        }
        (Outcome::Busy | Outcome::Unknown, _) => (
            unknown,
            format!(
                "free if the {unknown} socket{} below set SO_REUSEADDR too: Linux needs it on both, and it is unknown for them (TIME_WAIT and orphaned sockets have no descriptor to read it from; no test bind() was possible)",
                plural(unknown)
            ),
        ),
    };
    Verdict {
        outcome: outcome.name(),
        blockers: n,
        why,
        test_bind,
    }
}
