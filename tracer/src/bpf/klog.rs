//! The kernel programs' own diagnostics, forwarded to the agent's log.
//!
//! The programs report why an event failed (a failed read, a full ring
//! buffer, an unexpected address family) through aya-log, at most once a
//! second per CPU; the per-CPU counters say how often. [`KernelLog`]
//! receives those records and logs each as a `tracing` event with its
//! level, target `kernel`, the tracepoint it came from, and the message.
use aya_log::EbpfLogger;
use log::{Level, LevelFilter, Log, Metadata, Record};
use tracer_common::names;

/// Where aya-log's records go: the log ([`crate::logging`]).
pub struct KernelLog {
    max: LevelFilter,
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
        KernelLog { max }
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
        let msg = if hook.is_empty() {
            msg
        } else {
            format!("{hook}: {msg}")
        };
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
        let quiet = KernelLog {
            max: LevelFilter::Warn,
        };
        let debug = Metadata::builder().level(Level::Debug).build();
        let error = Metadata::builder().level(Level::Error).build();
        assert!(!quiet.enabled(&debug));
        assert!(quiet.enabled(&error));
    }
}
