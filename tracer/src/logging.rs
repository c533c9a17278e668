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
    #[arg(long, value_name = "LEVEL", global = true, help_heading = "Logging")]
    pub log_level: Option<String>,
    /// Log line format.
    #[arg(
        long,
        value_name = "FORMAT",
        global = true,
        default_value = "text",
        help_heading = "Logging"
    )]
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
    let refused = |what: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "{from}: {what}; give error, warn, info, debug or trace, \
             or directives such as info,tracer::pipeline=debug"
        )
    };
    // EnvFilter takes a bare word as a target to log everything of, so a
    // misspelt level ("warnig"), or one of another tool ("verbose"), would
    // silently turn the whole log off.
    for word in text.split(',').map(str::trim) {
        if let Some(level) = misspelt_level(word) {
            return Err(refused(&format_args!(
                "{word:?} is not a log level (did you mean {level}?), and as a target it would \
                 turn off every line but that target's"
            )));
        }
        if stray_target(word) {
            return Err(refused(&format_args!(
                "{word:?} is neither a log level nor a target tracer logs under ({}), and as a \
                 target it would turn off every line",
                TARGETS.join(", ")
            )));
        }
    }
    EnvFilter::builder()
        .parse(&text)
        .map_err(|e| refused(&format_args!("{text:?} is not a log level ({e})")))
}

/// The levels a directive may name.
pub(crate) const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The targets tracer's log lines come under, by the first part of their
/// path: its own, the kernel programs' diagnostics, and the crates that
/// log through it.
const TARGETS: [&str; 10] = [
    "tracer", "kernel", "aya", "aya_log", "aya_obj", "ureq", "rustls", "hyper", "axum", "tokio",
];

/// A bare directive (no `=`, no span filter) that EnvFilter would read as
/// a target, and that no line of tracer comes under: `verbose`, `myapp`.
/// Levels (named or numbered) and misspelt ones are not.
fn stray_target(directive: &str) -> bool {
    let word = directive.to_ascii_lowercase();
    if word.is_empty()
        || word.contains(['=', '['])
        || word.parse::<u8>().is_ok()
        || LEVELS.contains(&word.as_str())
        || misspelt_level(directive).is_some()
    {
        return false;
    }
    let root = word.split("::").next().unwrap_or_default();
    !TARGETS.contains(&root)
}

/// The level a bare directive that is not one but is within two edits of
/// one (`warnig`, `debg`, `infoo`) was meant as. Any other bare word is a
/// target, as EnvFilter reads it (`tracer`, `ureq`: see [`stray_target`]),
/// and numeric levels pass.
fn misspelt_level(directive: &str) -> Option<&'static str> {
    let word = directive.to_ascii_lowercase();
    // `tracer`, this program's own target, is one edit from `trace`.
    if word.is_empty()
        || word.contains([':', '=', '['])
        || LEVELS.contains(&word.as_str())
        || word == "tracer"
    {
        return None;
    }
    LEVELS.iter().find(|l| edits(&word, l) <= 2).copied()
}

/// The Levenshtein distance between two short ASCII words.
fn edits(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Install the log for this process: stderr, in `flags`' format and level,
/// with `log` records (aya's) bridged in. A line stderr cannot take (its
/// reader went away: `tracer run 2>&1 | head`, a log shipper restarting) is
/// dropped: the agent goes on without its log rather than stopping.
pub fn init(flags: &LogFlags) -> anyhow::Result<()> {
    let filter = filter(flags)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    let installed = match flags.log_format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(|| OneLine(std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("starting the log: {e}"))
}

/// A text log line as one line: a record with line breaks of its own
/// (aya's debug output pretty-prints structs) is joined with spaces, so
/// that every line of the log starts with a time and a level. tracing's
/// formatter hands each record over in one write.
struct OneLine<W>(W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.contains(&b'\n') {
            return self.0.write_all(buf);
        }
        self.0.write_all(&one_line(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `record` with each line break inside it, and the indent after it, made
/// one space; its last line break kept.
fn one_line(record: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(record);
    let (body, end) = match text.strip_suffix('\n') {
        Some(b) => (b, "\n"),
        None => (&*text, ""),
    };
    let mut out: String = body
        .split('\n')
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join(" ");
    out.push_str(end);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_several_lines_is_logged_as_one() {
        let mut out = OneLine(Vec::new());
        std::io::Write::write_all(
            &mut out,
            b"T DEBUG Features {\n    bpf_name: true,\n    btf: None,\n}\n",
        )
        .unwrap();
        std::io::Write::write_all(&mut out, b"T INFO one line\n").unwrap();
        assert_eq!(
            String::from_utf8(out.0).unwrap(),
            "T DEBUG Features { bpf_name: true, btf: None, }\nT INFO one line\n"
        );
    }

    /// Every warning and error tracer logs carries an `event` field, so a
    /// log pipeline can count and alert on it by name under `--log-format
    /// json` (docs/cli.md lists them). The kernel's own diagnostics are
    /// named by their `hook` instead.
    #[test]
    fn every_warning_and_error_names_its_event() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() && !p.ends_with("tests") {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("tests.rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut unnamed = Vec::new();
        let mut seen = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for macro_call in ["tracing::warn!(", "tracing::error!("] {
                for (at, _) in text.match_indices(macro_call) {
                    let args = text[at + macro_call.len()..].trim_start();
                    if text[..at].ends_with('"') || args.starts_with("target: \"kernel\"") {
                        continue;
                    }
                    let head = &args[..args.find('"').unwrap_or(args.len())];
                    seen += 1;
                    if !head.contains("event =") {
                        let line = text[..at].lines().count() + 1;
                        unnamed.push(format!("{}:{line}", f.display()));
                    }
                }
            }
        }
        assert!(seen > 20, "the walk found {seen} warnings");
        assert!(
            unnamed.is_empty(),
            "warnings without an event field: {unnamed:?}"
        );
    }

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

    #[test]
    fn a_misspelt_level_is_refused_not_taken_for_a_target() {
        let level = |l: &str| {
            filter(&LogFlags {
                log_level: Some(l.into()),
                ..LogFlags::default()
            })
        };
        for (bad, meant) in [
            ("warnig", "warn"),
            ("info,debg", "debug"),
            ("INFOO", "info"),
        ] {
            let e = level(bad).expect_err(bad).to_string();
            assert!(
                e.contains(&format!("is not a log level (did you mean {meant}?)")),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
        // Targets, ours or another crate's (a RUST_LOG meant for another
        // program too), and numeric levels are EnvFilter's to read.
        for ok in [
            "WARN",
            "tracer",
            "ureq",
            "3",
            "kernel=warn",
            "myapp=debug",
            "aya::programs",
            "info,tracer::engine",
        ] {
            assert!(level(ok).is_ok(), "{ok}");
        }
        // Another tool's level, or a target no line of tracer's comes
        // under, would turn the whole log off.
        for bad in ["verbose", "myapp", "info,quiet", "tracerx::engine"] {
            let e = level(bad).expect_err(bad).to_string();
            assert!(
                e.contains("is neither a log level nor a target tracer logs under (tracer, kernel"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
