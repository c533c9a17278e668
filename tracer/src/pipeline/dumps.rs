//! The one source of sock_diag dumps: a dumper per network namespace in
//! scope, the buffer they fill, and the blocking thread a dump runs on
//! while events keep flowing. `tracer leaks` without an agent takes its
//! snapshot here too.
//!
//! Every dump first looks for namespaces ([`super::discover`]): a new one
//! gets its dumpers (opened inside it), a vanished one loses them (they
//! would keep it alive). Then each namespace is dumped in turn into one
//! buffer, those already adopted first, new ones last, so the pipeline
//! reconciles the former and adopts the latter. The thread's CPU time
//! covers discovery and every namespace's walk: the budget is for the sum.
//!
//! When the pipeline records ([`DumpSource::capture`]), the dumpers keep
//! the datagrams the kernel sent, and each [`Dump`] carries them beside
//! the sockets; otherwise nothing is kept or copied.
use tokio::task::JoinHandle;

use self::kit::Kit;
use super::netns::NetnsScope;
use crate::{
    diag::DumpOptions,
    snapshot::{Lookup, SocketSnapshot},
};

mod found;
mod kit;

pub use found::{Census, Dump, unread_said};

/// Most namespaces followed at once; more are counted in
/// [`Census::over_cap`]. Each costs two netlink sockets and their buffers
/// (8 KiB or more each).
pub const MAX_NETNS: usize = 512;

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
/// `tracer leaks` and `tracer port` without an agent: every socket, with
/// `tcp_info` (what a snapshot can judge a CLOSE_WAIT socket by).
const SNAPSHOT: DumpOptions = DumpOptions {
    with_info: true,
    without_time_wait: false,
};

/// One snapshot of every TCP socket in `scope` (every namespace in it), for
/// a one-shot report, and what was found about namespaces.
pub fn snapshot(scope: NetnsScope) -> anyhow::Result<(Vec<SocketSnapshot>, Census)> {
    let (kit, dump) = Kit::new(scope, SNAPSHOT, SNAPSHOT).dump(false, None);
    dump.result?;
    Ok((kit.buf, dump.census))
}

/// Where dumps come from: one per pipeline, for its [`NetnsScope`].
pub struct DumpSource {
    scope: NetnsScope,
    /// The dumpers, unless a dump has them on its thread.
    kit: Option<Kit>,
    /// The dump in progress.
    job: Option<JoinHandle<(Kit, Dump)>>,
    /// Dumps keep their datagrams.
    capture: bool,
}

impl DumpSource {
    /// A dump source for `scope`; sockets are opened by the first dump.
    pub fn open(scope: NetnsScope) -> DumpSource {
        DumpSource {
            scope,
            kit: Some(Kit::new(scope, LIVE, FULL)),
            job: None,
            capture: false,
        }
    }

    /// From the next dump on, keep the datagrams the kernel sent in each
    /// [`Dump::datagrams`] (for a recording). Off by default: a dump then
    /// copies nothing.
    pub fn capture(&mut self) {
        self.capture = true;
    }

    /// Start a dump on a blocking thread; [`DumpSource::finished`] says
    /// when it is done.
    pub fn start(&mut self, full: bool) {
        let kit = self.take_kit();
        self.job = Some(tokio::task::spawn_blocking(move || kit.dump(full, None)));
    }

    /// Start a live dump that looks `lookups` up one by one (and walks the
    /// listening tables) instead of walking every socket: see
    /// [`Engine::lookups`](crate::engine::Engine::lookups) and
    /// [`Detector::lookups`](crate::leaks::Detector::lookups). `lookups` need
    /// not be sorted.
    pub fn look_up(&mut self, mut lookups: Vec<(u32, Lookup)>) {
        // A socket may be named twice (a flagged one the engine follows).
        lookups.sort_unstable_by_key(|(netns, p)| (*netns, p.cookie));
        lookups.dedup_by_key(|(_, p)| p.cookie);
        let kit = self.take_kit();
        self.job = Some(tokio::task::spawn_blocking(move || {
            kit.dump(false, Some(&lookups))
        }));
    }

    /// Start a survey (a look for namespaces, no sockets) on a blocking
    /// thread; it ends like a dump, with `survey` set.
    pub fn survey(&mut self) {
        let kit = self.take_kit();
        self.job = Some(tokio::task::spawn_blocking(move || kit.survey()));
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
        let (kit, dump) = anyhow::Context::context(joined, "sock_diag dump task")?;
        self.kit = Some(kit);
        Ok(dump)
    }

    /// The sockets of the last dump (empty while one runs).
    pub fn sockets(&self) -> &[SocketSnapshot] {
        self.kit.as_ref().map_or(&[], |k| &k.buf)
    }

    /// The dumpers, or new ones when a dump task was lost (it panicked).
    fn take_kit(&mut self) -> Kit {
        let mut kit = self
            .kit
            .take()
            .unwrap_or_else(|| Kit::new(self.scope, LIVE, FULL));
        kit.capture = self.capture;
        kit
    }
}
