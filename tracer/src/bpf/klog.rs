//! The kernel programs' own diagnostics, forwarded to the agent's log.
//!
//! The programs report why an event failed (a failed read, a full ring
//! buffer, an unexpected address family) through aya-log, at most once a
//! second per CPU; the per-CPU counters say how often. [`KernelLog`]
//! receives those records and logs each as a `tracing` event with its
//! level, target `kernel`, the tracepoint it came from, and the message.
//! The same message is logged at most once per [`REPEAT_EVERY`], however
//! many CPUs send it, with how many times it came since it was last logged.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use aya_log::EbpfLogger;
use log::{Level, LevelFilter, Log, Metadata, Record};
use tracer_common::names;

/// The shortest gap between two log lines of the same message.
pub const REPEAT_EVERY: Duration = Duration::from_secs(10);

/// Messages remembered; more are few (one per hook and cause), so the
/// memory is cleared past this rather than bounded more cleverly.
const REMEMBERED: usize = 64;

/// Where aya-log's records go: the log ([`crate::logging`]).
pub struct KernelLog {
    max: LevelFilter,
    /// Each message: when it was last logged, and how many times it came
    /// since without being logged.
    said: Mutex<HashMap<String, (Instant, u64)>>,
}

impl KernelLog {
    /// Warnings and errors, and more when the log's level asks for info,
    /// debug or trace output.
    pub fn from_log_level() -> KernelLog {
        let max = match tracing::level_filters::LevelFilter::current().into_level() {
            Some(tracing::Level::TRACE | tracing::Level::DEBUG | tracing::Level::INFO) => {
                LevelFilter::Trace
            }
            Some(_) => LevelFilter::Warn,
            None => LevelFilter::Off,
        };
        KernelLog::new(max)
    }

    fn new(max: LevelFilter) -> KernelLog {
        KernelLog {
            max,
            said: Mutex::default(),
        }
    }

    /// Whether `msg` is due a log line at `now`, and how many times it
    /// came unlogged before this one.
    fn due(&self, msg: &str, now: Instant) -> Option<u64> {
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, skipped)) = said.get_mut(msg) {
            if now.duration_since(*at) < REPEAT_EVERY {
                *skipped += 1;
                return None;
            }
            let before = std::mem::take(skipped);
            *at = now;
            return Some(before);
        }
        if said.len() >= REMEMBERED {
            said.clear();
        }
        said.insert(msg.to_owned(), (now, 0));
        Some(0)
    }

    /// The tracepoint and message of a record. The programs name their
    /// hook by number (`hook 3: ...`); this names its tracepoint.
    pub fn split(message: &std::fmt::Arguments<'_>) -> (&'static str, String) {
        let message = message.to_string();
        let named = message
            .strip_prefix("hook ")
            .and_then(|rest| rest.split_once(": "))
            .and_then(|(n, rest)| {
                let (_, hook) = names::HOOKS.get(n.parse::<usize>().ok()?)?;
                Some((*hook, rest.to_owned()))
            });
        named.unwrap_or(("", message))
    }
}

impl Log for KernelLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.max
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let (hook, msg) = KernelLog::split(record.args());
        let mut msg = if hook.is_empty() {
            msg
        } else {
            format!("{hook}: {msg}")
        };
        let Some(skipped) = self.due(&msg, Instant::now()) else {
            return;
        };
        if skipped > 0 {
            msg.push_str(&format!(
                " ({skipped} more since it was last said, {} s or more ago)",
                REPEAT_EVERY.as_secs()
            ));
        }
        match record.level() {
            Level::Error => tracing::error!(target: "kernel", hook, "kernel: {msg}"),
            Level::Warn => tracing::warn!(target: "kernel", hook, "kernel: {msg}"),
            Level::Info => tracing::info!(target: "kernel", hook, "kernel: {msg}"),
            Level::Debug => tracing::debug!(target: "kernel", hook, "kernel: {msg}"),
            Level::Trace => tracing::trace!(target: "kernel", hook, "kernel: {msg}"),
        }
    }

    fn flush(&self) {}
}

/// The reader of the programs' log ring buffer.
pub type KernelLogger = EbpfLogger<KernelLog>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_its_tracepoint_and_levels_filter() {
        let (hook, msg) = KernelLog::split(&format_args!("hook 3: ring full"));
        assert_eq!((hook, msg.as_str()), ("tcp/tcp_send_reset", "ring full"));
        let (hook, msg) = KernelLog::split(&format_args!("hook 9: odd"));
        assert_eq!((hook, msg.as_str()), ("", "hook 9: odd"));
        let quiet = KernelLog::new(LevelFilter::Warn);
        let debug = Metadata::builder().level(Level::Debug).build();
        let error = Metadata::builder().level(Level::Error).build();
        assert!(!quiet.enabled(&debug));
        assert!(quiet.enabled(&error));
    }

    #[test]
    fn the_same_message_is_said_once_per_window_with_how_often_it_came() {
        let log = KernelLog::new(LevelFilter::Warn);
        let t0 = Instant::now();
        assert_eq!(log.due("ring full", t0), Some(0));
        // Every CPU sends it once a second: held back in the window.
        for s in 1..10 {
            assert_eq!(log.due("ring full", t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(log.due("read failed", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(log.due("ring full", t0 + REPEAT_EVERY), Some(9));
        assert_eq!(log.due("ring full", t0 + REPEAT_EVERY), None);
    }
}
