//! `tracer events`: every kernel event as one JSON line on stdout.
//!
//! Stdout carries JSON only; the summary (events seen, events lost in the
//! kernel) goes to stderr when the command ends. Stdout is written by a
//! thread of its own (`out.rs`), so a reader that stops reading never
//! stalls the event loop or its signals.
mod out;

use std::{io::Write, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Args;

use crate::{
    bpf::DEFAULT_RING_BYTES,
    config::{self, DEFAULT_RECONCILE_BUDGET, ThresholdFlags},
    container::ContainerMap,
    engine,
    event::{Kind, SockEvent},
    export::stream,
    filter::{Match, Owners},
    leaks::Change,
    pipeline::{self, Core, Flow, NetnsChoice, NetnsScope, Pipeline, Reconcile, Sink},
    snapshot::SocketSnapshot,
    tcp::TcpState,
    wall::WallClock,
};

/// Examples under `tracer events --help`.
const EXAMPLES: &str = "Examples:
  tracer events --duration 30s > events.jsonl   record 30 seconds of every namespace
  tracer events -c nginx -s close-wait          nginx's sockets entering CLOSE_WAIT
  tracer events -L 5432 --kind reset_received   resets on a local PostgreSQL
  tracer events -p 4242 -4                      one process's IPv4 sockets
  tracer events --no-leaks --netns host         the raw stream of the host's namespace";

/// The pipeline `tracer events` runs. With leak detection: an engine for
/// exact ages, the detectors, and a live sock_diag dump every second (less
/// often where a dump costs more than the default `--reconcile-budget` of
/// `tracer run`); TIME_WAIT sockets are the bulk of a busy host and no
/// detector looks at them, so no full dumps. Without: the stream alone.
fn pipeline_config(args: &EventsArgs, leaks: bool) -> anyhow::Result<pipeline::Config> {
    Ok(pipeline::Config {
        scope: NetnsScope::resolve(&args.netns)?,
        ring_bytes: args.ring_bytes,
        engine: engine::Config::default(),
        thresholds: args.thresholds.thresholds(),
        reconcile: leaks.then_some(Reconcile {
            interval: Duration::from_secs(1),
            time_wait_interval: None,
            budget_percent: DEFAULT_RECONCILE_BUDGET,
        }),
    })
}

/// Writes what passes the filter, remembering the first write error.
struct Printer<W: Write> {
    out: W,
    filter: Filter,
    seen: u64,
    printed: u64,
    /// Of `printed`, the leak flag changes (not kernel events).
    leak_lines: u64,
    err: Option<std::io::Error>,
    /// The container of each namespace, from the pipeline's last discovery.
    containers: Arc<ContainerMap>,
    /// Monotonic to wall-clock time, read again every loop turn.
    clock: WallClock,
}

impl<W: Write> Printer<W> {
    fn event(&mut self, ev: &SockEvent) {
        self.seen += 1;
        if self.err.is_none() && self.filter.keep(ev) {
            self.printed += 1;
            let container = self.containers.get(ev.netns).map(|c| &**c);
            if let Err(e) = stream::write_event(&mut self.out, ev, container, &self.clock) {
                self.err = Some(e);
            }
        }
    }

    fn leak(&mut self, c: &Change, ts_ns: u64) {
        if self.err.is_none() && self.filter.keep_leak(c) {
            self.printed += 1;
            self.leak_lines += 1;
            if let Err(e) = stream::write_leak(&mut self.out, c, ts_ns, &self.clock) {
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

/// Every event in the `--netns` scope is printed; leak flag changes too.
impl<W: Write> Sink for Printer<W> {
    type Derived = ();

    fn event(&mut self, ev: &SockEvent, in_scope: bool) {
        if in_scope {
            Printer::event(self, ev);
        }
    }

    fn containers(&mut self, map: &Arc<ContainerMap>) {
        self.containers = map.clone();
    }

    fn reconciled(
        &mut self,
        _core: &mut Core<()>,
        _dump: &[SocketSnapshot],
        changes: &[Change],
        start_ns: u64,
    ) {
        for c in changes {
            self.leak(c, start_ns);
        }
    }

    fn turn(&mut self) -> anyhow::Result<Flow> {
        self.clock = WallClock::now();
        Ok(if self.flush()? {
            Flow::Continue
        } else {
            Flow::Stop
        })
    }
}

/// Why `--state time_wait` is refused: no event could pass it.
const NO_TIME_WAIT_EVENT: &str = "--state time_wait matches no event: the kernel reports no move into TIME_WAIT \
(an active close ends fin_wait2 -> close or closing -> close, and the timewait socket after it has no events); \
give --state close for those closes, or see TIME_WAIT sockets with tracer top or /api/v1/sockets?state=time_wait";

/// Flags of `tracer events`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct EventsArgs {
    /// Which sockets: pid, comm, state (the event's new state), ports,
    /// family. The pid and comm filters follow a socket from the syscall
    /// that names its owner (connect, listen, close) to its close, and
    /// what matching processes hold at start or accept on their listeners.
    #[command(flatten)]
    pub matching: Match,
    /// Only events of this kind (repeatable): state, retransmit,
    /// synack_retransmit, reset_sent, reset_received, leak_flagged, leak_cleared.
    #[arg(long = "kind", value_name = "K", value_parser = parse_kind)]
    pub kinds: Vec<Wanted>,
    /// Do not run the leak detectors (no sock_diag dumps, no leak events).
    #[arg(long)]
    pub no_leaks: bool,
    /// Leak detector thresholds.
    #[command(flatten)]
    pub thresholds: ThresholdFlags,
    /// Stop after this long: bare seconds or 500ms, 10s, 5m, up to 30d
    /// (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = config::parse_run_length, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// The network namespaces: all, or one: host (the one tracer runs in),
    /// a /run/netns name, an inode, or pid:N.
    #[arg(long, value_name = "NETNS", default_value_t = NetnsChoice::All)]
    pub netns: NetnsChoice,
    /// Size of the kernel ring buffer in bytes: a power of two from 4096 to
    /// 256 MiB (kernel memory).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BYTES,
          value_parser = config::parse_ring_bytes, allow_hyphen_values = true)]
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
#[derive(Debug, Default)]
pub struct Filter {
    matching: Match,
    kinds: Vec<Wanted>,
    owners: Owners,
}

impl Filter {
    /// A filter keeping events that pass `matching` and are of any of
    /// `kinds` (an empty list keeps every kind).
    pub fn new(matching: Match, kinds: Vec<Wanted>) -> Filter {
        Filter {
            matching,
            kinds,
            owners: Owners::default(),
        }
    }

    /// True when the event passes.
    pub fn keep(&mut self, ev: &SockEvent) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&Wanted::Kernel(ev.kind)))
            && self.owners.keep(&self.matching, ev)
    }

    /// With a pid or comm filter: follow the sockets matching processes
    /// hold now in `scope`, and those they will accept on their listeners
    /// (see [`Owners`]). Without, a server's connections would show only
    /// from their close, and one opened before the command not at all.
    fn seed(&mut self, scope: NetnsScope) {
        if !self.matching.by_owner() {
            return;
        }
        match pipeline::snapshot(scope) {
            Ok((sockets, _)) => {
                let inodes = sockets.iter().map(|s| s.inode).filter(|&i| i != 0);
                let scan = crate::diag::owners_of(&inodes.collect());
                let n = self.owners.seed(&self.matching, &sockets, &scan);
                tracing::debug!("following {n} sockets the matching processes hold");
                if scan.unreadable > 0 && crate::diag::naming_warning().is_some() {
                    tracing::warn!(
                        event = "owners_unreadable",
                        "the descriptors of {} processes could not be read (other users': \
                         grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH): their sockets open \
                         before now show only from the next move a syscall of theirs makes",
                        scan.unreadable
                    );
                }
            }
            Err(e) => tracing::warn!(
                event = "owners_unlisted",
                "the sockets the matching processes hold now could not be listed ({e:#}): only \
                 those they open or accept from now on are shown"
            ),
        }
    }

    /// True when a leak flag change passes.
    pub fn keep_leak(&self, c: &Change) -> bool {
        let want = match c {
            Change::Raised(_) => Wanted::LeakFlagged,
            Change::Cleared(_) => Wanted::LeakCleared,
        };
        self.matching.flag(c.flag()) && (self.kinds.is_empty() || self.kinds.contains(&want))
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
    let states = &args.matching.states;
    if states.contains(&TcpState::TimeWait) {
        // Alone, nothing could pass; beside other states, those still do.
        if states.iter().all(|&s| s == TcpState::TimeWait) {
            anyhow::bail!("{NO_TIME_WAIT_EVENT}");
        }
        tracing::warn!(event = "no_time_wait_event", "{NO_TIME_WAIT_EVENT}");
    }
    if let Some(said) = args.matching.absent_pids_said() {
        tracing::warn!(
            event = "pid_absent",
            "{said}: --pid names the host's pids, as ps on the host shows them, and its events \
             come only once such a process runs"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(stream_events(args))
}

/// Stdout as a file of its own (a duplicate of descriptor 1): written
/// with plain `write(2)`s, without the standard library's line buffer, so
/// that each write's count is what the reader's pipe took.
fn stdout_file() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsFd as _;
    let fd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stdout")?;
    Ok(std::fs::File::from(fd))
}

async fn stream_events(args: EventsArgs) -> anyhow::Result<i32> {
    // Before anything slow: a signal during start stops it cleanly once up.
    let signal = pipeline::stop_signal()?;
    let mut filter = Filter::new(args.matching.clone(), args.kinds.clone());
    let leaks = !(args.no_leaks || filter.excludes_leaks());
    let mut pipeline = Pipeline::new(pipeline_config(&args, leaks)?, ())?;
    // The programs are attached: a socket made from here on is seen born.
    filter.seed(pipeline.scope());
    if let Some(warning) = crate::diag::naming_warning().filter(|_| leaks) {
        tracing::warn!(event = "owners_unreadable", "{warning}");
    }
    let mut p = Printer {
        out: out::Detached::watching(stdout_file()?, libc::STDOUT_FILENO)
            .context("starting the stdout writer")?,
        filter,
        seen: 0,
        printed: 0,
        leak_lines: 0,
        err: None,
        containers: Arc::default(),
        clock: WallClock::now(),
    };
    pipeline
        .adopt(&mut p)
        .await
        .context("listing TCP sockets with sock_diag")?;
    let duration = args.duration;
    let stop = async move {
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = signal => {}
            () = deadline => {}
        }
    };
    tracing::info!("tracing TCP events; stop with Ctrl-C");

    pipeline.run(&mut p, stop).await?;
    // A closed pipe is counted below; another failure ends the command.
    p.flush()?;
    let seen = p.seen;
    let mut dropped = p.out.dropped;
    match p.out.finish() {
        Ok(unread) if unread.bytes > 0 => {
            let how = if unread.gone {
                "stdout's reader went away"
            } else {
                "stdout stopped reading"
            };
            tracing::warn!(
                event = "stdout_unread",
                "{how}: {} line{} of events ({} bytes) never reached it",
                unread.lines,
                if unread.lines == 1 { "" } else { "s" },
                unread.bytes
            );
            dropped += unread.lines;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(
            event = "stdout_failed",
            "writing events to stdout failed: {e}"
        ),
    }
    let printed = p.printed.saturating_sub(dropped);
    let counters = pipeline.counters();
    let leak_lines = match p.leak_lines {
        0 => String::new(),
        1 => " (1 of them a leak flag change)".to_owned(),
        n => format!(" ({n} of them leak flag changes)"),
    };
    // Events of namespaces out of --netns are left before they are read.
    let of = match pipeline.scope().only() {
        Some(inode) => format!(" in network namespace {inode}"),
        None => String::new(),
    };
    tracing::info!(
        "{seen} kernel events read{of}, {printed} lines printed{leak_lines}{}, {} lost in the kernel \
         (ring buffer full: {}, read errors: {}, skipped while the program ran on the same \
         CPU: {}), {} undecodable",
        if dropped > 0 {
            format!(" ({dropped} not printed: stdout did not keep up, or went away)")
        } else {
            String::new()
        },
        counters.lost(),
        counters.ringbuf_full,
        counters.read_errors,
        counters.recursion_misses,
        pipeline.decode_errors()
    );
    Ok(0)
}
