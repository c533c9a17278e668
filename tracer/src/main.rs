//! The `tracer` binary: parse flags, run the command, turn errors into one
//! line on stderr and an exit status (2 for a usage error or a failure).
use clap::Parser as _;
use tracer::cli::{Cli, Command, dispatch};

fn main() {
    // Before any thread exists, so every thread holds them too.
    tracer::pipeline::hold_stop_signals();
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(&e));
    if matches!(cli.command, Command::Run(_) | Command::Events(_)) {
        ignore_hangup();
    } else {
        tracer::pipeline::release_stop_signals();
    }
    if let Err(e) = tracer::logging::init(&cli.log) {
        say_error(&one_line(&e));
        std::process::exit(2);
    }
    // A log shipper reading JSON lines gets the failure as one of them.
    let json = cli.log.log_format == tracer::logging::LogFormat::Json;
    match dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) if json => {
            tracing::error!(event = "failed", exit_status = 2, "{}", one_line(&e));
            std::process::exit(2);
        }
        Err(e) => {
            say_error(&one_line(&e));
            std::process::exit(2);
        }
    }
}

/// Help and version print as clap prints them; a bad flag or value is one
/// line (clap's first, plus its tips) and exit status 2.
fn usage_error(e: &clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // A rejected value: the flag, then the validator's sentence.
    if let (ErrorKind::ValueValidation, Some(ContextValue::String(arg)), Some(why)) = (
        e.kind(),
        e.get(ContextKind::InvalidArg),
        std::error::Error::source(e),
    ) {
        let flag = arg.split_whitespace().next().unwrap_or(arg);
        say_error(&format!("{flag}: {why}"));
        std::process::exit(2);
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    // "the following required arguments were not provided:" lists them on
    // the lines after it, before the usage.
    if line.ends_with(':') {
        let named: Vec<&str> = lines
            .clone()
            .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("tip:"))
            .collect();
        line.push(' ');
        line.push_str(&named.join(", "));
    }
    for tip in lines.filter(|l| l.starts_with("tip:") || l.starts_with("[possible values:")) {
        line.push_str(" (");
        line.push_str(tip.trim_start_matches('[').trim_end_matches(']'));
        line.push(')');
    }
    say_error(&line);
    std::process::exit(2);
}

/// `tracer: error: LINE` on stderr; a stderr nobody reads any more is no
/// reason to panic on the way out.
fn say_error(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "tracer: error: {line}");
}

/// SIGHUP does not stop the long-running commands: their settings are read
/// only at start. Ignored from here on; once the event loop runs, each one
/// is also logged (see `pipeline::run`).
fn ignore_hangup() {
    // SAFETY: signal(2) setting SIG_IGN, before any other thread exists.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
}

/// The error and its causes as one sentence; a verifier log stays whole.
fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s
}
