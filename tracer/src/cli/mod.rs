//! Command-line interface: flag definitions and one module per command.
pub mod events;
pub mod leaks;
pub mod port;
pub mod run;
pub mod shell;
pub mod top;

use clap::{Parser, Subcommand};

/// eBPF TCP connection lifecycle tracer.
#[derive(Debug, Parser)]
#[command(name = "tracer", version, about, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// The log: level and format.
    #[command(flatten)]
    pub log: crate::logging::LogFlags,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream raw TCP events from the kernel as JSON lines on stdout.
    Events(events::EventsArgs),
    /// List leaked sockets (CLOSE_WAIT, half-open, stuck handshakes) with their process, fd and age.
    Leaks(leaks::LeaksArgs),
    /// Run the agent: follow every socket, serve /metrics and the JSON API.
    Run(run::RunArgs),
    /// Explain a busy port: who holds it, until when, and whether a new listener can bind it.
    Port(port::PortArgs),
    /// A live view of a running agent: sockets by state, leaks, TIME_WAIT, dwell times.
    Top(top::TopArgs),
    /// Print a shell completion script.
    Completions(shell::CompletionsArgs),
    /// Print the man page (roff: `tracer man | man -l -`).
    Man,
}

/// Run the parsed command; the returned code becomes the exit status.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Events(args) => events::run(args),
        Command::Leaks(args) => leaks::run(args),
        Command::Run(args) => crate::agent::run(args.settings()?),
        Command::Port(args) => port::run(args),
        Command::Top(args) => top::run(args),
        Command::Completions(args) => shell::completions(args),
        Command::Man => shell::man(),
    }
}
