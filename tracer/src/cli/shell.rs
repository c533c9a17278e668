//! `tracer completions SHELL` and `tracer man`: what packages install.
//!
//! Both are generated from the one flag definition, [`crate::cli::Cli`],
//! so they cannot drift from `--help`: completions by clap_complete, the
//! man page by clap_mangen. `cargo xtask dist` runs the built binary to
//! write them into the tarball and the .deb (docs/install.md).
use std::io::Write as _;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, ValueEnum};

use crate::cli::Cli;

/// A shell `tracer completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Loaded by the bash-completion package.
    Bash,
    /// A `_tracer` file on `$fpath`.
    Zsh,
    /// Loaded from fish's vendor_completions.d.
    Fish,
}

impl Shell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Flags of `tracer completions`.
#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Print the completion script for a shell.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<i32> {
    write_stdout(&completion_script(args.shell))?;
    Ok(0)
}

/// Print the man page (roff).
pub fn man() -> anyhow::Result<i32> {
    write_stdout(&man_page()?)?;
    Ok(0)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// The completion script of `shell` for the `tracer` command.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let mut cmd = completing(Cli::command());
    let mut out = Vec::new();
    clap_complete::generate(shell.generator(), &mut cmd, "tracer", &mut out);
    out
}

/// The command tree as completions see it, every command's flags through
/// [`completing_value`].
fn completing(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(completing_value).mut_subcommands(completing)
}

/// A flag's value as completions offer it: the names it takes where they
/// are few, file names only where it takes a file, and nothing else
/// (clap would otherwise offer file names for a port or a duration).
/// Only the completions see this: parsing and `--help` keep the flag's
/// own parser, which also takes ss's names and aliases.
fn completing_value(arg: clap::Arg) -> clap::Arg {
    use clap::{ValueHint, builder::PossibleValuesParser};
    if !arg.get_action().takes_values()
        || arg.get_value_hint() != ValueHint::Unknown
        || !arg.get_possible_values().is_empty()
    {
        return arg;
    }
    let names: Vec<&'static str> = match arg.get_long() {
        Some("state") => crate::tcp::TcpState::ALL.map(|s| s.name()).to_vec(),
        Some("kind") => crate::event::Kind::ALL
            .iter()
            .map(|k| k.name())
            .chain(["leak_flagged", "leak_cleared"])
            .collect(),
        Some("log-level") => crate::logging::LEVELS.to_vec(),
        Some("netns") => vec!["all", "host"],
        _ => Vec::new(),
    };
    let file = arg
        .get_value_names()
        .is_some_and(|v| v.iter().any(|n| n.as_str() == "FILE"));
    match (names.is_empty(), file) {
        (false, _) => arg.value_parser(PossibleValuesParser::new(names)),
        (true, true) => arg.value_hint(ValueHint::FilePath),
        (true, false) => arg.value_hint(ValueHint::Other),
    }
}

/// What the man page says past the flags: where packages put the config
/// file and the unit, and where the rest is documented.
const FILES_AND_SEE_ALSO: &str = r#".SH FILES
.TP
\fI/etc/tracer/tracer.toml\fR
The config file of the packaged service (\fBtracer run \-\-config\fR). Every
flag of \fBtracer run\fR is a key there, in kebab\-case; flags override it.
Read only at start: restart the service to apply a change.
.TP
\fI/lib/systemd/system/tracer.service\fR
The systemd unit: \fBtracer run\fR with five capabilities, serving
http://127.0.0.1:9077. Not enabled on install: \fBsystemctl enable \-\-now tracer\fR.
.SH EXIT STATUS
0 on success. \fBtracer leaks\fR exits 1 when it found leaks, or when a
process is out of descriptors or an endpoint out of ports now;
\fBtracer port\fR exits 1 when the port is busy, or when no namespace has
the address \fB\-\-addr\fR names. 2 for a bad
flag, a bad config file, missing privileges or a missing kernel feature,
after one sentence on stderr saying what and how to fix it.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBss\fR(8), \fBbpftool\fR(8). The documentation
(docs/agent.md, docs/metrics.md, docs/leaks.md, docs/install.md) is in the
source repository.
"#;

