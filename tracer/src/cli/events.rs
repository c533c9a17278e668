//! `tracer events`: every kernel event as one JSON line on stdout.
//!
//! Stdout carries JSON only; the summary (events seen, events lost in the
//! kernel) goes to stderr when the command ends.
use std::{io::Write, time::Duration};

use anyhow::Context as _;
use clap::Args;

use crate::{
    agent::{
        monotonic_ns,
        pace::{Pace, thread_cpu_ns},
    },
    bpf::{DEFAULT_RING_BYTES, Probes},
    config::{DEFAULT_RECONCILE_BUDGET, Settings},
    diag::dump::{DumpOptions, Dumper},
    engine::{self, Engine},
    event::{Kind, SockEvent},
    export::stream,
    ingest::Ingest,
    leaks::{Change, Detector, Thresholds},
};

/// Leak detection alongside the stream: an engine for exact ages, the
/// detectors, and a sock_diag dump every second (less often where a dump
/// costs more than the default `--reconcile-budget` of `tracer run`).
struct Leaks {
    engine: Engine,
    pace: Pace,
    /// Kernel-side losses at the last dump; more brings the next one early.
    lost_at_dump: u64,
    /// The namespace sock_diag sees; the engine follows only its sockets.
    netns: u32,
    detector: Detector,
    dumper: Dumper,
    dump: Vec<crate::diag::DiagSocket>,
}

impl Leaks {
    fn new(args: &EventsArgs) -> anyhow::Result<Leaks> {
        let mut settings = Settings::default();
        args.thresholds.apply(&mut settings);
        let mut leaks = Leaks {
            engine: Engine::new(engine::Config::default()),
            pace: Pace::new(Duration::from_secs(1), DEFAULT_RECONCILE_BUDGET),
            lost_at_dump: 0,
            netns: crate::agent::own_netns(),
            detector: Detector::new(Thresholds::from_settings(&settings)),
            // TIME_WAIT sockets are the bulk of a busy host and no detector
            // looks at them: leave them out of the dumps.
            dumper: Dumper::new(DumpOptions {
                with_info: true,
                without_time_wait: true,
            })
            .context("listing TCP sockets with sock_diag")?,
            dump: Vec::new(),
        };
        let now = monotonic_ns();
        let cpu = thread_cpu_ns();
        leaks
            .dumper
            .dump_into(&mut leaks.dump)
            .context("listing TCP sockets with sock_diag")?;
        leaks.engine.adopt(&leaks.dump, now);
        leaks.pace.done(now, thread_cpu_ns().saturating_sub(cpu));
        Ok(leaks)
    }

    /// When a dump is due (or events were lost: `lost` is the kernel's
    /// count): dump, reconcile, detect; print events and flag changes.
    fn tick<W: Write>(&mut self, ingest: &mut Ingest, p: &mut Printer<W>, lost: u64) {
        let start = monotonic_ns();
        if !self.pace.due(start) && lost <= self.lost_at_dump {
            return;
        }
        self.lost_at_dump = lost;
        // The budget covers the dump and the reconcile, which grow with the
        // host's socket count; not the events drained in between, nor owner
        // lookups for new flags (one-offs).
        let cpu = thread_cpu_ns();
        let dumped = self.dumper.dump_into(&mut self.dump);
        let dump_ns = thread_cpu_ns().saturating_sub(cpu);
        if dumped.is_err() {
            self.pace.done(start, dump_ns);
            return;
        }
        let engine = &mut self.engine;
        let netns = self.netns;
        ingest.drain_now(|ev| {
            if crate::agent::in_netns(ev, netns) {
                engine.apply(ev, &mut ());
            }
            p.event(ev);
        });
        let cpu = thread_cpu_ns();
        engine.reconcile(&self.dump, start, false, &mut ());
        self.pace
            .done(start, dump_ns + thread_cpu_ns().saturating_sub(cpu));
        let engine = &*engine;
        let changes = self.detector.update(
            &self.dump,
            start,
            |cookie, st| engine.state_since(cookie, st),
            crate::diag::owner::owners_of,
        );
        for c in &changes {
            p.leak(c, start);
        }
    }
}

/// Writes what passes the filter, remembering the first write error.
struct Printer<W: Write> {
    out: W,
    filter: Filter,
    seen: u64,
    printed: u64,
    err: Option<std::io::Error>,
}

impl<W: Write> Printer<W> {
    fn event(&mut self, ev: &SockEvent) {
        self.seen += 1;
        if self.err.is_none() && self.filter.keep(ev) {
            self.printed += 1;
            if let Err(e) = stream::write_event(&mut self.out, ev) {
                self.err = Some(e);
            }
        }
    }

    fn leak(&mut self, c: &Change, ts_ns: u64) {
        if self.err.is_none() && self.filter.keep_leak(c) {
            self.printed += 1;
            if let Err(e) = stream::write_leak(&mut self.out, c, ts_ns) {
                self.err = Some(e);
            }
        }
    }

