//! The one source of sock_diag dumps: the dumpers for the scope, the buffer
//! they fill, and the blocking thread a dump runs on while events keep
//! flowing. `tracer leaks` without an agent takes its snapshot here too.
use anyhow::Context as _;
use tokio::task::JoinHandle;

use super::{
    clock::{monotonic_ns, thread_cpu_ns},
    netns::NetnsScope,
};
use crate::diag::{DiagError, DiagSocket, DumpOptions, Dumper, netstat};

/// Reconcile dumps carry `tcp_info`: the half-open and idle detectors need it.
/// Every reconcile: every state but TIME_WAIT (cheap: TIME_WAIT sockets
/// are the bulk of a busy host, and no detector looks at them).
const LIVE: DumpOptions = DumpOptions {
    with_info: true,
    without_time_wait: true,
};
/// Every TIME_WAIT interval: everything.
const FULL: DumpOptions = DumpOptions {
    with_info: true,
    without_time_wait: false,
};
/// `tracer leaks` without an agent: every socket, no `tcp_info`.
const SNAPSHOT: DumpOptions = DumpOptions {
    with_info: false,
    without_time_wait: false,
};

/// One dump of every TCP socket in `scope`, for a one-shot report.
pub fn snapshot(scope: NetnsScope) -> Result<Vec<DiagSocket>, DiagError> {
    scope.snapshot(SNAPSHOT)
}

/// The dumpers and the buffer they fill, moved to a blocking thread for a
/// dump and handed back for reuse.
struct Kit {
    live: Dumper,
    full: Dumper,
    buf: Vec<DiagSocket>,
}

impl Kit {
    fn open(scope: NetnsScope) -> anyhow::Result<Kit> {
        Ok(Kit {
            live: scope
                .dumper(LIVE)
                .context("listing TCP sockets with sock_diag")?,
            full: scope
                .dumper(FULL)
                .context("listing TCP sockets with sock_diag")?,
            buf: Vec::new(),
        })
    }

    fn dump(mut self, full: bool) -> (Kit, Dump) {
        let overflow_before = netstat::time_wait_overflows();
        let start_ns = monotonic_ns();
        let cpu_before = thread_cpu_ns();
        let dumper = if full { &mut self.full } else { &mut self.live };
        let result = dumper.dump_into(&mut self.buf).map_err(anyhow::Error::from);
        let cpu_ns = thread_cpu_ns().saturating_sub(cpu_before);
        let overflow_after = netstat::time_wait_overflows();
        let dump = Dump {
            start_ns,
            cpu_ns,
            full,
            overflow_before,
            overflow_after,
            result,
        };
        (self, dump)
    }
}

/// What one dump found; the sockets stay in [`DumpSource::sockets`].
#[derive(Debug)]
pub struct Dump {
    /// Monotonic ns when the dump started.
    pub start_ns: u64,
    /// CPU time the dumping thread spent on it (mostly the kernel's walk).
    pub cpu_ns: u64,
    /// TIME_WAIT sockets included.
    pub full: bool,
    /// The kernel's TIME_WAIT overflow counter just before the dump.
    pub overflow_before: Option<u64>,
    /// The same counter just after.
    pub overflow_after: Option<u64>,
    /// Whether the dump succeeded.
    pub result: anyhow::Result<()>,
}

/// Where dumps come from: one per pipeline, for its [`NetnsScope`].
pub struct DumpSource {
    scope: NetnsScope,
    /// The dumpers, unless a dump has them on its thread.
    kit: Option<Kit>,
    /// The dump in progress.
    job: Option<JoinHandle<(Kit, Dump)>>,
}

impl DumpSource {
    /// Open the sock_diag sockets for `scope`.
    pub fn open(scope: NetnsScope) -> anyhow::Result<DumpSource> {
        Ok(DumpSource {
            scope,
            kit: Some(Kit::open(scope)?),
            job: None,
        })
    }

    /// Dump on this thread and wait for it (adoption at start).
    pub fn dump_now(&mut self, full: bool) -> anyhow::Result<Dump> {
        let kit = self.take_kit()?;
        let (kit, dump) = kit.dump(full);
        self.kit = Some(kit);
        Ok(dump)
    }

    /// Start a dump on a blocking thread; [`DumpSource::finished`] says
    /// when it is done.
    pub fn start(&mut self, full: bool) -> anyhow::Result<()> {
        let kit = self.take_kit()?;
        self.job = Some(tokio::task::spawn_blocking(move || kit.dump(full)));
        Ok(())
    }

    /// True while a dump runs.
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// Wait for the dump in progress (forever when none is). Cancel-safe:
    /// dropped before the end, the dump stays in progress.
    pub async fn finished(&mut self) -> anyhow::Result<Dump> {
        let Some(job) = self.job.as_mut() else {
            return std::future::pending().await;
        };
        let joined = job.await;
        self.job = None;
        let (kit, dump) = joined.context("sock_diag dump task")?;
        self.kit = Some(kit);
        Ok(dump)
    }

    /// The sockets of the last dump (empty while one runs).
    pub fn sockets(&self) -> &[DiagSocket] {
        self.kit.as_ref().map_or(&[], |k| &k.buf)
    }

    fn take_kit(&mut self) -> anyhow::Result<Kit> {
        match self.kit.take() {
            Some(k) => Ok(k),
            None => Kit::open(self.scope),
        }
    }
}