/// The man page, tracer(1): the top-level page, then each visible command
/// with its synopsis and flags as a section of its own.
pub fn man_page() -> anyhow::Result<Vec<u8>> {
    let mut cmd = Cli::command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone()).manual("tracer manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    // clap_mangen's own list points at a page per command (tracer-run(1));
    // this page has a section per command instead.
    writeln!(out, ".SH COMMANDS")?;
    for sub in commands(&cmd) {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        writeln!(out, ".TP\n\\fB{}\\fR\n{}", escape(name), escape(&about))?;
    }
    for sub in commands(&cmd) {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let page = clap_mangen::Man::new(sub.clone());
        let mut body = Vec::new();
        page.render_description_section(&mut body)?;
        page.render_synopsis_section(&mut body)?;
        page.render_options_section(&mut body)?;
        out.extend_from_slice(&demote_sections(&String::from_utf8_lossy(&body)).into_bytes());
        out.extend_from_slice(epilogue(sub).as_bytes());
    }
    out.extend_from_slice(FILES_AND_SEE_ALSO.as_bytes());
    man.render_version_section(&mut out)?;
    Ok(code_in_bold(&String::from_utf8_lossy(&out)).into_bytes())
}

/// Text the help quotes as `code` set in bold, as man pages set what is
/// typed; a line with an odd number of backticks is left alone.
fn code_in_bold(roff: &str) -> String {
    roff.lines()
        .map(|l| {
            let parts: Vec<_> = l.split('`').collect();
            if parts.len() % 2 == 0 {
                return format!("{l}\n");
            }
            let mut line = String::new();
            for (i, p) in parts.iter().enumerate() {
                if i % 2 == 1 {
                    line.push_str(&format!("\\fB{p}\\fR"));
                } else {
                    line.push_str(p);
                }
            }
            line + "\n"
        })
        .collect()
}

/// A command's `--help` epilogue as roff: each paragraph under a
/// subheading of its own (EXAMPLES, KEYS, EXIT STATUS), and each example a
/// tagged paragraph with the command line in bold.
fn epilogue(cmd: &clap::Command) -> String {
    let Some(text) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) else {
        return String::new();
    };
    let mut out = String::new();
    for line in text.to_string().lines() {
        if let Some(example) = line.strip_prefix("  ") {
            let (typed, what) = example.split_once("   ").unwrap_or((example, ""));
            out += &format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                escape(typed.trim()),
                escape(what.trim())
            );
        } else if let Some((head, rest)) = line.split_once(':') {
            out += &format!(".SS \"{}\"\n", head.to_uppercase());
            if !rest.trim().is_empty() {
                out += &format!("{}\n", escape(rest.trim()));
            }
        } else if !line.trim().is_empty() {
            out += &format!("{}\n", escape(line.trim()));
        }
    }
    out
}

/// The commands a user types: not the hidden ones, not `help`.
fn commands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// One line of text as roff: backslashes and hyphens escaped, and a
/// leading `.` or `'` kept from reading as a request.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

