//! `tracer port PORT [--addr ADDR]`: why a port is busy, and whether a new
//! listener could bind it now, with and without `SO_REUSEADDR`.
//!
//! A sock_diag snapshot of every namespace in scope lists what is bound
//! to the port (listeners, connections, TIME_WAIT sockets with the
//! kernel's timers) and `/proc` names their owners; a running agent, when
//! one answers at `--agent`, adds exact ages and who closed first. The
//! verdict follows Linux's bind rules ([`bind`]), and a test `bind()`
//! ([`probe`]) settles what the rules cannot see. Exit status: 0 when a
//! plain `bind()` + `listen()` would succeed, 1 when it would fail, 2 on
//! error.
//!
//! - [`bind`]: the kernel's rules, pure;
//! - [`gather`]: the snapshot, the owners, the agent's answer;
//! - [`probe`]: the test bind;
//! - [`report`]: the answer as data (`--json`), with [`verdict`] in
//!   words; [`text`]: for people.
use std::{
    io::{self, Write},
    net::{IpAddr, Ipv6Addr},
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    cli::leaks::AgentFlags,
    diag::own_netns,
    pipeline::{NetnsChoice, NetnsScope},
};

pub mod bind;
pub mod gather;
pub mod probe;
pub mod report;
pub mod text;
pub mod verdict;

/// Examples under `tracer port --help`.
const EXAMPLES: &str = "Examples:
  tracer port 8080                    who holds port 8080, and can a server bind it now?
  tracer port 8080 --addr 127.0.0.1   only what overlaps 127.0.0.1:8080
  tracer port 5432 --netns pid:4242   in the network namespace of process 4242
  tracer port 8080 --json | jq .free_with_reuseaddr

Exit status: 0 a plain bind() would succeed, 1 the port is busy (or no namespace has --addr), 2 error.";

/// Flags of `tracer port`.
#[derive(Debug, Args, Clone)]
#[command(after_help = EXAMPLES)]
pub struct PortArgs {
    /// The local port to explain.
    #[arg(value_parser = crate::config::parse_listen_port)]
    pub port: u16,
    /// The local address the new listener would bind [default: any, i.e.
    /// `::` dual-stack, which overlaps every address]; `0.0.0.0` for an
    /// IPv4-only listener. A specific address is checked against each
    /// namespace: one none has is UNAVAILABLE (EADDRNOTAVAIL).
    #[arg(long, value_name = "ADDR", value_parser = crate::config::parse_ip)]
    pub addr: Option<IpAddr>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    // The agent to ask for exact ages; without one, ages other than
    // TIME_WAIT's are unknown.
    #[command(flatten)]
    pub agent: AgentFlags,
    /// The network namespaces: all, or one: host (the one tracer runs in),
    /// a /run/netns name, an inode, or pid:N [default: all]. A port is per namespace:
    /// the answer is given for each one that holds it.
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<NetnsChoice>,
}

/// Run `tracer port`, printing to stdout.
pub fn run(args: PortArgs) -> anyhow::Result<i32> {
    let stdout = io::stdout();
    run_to(&args, &mut stdout.lock())
}

/// Run `tracer port`, printing to `out`; returns the exit status (0 or 1).
pub fn run_to(args: &PortArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let scope = NetnsScope::resolve(&args.netns.clone().unwrap_or_default())?;
    let agent_url = args.agent.url();
    let addr = args.addr.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let found = gather::gather(args.port, addr, scope, &args.agent.client()?)?;
    let url = crate::cli::leaks::shown(agent_url);
    let mut note = if found.agent {
        format!(
            "agent at {url} (exact ages; {} of its sockets on the port) and a sock_diag snapshot (sockets, owners, timers)",
            found.agent_sockets
        )
    } else {
        format!(
            "no agent at {url}: one-shot sock_diag snapshot; TIME_WAIT ages from the kernel's timers, other ages unknown"
        )
    };
    if found.refused > 0 {
        note.push_str(&format!(
            "; {} network namespace(s) could not be entered (that needs CAP_SYS_ADMIN)",
            found.refused
        ));
    }
    if let Some(said) = crate::pipeline::unread_said(found.unread) {
        note.push_str(&format!("; {said}"));
    }
    if let Some(f) = found.agent_followed
        && found.by_netns.keys().any(|&n| n != f)
    {
        note.push_str(&format!(
            "; the agent follows only network namespace {f}: ages in the others are unknown"
        ));
    }
    let own = own_netns();
    let mut report =
        report::build(
            args.port,
            addr,
            false,
            &found,
            note,
            |netns| match probe::test_bind(addr, args.port, false, found.entry(netns, own)?) {
                Ok(()) => Some(true),
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Some(false),
                Err(_) => None,
            },
        );
    report.own_netns = own;
    let written = if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        text::render(&report, out)
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the port report")
        }
        _ => Ok(report.exit_code()),
    }
}

#[cfg(test)]
mod tests;
