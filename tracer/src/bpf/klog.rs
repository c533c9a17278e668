//! The kernel programs' own diagnostics, forwarded to the agent's log.
//!
//! The programs report why an event failed (a failed read, a full ring
//! buffer, an unexpected address family) through aya-log, at most once a
//! second per CPU; the per-CPU counters say how often. [`KernelLog`]
//! receives those records, with their level, and writes each as one line
//! on stderr, the agent's log.
use aya_log::EbpfLogger;
use log::{Level, LevelFilter, Log, Metadata, Record};
use tracer_common::names;

/// Where aya-log's records go: one line each on stderr.
pub struct KernelLog {
    max: LevelFilter,
}

impl KernelLog {
    /// Warnings and errors by default; everything when `RUST_LOG` asks for
    /// info, debug or trace output.
    pub fn from_env() -> KernelLog {
        KernelLog {
            max: if rust_log_asks_for(Level::Info) {
                LevelFilter::Trace
            } else {
                LevelFilter::Warn
            },
        }
    }

    /// The line a record becomes. The programs name their hook by number
    /// (`hook 3: ...`); the line names its tracepoint.
    pub fn line(level: Level, message: &std::fmt::Arguments<'_>) -> String {
        let message = message.to_string();
        let named = message
            .strip_prefix("hook ")
            .and_then(|rest| rest.split_once(": "))
            .and_then(|(n, rest)| {
                let (_, hook) = names::HOOKS.get(n.parse::<usize>().ok()?)?;
                Some(format!("{hook}: {rest}"))
            })
            .unwrap_or(message);
        format!(
            "tracer: kernel {}: {named}",
            level.as_str().to_ascii_lowercase()
        )
    }
}

impl Log for KernelLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.max
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("{}", KernelLog::line(record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}

/// Whether `RUST_LOG` names `level` or a more verbose one (the one place
/// the agent reads it, until it has a logging framework).
pub fn rust_log_asks_for(level: Level) -> bool {
    let Ok(v) = std::env::var("RUST_LOG") else {
        return false;
    };
    [Level::Info, Level::Debug, Level::Trace]
        .into_iter()
        .filter(|l| *l >= level)
        .any(|l| v.contains(&l.as_str().to_ascii_lowercase()))
}

/// The reader of the programs' log ring buffer.
pub type KernelLogger = EbpfLogger<KernelLog>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_line_with_its_level() {
        let l = KernelLog::line(Level::Warn, &format_args!("hook 3: ring full"));
        assert_eq!(l, "tracer: kernel warn: tcp/tcp_send_reset: ring full");
        let l = KernelLog::line(Level::Error, &format_args!("hook 9: odd"));
        assert_eq!(l, "tracer: kernel error: hook 9: odd");
        let quiet = KernelLog {
            max: LevelFilter::Warn,
        };
        let debug = Metadata::builder().level(Level::Debug).build();
        let error = Metadata::builder().level(Level::Error).build();
        assert!(!quiet.enabled(&debug));
        assert!(quiet.enabled(&error));
    }
}
