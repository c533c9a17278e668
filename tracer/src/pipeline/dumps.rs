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
use std::collections::{BTreeMap, BTreeSet};

use tokio::task::JoinHandle;

use super::{
    clock::{monotonic_ns, thread_cpu_ns},
    discover::discover,
    netns::NetnsScope,
};
use crate::{
    container::Resolver,
    diag::{
        Datagram, DiagError, DumpOptions, Dumper, NetnsHandle, netstat::TimeWaitLimit,
        portrange::PortSysctls,
    },
    snapshot::SocketSnapshot,
};

mod found;

pub use found::{Census, Dump};

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
/// `tracer leaks` without an agent: every socket, no `tcp_info`.
const SNAPSHOT: DumpOptions = DumpOptions {
    with_info: false,
    without_time_wait: false,
};

/// One snapshot of every TCP socket in `scope` (every namespace in it), for
/// a one-shot report, and what was found about namespaces.
pub fn snapshot(scope: NetnsScope) -> anyhow::Result<(Vec<SocketSnapshot>, Census)> {
    let (kit, dump) = Kit::new(scope, SNAPSHOT, SNAPSHOT).dump(false);
    dump.result?;
    Ok((kit.buf, dump.census))
}

/// One namespace's dumpers, opened on first use.
struct Ns {
    /// `None`: the namespace tracer runs in (no setns needed).
    handle: Option<NetnsHandle>,
    live: Option<Dumper>,
    full: Option<Dumper>,
    /// Its `tcp_max_tw_buckets`, opened inside it.
    tw_limit: Option<TimeWaitLimit>,
    /// Its ephemeral port settings, opened inside it.
    ports: Option<PortSysctls>,
    /// A dump of it has been handed out (the pipeline adopted it).
    adopted: bool,
}

impl Ns {
    /// Append its sockets to `out`; with `capture`, also return the
    /// datagrams they came in (empty otherwise).
    fn append(
        &mut self,
        full: bool,
        opts: DumpOptions,
        capture: bool,
        out: &mut Vec<SocketSnapshot>,
    ) -> Result<Vec<Datagram>, DiagError> {
        let slot = if full { &mut self.full } else { &mut self.live };
        let dumper = match slot {
            Some(d) => d,
            None => slot.insert(match &self.handle {
                None => Dumper::new(opts)?,
                Some(h) => Dumper::inside(opts, h.clone())?,
            }),
        };
        dumper.set_capture(capture);
        dumper.dump_append(out)?;
        Ok(dumper.take_captured())
    }
}

/// The dumpers and the buffer they fill, moved to a blocking thread for a
/// dump and handed back for reuse.
struct Kit {
    scope: NetnsScope,
    live_opts: DumpOptions,
    full_opts: DumpOptions,
    spaces: BTreeMap<u32, Ns>,
    refused: BTreeSet<u32>,
    /// Every namespace in scope the last discovery found, followed or not.
    known: BTreeSet<u32>,
    /// Names the container of each namespace, once per container.
    resolver: Resolver,
    buf: Vec<SocketSnapshot>,
    /// Keep each dump's datagrams ([`Dump::datagrams`]).
    capture: bool,
}

impl Kit {
    fn new(scope: NetnsScope, live_opts: DumpOptions, full_opts: DumpOptions) -> Kit {
        Kit {
            scope,
            live_opts,
            full_opts,
            spaces: BTreeMap::new(),
            refused: BTreeSet::new(),
            known: BTreeSet::new(),
            resolver: Resolver::default(),
            buf: Vec::new(),
            capture: false,
        }
    }

    /// Find the namespaces in scope, open new ones, drop vanished ones.
    /// Returns the inodes that vanished (followed ones, and found ones that
    /// could not be followed: their sockets are gone too) and the census
    /// so far.
    fn refresh(&mut self) -> (Vec<u32>, Census) {
        let own = self.scope.own_inode();
        let mut census = Census::default();
        let mut wanted: BTreeMap<u32, Option<std::path::PathBuf>> = BTreeMap::new();
        match self.scope {
            NetnsScope::One { own: true, inode } => {
                wanted.insert(inode, None);
            }
            _ => {
                let found = discover();
                census.unreadable_processes = found.unreadable;
                census.known = found.paths.keys().copied().collect();
                let mut pids = found.pids;
                pids.retain(|&inode, _| self.scope.covers(inode));
                self.resolver.update(&pids);
                census.containers = self.resolver.map();
                census.resolver = self.resolver.stats();
                for (inode, path) in found.paths {
                    if self.scope.covers(inode) {
                        wanted.insert(inode, (inode != own).then_some(path));
                    }
                }
            }
        }
        let mut gone: BTreeSet<u32> = self
            .spaces
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for g in &gone {
            self.spaces.remove(g);
        }
        let known: BTreeSet<u32> = wanted.keys().copied().collect();
        gone.extend(self.known.difference(&known));
        self.known = known;
        self.refused.retain(|r| wanted.contains_key(r));
        for (inode, path) in wanted {
            if self.spaces.contains_key(&inode) || self.refused.contains(&inode) {
                continue;
            }
            if self.spaces.len() >= MAX_NETNS {
                census.over_cap += 1;
                continue;
            }
            let handle = match path {
                None => None,
                // Gone since the scan: the next one will not find it.
                Some(p) => match NetnsHandle::open(&p) {
                    Ok(h) if h.inode() == inode => Some(h),
                    _ => continue,
                },
            };
            let tw_limit = match &handle {
                None => TimeWaitLimit::open().ok(),
                Some(h) => h.run_inside(TimeWaitLimit::open).ok().and_then(Result::ok),
            };
            let ports = match &handle {
                None => PortSysctls::open().ok(),
                Some(h) => h.run_inside(PortSysctls::open).ok().and_then(Result::ok),
            };
            self.spaces.insert(
                inode,
                Ns {
                    handle,
                    live: None,
                    full: None,
                    tw_limit,
                    ports,
                    adopted: false,
                },
            );
        }
        (gone.into_iter().collect(), census)
    }

