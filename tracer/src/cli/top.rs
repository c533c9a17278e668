//! `tracer top`: a live terminal view of a running agent.
//!
//! Sockets by state with their change per second, the oldest CLOSE_WAIT
//! sockets and the leaking processes, TIME_WAIT by local port and by
//! remote endpoint, dwell-time percentiles. The agent is asked through the
//! client of `tracer leaks` ([`fetch`]); the answers become a pure
//! [`model::Model`], drawn by [`view`] with ratatui, with the keys of
//! [`keys`]; [`live`] owns the terminal. `--once` prints one frame as plain
//! text instead, like `top -b -n 1`.
use std::{
    io::{IsTerminal as _, Write as _},
    time::Duration,
};

use clap::Args;

use crate::{
    cli::leaks::AgentFlags,
    config::{Bounds, parse_duration_within},
    filter::Match,
};

pub mod fetch;
pub mod keys;
pub mod live;
pub mod model;
pub mod view;

/// `--interval`: at least 250 ms (each refresh is three requests and a
/// walk of the TIME_WAIT sockets), at most an hour.
pub const INTERVAL: Bounds = Bounds {
    min: Duration::from_millis(250),
    max: Duration::from_secs(3600),
    min_text: "250ms",
    max_text: "1h",
};

/// Parse `--interval` ([`INTERVAL`]).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    parse_duration_within(s, INTERVAL)
}

/// Flags of `tracer top`.
#[derive(Debug, Args, Clone)]
#[command(after_help = EXAMPLES)]
pub struct TopArgs {
    // The agent to watch.
    #[command(flatten)]
    pub agent: AgentFlags,
    /// Refresh every this long, 250ms to 1h.
    #[arg(short = 'n', long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval, allow_hyphen_values = true)]
    pub interval: Duration,
    /// Print one frame as plain text on stdout and exit (for scripts; no terminal needed).
    #[arg(short = 'b', long)]
    pub once: bool,
    /// Which leaks and TIME_WAIT sockets: of these processes, in these
    /// states, on these ports, of this family (the counts and dwell times
    /// stay whole).
    #[command(flatten)]
    pub matching: Match,
    /// Which leaks and TIME_WAIT sockets: of this network namespace, as the
    /// agent names it: host (its own), a /run/netns name, pid:N or an
    /// inode; all (the default) for every one.
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<crate::pipeline::NetnsChoice>,
}

/// Examples under `tracer top --help`.
const EXAMPLES: &str = "Examples:
  tracer top                              watch the local agent, every 2s
  tracer top --agent http://10.0.0.7:9077 -n 500ms
  tracer top -c java                      only java's leaks and TIME_WAIT sockets
  tracer top --netns web                  only the leaks and TIME_WAIT sockets of netns web
  tracer top --once > frame.txt           one frame as plain text

Keys: q quit, Tab/arrows focus, s sort, / filter, +/- interval, p pause, ? help.
Exit status: 0 quit, 2 error (no agent, not a terminal, a terminal with no size).";

/// Run `tracer top`.
pub fn run(args: TopArgs) -> anyhow::Result<i32> {
    let source = fetch::Source {
        client: args.agent.client()?,
        matching: args.matching.clone(),
        netns: args
            .netns
            .clone()
            .filter(|n| *n != crate::pipeline::NetnsChoice::All),
    };
    let stdout = std::io::stdout();
    if !args.once && !stdout.is_terminal() {
        anyhow::bail!(
            "tracer top draws on a terminal and stdout is not one: run it in a terminal, or give --once for one plain-text frame"
        );
    }
    let first = source.sample()?;
    if args.once {
        // The terminal's width; else `COLUMNS`, as `ls` and `ps` read it
        // when writing to a pipe; else 160.
        let columns = || std::env::var("COLUMNS").ok()?.trim().parse::<u16>().ok();
        let width = ratatui::crossterm::terminal::size()
            .ok()
            .filter(|_| stdout.is_terminal())
            .map(|(w, _)| w)
            .or_else(columns)
            .map_or(160, |w| w.max(80));
        let model = model::Model::build(&first, None);
        let ui = keys::Ui::new(args.interval);
        let screen = view::Screen {
            model: &model,
            ui: &ui,
            url: &source.shown_url(),
            only: &source.describe(),
            error: None,
            live: false,
        };
        let text = view::text(&screen, width)?;
        let mut out = stdout.lock();
        return match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(0),
        };
    }
    live::run(source, first, args.interval)
}
