//! The log: what every command says on stderr while it runs, through the
//! `tracing` ecosystem.
//!
//! Levels come from `--log-level` (a level, or directives such as
//! `info,tracer::pipeline=debug`), else `RUST_LOG`, else `info`. Lines are
//! text (a timestamp in UTC, the level, the message and its fields) or,
//! with `--log-format json`, one JSON object each. The `log` records of
//! aya and of the kernel programs' diagnostics ([`crate::bpf`]) come
//! through the same subscriber. What a command prints as its result (the
//! event stream, a report, the last line of a failure: `tracer: error:
//! ...`) is not a log line and does not change with these flags.
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The log's line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `2026-11-30T05:30:00.123456Z  INFO agent running: ...`
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `message`
    /// and the event's fields.
    Json,
}

/// The log flags, shared by every command.
#[derive(Clone, Debug, Default, Args)]
pub struct LogFlags {
    /// Log level: error, warn, info, debug or trace, or directives such as
    /// "info,tracer::pipeline=debug" [default: $RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL", global = true)]
    pub log_level: Option<String>,
    /// Log line format.
    #[arg(long, value_name = "FORMAT", global = true, default_value = "text")]
    pub log_format: LogFormat,
}

/// The level filter `flags` ask for, or one sentence saying what is wrong.
pub fn filter(flags: &LogFlags) -> anyhow::Result<EnvFilter> {
    let (text, from) = match &flags.log_level {
        Some(l) => (l.clone(), "--log-level"),
        None => match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => (v, "RUST_LOG"),
            _ => ("info".to_owned(), "the default"),
        },
    };
    EnvFilter::builder().parse(&text).map_err(|e| {
        anyhow::anyhow!(
            "{from}: {text:?} is not a log level ({e}); give error, warn, info, debug or trace, \
             or directives such as info,tracer::pipeline=debug"
        )
    })
}

/// Install the log for this process: stderr, in `flags`' format and level,
/// with `log` records (aya's) bridged in.
pub fn init(flags: &LogFlags) -> anyhow::Result<()> {
    let filter = filter(flags)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match flags.log_format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("starting the log: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_parse_and_nonsense_is_one_sentence() {
        for ok in ["info", "debug", "warn,tracer::pipeline=trace", "error"] {
            let flags = LogFlags {
                log_level: Some(ok.into()),
                ..LogFlags::default()
            };
            assert!(filter(&flags).is_ok(), "{ok}");
        }
        let flags = LogFlags {
            log_level: Some("loud=[".into()),
            ..LogFlags::default()
        };
        let e = filter(&flags).expect_err("refused").to_string();
        assert!(
            e.starts_with("--log-level: \"loud=[\" is not a log level"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