    /// Look for namespaces without dumping any: those that vanished are
    /// reported in `gone`, new ones wait (unadopted) for the next dump.
    /// Costs a scan of `/proc`, not a walk of the kernel's socket table
    /// per namespace, so it runs every interval whatever the budget.
    fn survey(mut self) -> (Kit, Dump) {
        let start_ns = monotonic_ns();
        let cpu_before = thread_cpu_ns();
        let (gone, mut census) = self.refresh();
        self.buf.clear();
        census.tracked = self.spaces.len();
        census.refused = self.refused.iter().copied().collect();
        let dump = Dump {
            start_ns,
            cpu_ns: thread_cpu_ns().saturating_sub(cpu_before),
            full: false,
            survey: true,
            unadopted: self.spaces.values().any(|ns| !ns.adopted),
            tw_limits: Vec::new(),
            port_settings: Vec::new(),
            result: Ok(()),
            covered: Vec::new(),
            fresh_from: 0,
            fresh: Vec::new(),
            gone,
            datagrams: Vec::new(),
            census,
        };
        (self, dump)
    }

    fn dump(mut self, full: bool) -> (Kit, Dump) {
        let start_ns = monotonic_ns();
        let cpu_before = thread_cpu_ns();
        let (gone, mut census) = self.refresh();
        let opts = if full { self.full_opts } else { self.live_opts };
        self.buf.clear();
        let (mut covered, mut fresh, mut fresh_from) = (Vec::new(), Vec::new(), 0);
        let mut datagrams = Vec::new();
        let mut error = None;
        for adopted in [true, false] {
            if !adopted {
                fresh_from = self.buf.len();
            }
            for (&inode, ns) in self
                .spaces
                .iter_mut()
                .filter(|(_, ns)| ns.adopted == adopted)
            {
                let before = self.buf.len();
                match ns.append(full, opts, self.capture, &mut self.buf) {
                    Ok(kept) => {
                        if self.capture {
                            datagrams.push((inode, kept));
                        }
                        if adopted {
                            covered.push(inode);
                        } else {
                            ns.adopted = true;
                            fresh.push(inode);
                        }
                    }
                    Err(e) => {
                        self.buf.truncate(before);
                        if matches!(e, DiagError::Enter(_)) {
                            self.refused.insert(inode);
                        } else {
                            error = Some(e);
                        }
                    }
                }
            }
        }
        let refused = &self.refused;
        self.spaces.retain(|inode, _| !refused.contains(inode));
        census.tracked = self.spaces.len();
        census.refused = self.refused.iter().copied().collect();
        let cpu_ns = thread_cpu_ns().saturating_sub(cpu_before);
        let tw_limits = self
            .spaces
            .iter()
            .filter(|_| full)
            .filter_map(|(&inode, ns)| Some((inode, ns.tw_limit.as_ref()?.read()?)))
            .collect();
        let port_settings = self
            .spaces
            .iter()
            .filter_map(|(&inode, ns)| Some((inode, ns.ports.as_ref()?.read()?)))
            .collect();
        let result = match error {
            Some(e) if covered.is_empty() && fresh.is_empty() => Err(anyhow::Error::from(e)),
            _ => Ok(()),
        };
        let dump = Dump {
            start_ns,
            cpu_ns,
            full,
            survey: false,
            unadopted: false,
            tw_limits,
            port_settings,
            result,
            covered,
            fresh_from,
            fresh,
            gone,
            datagrams,
            census,
        };
        (self, dump)
    }
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

    /// Dump on this thread and wait for it (adoption at start).
    pub fn dump_now(&mut self, full: bool) -> Dump {
        let kit = self.take_kit();
        let (kit, dump) = kit.dump(full);
        self.kit = Some(kit);
        dump
    }

    /// Start a dump on a blocking thread; [`DumpSource::finished`] says
    /// when it is done.
    pub fn start(&mut self, full: bool) {
        let kit = self.take_kit();
        self.job = Some(tokio::task::spawn_blocking(move || kit.dump(full)));
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
