//! `tracer events`: every kernel event as one JSON line on stdout.
//!
//! Stdout carries JSON only; the summary (events seen, events lost in the
//! kernel) goes to stderr when the command ends.
use std::{io::Write, time::Duration};

use anyhow::Context as _;
use clap::Args;

use crate::{
    bpf::{DEFAULT_RING_BYTES, Probes},
    event::{Kind, SockEvent},
    export::stream,
    ingest::Ingest,
};

/// Flags of `tracer events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events where either endpoint uses this port (repeatable).
    #[arg(long = "port", value_name = "P")]
    pub ports: Vec<u16>,
    /// Only events of this kind (repeatable): state, retransmit,
    /// synack_retransmit, reset_sent, reset_received.
    #[arg(long = "kind", value_name = "K", value_parser = parse_kind)]
    pub kinds: Vec<Kind>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Size of the kernel ring buffer in bytes (a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BYTES)]
    pub ring_bytes: u32,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::from_name(s).ok_or_else(|| {
        let names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown kind {s:?}; expected one of {}", names.join(", "))
    })
}

/// Which events to print.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    ports: Vec<u16>,
    kinds: Vec<Kind>,
}

impl Filter {
    /// A filter keeping events on any of `ports` and of any of `kinds`;
    /// an empty list keeps everything.
    pub fn new(ports: Vec<u16>, kinds: Vec<Kind>) -> Filter {
        Filter { ports, kinds }
    }

    /// True when the event passes.
    pub fn keep(&self, ev: &SockEvent) -> bool {
        (self.ports.is_empty() || self.ports.iter().any(|&p| ev.has_port(p)))
            && (self.kinds.is_empty() || self.kinds.contains(&ev.kind))
    }
}

/// Run `tracer events`.
pub fn run(args: EventsArgs) -> anyhow::Result<i32> {
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        anyhow::bail!("--duration must be a positive number of seconds, not {d}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(stream_events(args))
}

async fn stream_events(args: EventsArgs) -> anyhow::Result<i32> {
    use tokio::signal::unix::{SignalKind, signal};

    let (probes, ring) = Probes::load(args.ring_bytes)?;
    let mut ingest = Ingest::new(ring).context("polling the ring buffer")?;
    let filter = Filter::new(args.ports, args.kinds);
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(Duration::from_secs_f64(d)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    eprintln!("tracer: tracing TCP events; stop with Ctrl-C");

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut seen: u64 = 0;
    let mut printed: u64 = 0;
    let mut write_err: Option<std::io::Error> = None;
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
            r = ingest.next_batch(|ev| {
                seen += 1;
                if write_err.is_none() && filter.keep(ev) {
                    printed += 1;
                    if let Err(e) = stream::write_event(&mut out, ev) {
                        write_err = Some(e);
                    }
                }
            }) => {
                r.context("reading the ring buffer")?;
                if write_err.is_none() && let Err(e) = out.flush() {
                    write_err = Some(e);
                }
                if let Some(e) = write_err.take() {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        break;
                    }
                    return Err(e).context("writing events to stdout");
                }
            }
        }
    }
    // Drain what arrived before the stop.
    let _ = out.flush();
    let counters = probes.counters();
    eprintln!(
        "tracer: {seen} events read, {printed} printed, {} lost in the kernel \
         (ring buffer full: {}, read errors: {}), {} undecodable",
        counters.lost(),
        counters.ringbuf_full,
        counters.read_errors,
        ingest.decode_errors
    );
    Ok(0)
}