    /// Flush; a closed pipe ends the stream quietly, other errors fail it.
    fn flush(&mut self) -> anyhow::Result<bool> {
        if self.err.is_none()
            && let Err(e) = self.out.flush()
        {
            self.err = Some(e);
        }
        match self.err.take() {
            None => Ok(true),
            Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Some(e) => Err(e).context("writing events to stdout"),
        }
    }
}

/// Flags of `tracer events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events where either endpoint uses this port (repeatable).
    #[arg(long = "port", value_name = "P")]
    pub ports: Vec<u16>,
    /// Only events of this kind (repeatable): state, retransmit,
    /// synack_retransmit, reset_sent, reset_received, leak_flagged, leak_cleared.
    #[arg(long = "kind", value_name = "K", value_parser = parse_kind)]
    pub kinds: Vec<Wanted>,
    /// Do not run the leak detectors (no sock_diag dumps, no leak events).
    #[arg(long)]
    pub no_leaks: bool,
    /// Leak detector thresholds.
    #[command(flatten)]
    pub thresholds: super::run::ThresholdArgs,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Size of the kernel ring buffer in bytes (a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BYTES)]
    pub ring_bytes: u32,
}

/// An event kind a user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// A kernel event kind.
    Kernel(Kind),
    /// `leak_flagged`.
    LeakFlagged,
    /// `leak_cleared`.
    LeakCleared,
}

fn parse_kind(s: &str) -> Result<Wanted, String> {
    match s {
        "leak_flagged" => Ok(Wanted::LeakFlagged),
        "leak_cleared" => Ok(Wanted::LeakCleared),
        _ => Kind::from_name(s).map(Wanted::Kernel).ok_or_else(|| {
            let names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
            format!(
                "unknown kind {s:?}; expected one of {}, leak_flagged, leak_cleared",
                names.join(", ")
            )
        }),
    }
}

/// Which events to print.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    ports: Vec<u16>,
    kinds: Vec<Wanted>,
}

impl Filter {
    /// A filter keeping events on any of `ports` and of any of `kinds`;
    /// an empty list keeps everything.
    pub fn new(ports: Vec<u16>, kinds: Vec<Wanted>) -> Filter {
        Filter { ports, kinds }
    }

    /// True when the event passes.
    pub fn keep(&self, ev: &SockEvent) -> bool {
        (self.ports.is_empty() || self.ports.iter().any(|&p| ev.has_port(p)))
            && (self.kinds.is_empty() || self.kinds.contains(&Wanted::Kernel(ev.kind)))
    }

    /// True when a leak flag change passes.
    pub fn keep_leak(&self, c: &Change) -> bool {
        let f = c.flag();
        let want = match c {
            Change::Raised(_) => Wanted::LeakFlagged,
            Change::Cleared(_) => Wanted::LeakCleared,
        };
        let on_port = |p: u16| f.local.port() == p || f.remote.is_some_and(|r| r.port() == p);
        (self.ports.is_empty() || self.ports.iter().any(|&p| on_port(p)))
            && (self.kinds.is_empty() || self.kinds.contains(&want))
    }

    /// True when no leak event can pass, so detection can be skipped.
    pub fn excludes_leaks(&self) -> bool {
        !self.kinds.is_empty()
            && !self
                .kinds
                .iter()
                .any(|k| matches!(k, Wanted::LeakFlagged | Wanted::LeakCleared))
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

    let (probes, ring) = Probes::load(args.ring_bytes, true)?;
    let mut ingest =
        Ingest::new(ring, Some(crate::bpf::DRAIN_INTERVAL)).context("polling the ring buffer")?;
    let filter = Filter::new(args.ports.clone(), args.kinds.clone());
    let mut leaks = if args.no_leaks || filter.excludes_leaks() {
        None
    } else {
        Some(Leaks::new(&args)?)
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
    let mut p = Printer {
        out: std::io::BufWriter::with_capacity(64 * 1024, stdout.lock()),
        filter,
        seen: 0,
        printed: 0,
        err: None,
    };
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
            _ = tick.tick(), if leaks.is_some() => {
                if let Some(l) = leaks.as_mut() {
                    l.tick(&mut ingest, &mut p, probes.counters().lost());
                }
                if !p.flush()? {
                    break;
                }
            }
            r = ingest.next_batch(|ev| {
                if let Some(l) = leaks.as_mut()
                    && crate::agent::in_netns(ev, l.netns)
                {
                    l.engine.apply(ev, &mut ());
                }
                p.event(ev);
            }) => {
                r.context("reading the ring buffer")?;
                if !p.flush()? {
                    break;
                }
            }
        }
    }
    let _ = p.flush();
    let (seen, printed) = (p.seen, p.printed);
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