/// A command's sections nested under its own heading: `.SH X` becomes
/// `.SS X`, except DESCRIPTION, whose text goes straight under the heading.
fn demote_sections(roff: &str) -> String {
    roff.lines()
        .filter(|l| *l != ".SH DESCRIPTION")
        .map(|l| match l.strip_prefix(".SH ") {
            Some(title) => format!(".SS {title}\n"),
            None => format!("{l}\n"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands a user types, as the completions and the page must name them.
    const COMMANDS: [&str; 5] = ["events", "leaks", "run", "port", "completions"];

    #[test]
    fn each_shell_completes_every_command() {
        for shell in Shell::value_variants() {
            let script = String::from_utf8(completion_script(*shell)).unwrap();
            assert!(!script.trim().is_empty(), "{shell:?}: empty script");
            for c in COMMANDS {
                assert!(script.contains(c), "{shell:?} script does not name `{c}`");
            }
            assert!(
                script.contains("close-wait-threshold"),
                "{shell:?} script lacks the flags of `tracer run`"
            );
        }
    }

    #[test]
    fn the_man_page_names_every_command_and_its_flags() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.contains("\n.TH tracer 1 "), "{page}");
        for c in COMMANDS {
            assert!(
                page.contains(&format!(".SH \"TRACER {}\"", c.to_uppercase())),
                "no section for `tracer {c}`"
            );
        }
        assert!(
            page.contains("\\fBtracer man\\fR"),
            "the page names how to print itself"
        );
        assert!(
            !page.contains("tracer\\-run(1)") && !page.contains("TRACER HELP"),
            "pages that do not exist are named"
        );
        assert!(page.contains(".SH COMMANDS\n.TP\n\\fBtracer events\\fR\n"));
        for flag in [
            "config",
            "listen",
            "max\\-sockets",
            "close\\-wait\\-threshold",
        ] {
            assert!(page.contains(&format!("\\-\\-{flag}")), "no --{flag}");
        }
        assert!(page.contains("/etc/tracer/tracer.toml"));
        // Each command's examples, with the line to type in bold.
        assert_eq!(page.matches(".SS \"EXAMPLES\"").count(), 5, "{page}");
        assert!(
            page.contains(
                ".TP\n\\fBtracer leaks \\-c java \\-s close\\-wait\\fR\njava's CLOSE_WAIT sockets\n"
            ),
            "{page}"
        );
        assert!(page.contains(".SS \"KEYS\"\nq quit"), "top's keys");
        // What the help quotes as code is bold, not backticked.
        assert!(!page.contains('`'), "{page}");
        assert!(
            page.contains("(roff: \\fBtracer man | man \\-l \\-\\fR)"),
            "{page}"
        );
    }

    #[test]
    fn code_quoted_in_backticks_is_set_in_bold() {
        assert_eq!(code_in_bold("a `b` c `d`\n"), "a \\fBb\\fR c \\fBd\\fR\n");
        assert_eq!(code_in_bold("an odd ` stays\n"), "an odd ` stays\n");
    }

    #[test]
    fn completions_offer_names_not_file_names_where_a_flag_takes_no_file() {
        let script = String::from_utf8(completion_script(Shell::Bash)).unwrap();
        // The case arm of each flag, in `tracer events`.
        let arm = |flag: &str| {
            let at = script
                .find(&format!("                {flag})\n"))
                .unwrap_or_else(|| panic!("no {flag} arm"));
            script[at..].lines().nth(1).unwrap().to_owned()
        };
        assert!(arm("--state").contains("close_wait"), "{}", arm("--state"));
        assert!(arm("--kind").contains("reset_sent"), "{}", arm("--kind"));
        assert!(arm("--kind").contains("leak_flagged"), "{}", arm("--kind"));
        assert!(arm("--netns").contains("all host"), "{}", arm("--netns"));
        assert!(
            arm("--log-level").contains("debug"),
            "{}",
            arm("--log-level")
        );
        for flag in ["--port", "--duration", "--ring-bytes", "--pid", "--comm"] {
            assert!(!arm(flag).contains("compgen -f"), "{flag}: {}", arm(flag));
        }
        assert!(
            arm("--config").contains("compgen -f"),
            "{}",
            arm("--config")
        );
    }

    #[test]
    fn text_is_escaped_for_roff() {
        assert_eq!(escape("a-b \\n"), "a\\-b \\en");
        assert_eq!(escape(".SH x"), "\\&.SH x");
        assert_eq!(escape("'quoted'"), "\\&'quoted'");
    }

    #[test]
    fn nested_sections_become_subsections() {
        let body = ".SH DESCRIPTION\nRun it.\n.SH SYNOPSIS\n\\fBtracer run\\fR\n.SH OPTIONS\n.TP\n";
        assert_eq!(
            demote_sections(body),
            "Run it.\n.SS SYNOPSIS\n\\fBtracer run\\fR\n.SS OPTIONS\n.TP\n"
        );
    }

    #[test]
    fn the_shell_is_one_of_three() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["tracer", "completions", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            crate::cli::Command::Completions(CompletionsArgs { shell: Shell::Zsh })
        ));
        let err = Cli::try_parse_from(["tracer", "completions", "tcsh"]).unwrap_err();
        assert!(err.to_string().contains("bash"), "{err}");
    }
}
