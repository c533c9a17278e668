//! The dumpers of every namespace in scope and the buffer they fill
//! ([`Kit`]), moved to a blocking thread for each dump or survey and
//! handed back: discovery, a dumper pair per namespace opened inside it,
//! and one walk of each namespace in turn, adopted ones first.
use std::collections::{BTreeMap, BTreeSet};

use super::{Census, Dump, MAX_NETNS};
use crate::{
    container::Resolver,
    diag::{
        Datagram, DiagError, DumpOptions, Dumper, NetnsHandle,
        netstat::{TimeWaitLimit, owns_tcp_table},
        portrange::PortSysctls,
    },
    pipeline::{
        clock::{monotonic_ns, thread_cpu_ns},
        discover::discover,
        netns::NetnsScope,
    },
    snapshot::{Lookup, SocketSnapshot},
    tcp::TcpState,
};

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
    /// It has no TCP hash table of its own: each dump of it walks the
    /// initial namespace's, every TCP socket of the host.
    shares_table: bool,
}

impl Ns {
    /// Its dumper for full (or live) dumps, opened inside it on first use.
    fn dumper(&mut self, full: bool, opts: DumpOptions) -> Result<&mut Dumper, DiagError> {
        let slot = if full { &mut self.full } else { &mut self.live };
        Ok(match slot {
            Some(d) => d,
            None => slot.insert(match &self.handle {
                None => Dumper::new(opts)?,
                Some(h) => Dumper::inside(opts, h.clone())?,
            }),
        })
    }

    /// Append its sockets to `out`, their timers counted from the dump's
    /// `start_ns`; with `capture`, also return the datagrams they came in
    /// (empty otherwise).
    fn append(
        &mut self,
        full: bool,
        opts: DumpOptions,
        capture: bool,
        start_ns: u64,
        out: &mut Vec<SocketSnapshot>,
    ) -> Result<Vec<Datagram>, DiagError> {
        let dumper = self.dumper(full, opts)?;
        dumper.set_capture(capture);
        dumper.timers_from(start_ns);
        dumper.dump_append(out)?;
        Ok(dumper.take_captured())
    }

    /// Append its listening sockets and those of `lookups` the kernel
    /// still has, but timewait sockets in TIME_WAIT proper (a live walk
    /// leaves those out too).
    fn look_up(
        &mut self,
        opts: DumpOptions,
        lookups: &[Lookup],
        start_ns: u64,
        out: &mut Vec<SocketSnapshot>,
    ) -> Result<(), DiagError> {
        let dumper = self.dumper(false, opts)?;
        dumper.set_capture(false);
        dumper.timers_from(start_ns);
        dumper.listeners_append(out)?;
        let from = out.len();
        dumper.lookup_append(lookups, out)?;
        let mut i = from;
        while i < out.len() {
            if out[i].timewait && out[i].state == TcpState::TimeWait {
                out.swap_remove(i);
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

/// What a namespace's dumps need from its `/proc/sys`, opened once from
/// inside it when it is first followed: its `tcp_max_tw_buckets`, its
/// ephemeral port settings, and whether it has a TCP table of its own.
fn settings() -> (Option<TimeWaitLimit>, Option<PortSysctls>, Option<bool>) {
    (
        TimeWaitLimit::open().ok(),
        PortSysctls::open().ok(),
        owns_tcp_table(),
    )
}

/// The dumpers and the buffer they fill, moved to a blocking thread for a
/// dump and handed back for reuse.
pub(super) struct Kit {
    scope: NetnsScope,
    live_opts: DumpOptions,
    full_opts: DumpOptions,
    spaces: BTreeMap<u32, Ns>,
    refused: BTreeSet<u32>,
    /// Every namespace in scope the last discovery found, followed or not.
    known: BTreeSet<u32>,
    /// The one namespace `--netns` chose, held open from the first time
    /// it is found until tracer exits. The kernel hands a freed
    /// namespace's inode to the next namespace made, so without it the
    /// inode tracer follows (here, in the kernel's event filter, and in
    /// [`Dump::gone`]) could come to name another namespace, a new
    /// container's, once its own was gone.
    pin: Option<NetnsHandle>,
    /// Names the container of each namespace, once per container.
    resolver: Resolver,
    pub(super) buf: Vec<SocketSnapshot>,
    /// Keep each dump's datagrams ([`Dump::datagrams`]).
    pub(super) capture: bool,
}

impl Kit {
    pub(super) fn new(scope: NetnsScope, live_opts: DumpOptions, full_opts: DumpOptions) -> Kit {
        Kit {
            scope,
            live_opts,
            full_opts,
            spaces: BTreeMap::new(),
            refused: BTreeSet::new(),
            known: BTreeSet::new(),
            pin: None,
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
            // One trip inside for all three (a thread and two setns each).
            let (tw_limit, ports, owns_table) = match &handle {
                None => settings(),
                Some(h) => h.run_inside(settings).unwrap_or_default(),
            };
            if self.pin.is_none() && self.scope.only() == Some(inode) {
                self.pin = handle.clone();
            }
            self.spaces.insert(
                inode,
                Ns {
                    handle,
                    live: None,
                    full: None,
                    tw_limit,
                    ports,
                    adopted: false,
                    shares_table: owns_table == Some(false),
                },
            );
        }
        (gone.into_iter().collect(), census)
    }

    /// The namespaces followed, refused, and sharing the initial
    /// namespace's TCP table, into `census`.
    fn count(&self, census: &mut Census) {
        census.tracked = self.spaces.len();
        census.refused = self.refused.iter().copied().collect();
        census.sharing_host_table = self.spaces.values().filter(|ns| ns.shares_table).count();
    }

    /// Look for namespaces without dumping any: those that vanished are
    /// reported in `gone`, new ones wait (unadopted) for the next dump.
    /// Costs a scan of `/proc`, not a walk of the kernel's socket table
    /// per namespace, so it runs every interval whatever the budget.
    pub(super) fn survey(mut self) -> (Kit, Dump) {
        let start_ns = monotonic_ns();
        let cpu_before = thread_cpu_ns();
        let (gone, mut census) = self.refresh();
        self.buf.clear();
        self.count(&mut census);
        let dump = Dump {
            start_ns,
            cpu_ns: thread_cpu_ns().saturating_sub(cpu_before),
            full: false,
            looked_up: None,
            survey: true,
            unadopted: self.spaces.values().any(|ns| !ns.adopted),
            tw_limits: Vec::new(),
            port_settings: Vec::new(),
            result: Ok(()),
            covered: Vec::new(),
            fresh_from: 0,
            fresh: Vec::new(),
            fresh_walk_ns: start_ns,
            gone,
            datagrams: Vec::new(),
            census,
        };
        (self, dump)
    }

    /// Dump every namespace in scope: a walk of each (`full`: with
    /// TIME_WAIT), or with `lookups` (a live dump; each `(netns, lookup)`
    /// sorted by namespace) a walk of the listening table of each
    /// namespace adopted earlier and a lookup of each of them. Namespaces
    /// dumped for the first time are walked either way: they are adopted.
    pub(super) fn dump(mut self, full: bool, lookups: Option<&[(u32, Lookup)]>) -> (Kit, Dump) {
        let start_ns = monotonic_ns();
        let cpu_before = thread_cpu_ns();
        let (gone, mut census) = self.refresh();
        let opts = if full { self.full_opts } else { self.live_opts };
        let looked_up = lookups.map(|lookups| {
            let mut cookies: Vec<u64> = lookups.iter().map(|(_, p)| p.cookie).collect();
            cookies.sort_unstable();
            cookies
        });
        self.buf.clear();
        let (mut covered, mut fresh, mut fresh_from) = (Vec::new(), Vec::new(), 0);
        let mut fresh_walk_ns = start_ns;
        let mut datagrams = Vec::new();
        let mut error = None;
        for adopted in [true, false] {
            if !adopted {
                fresh_from = self.buf.len();
                fresh_walk_ns = monotonic_ns();
            }
            for (&inode, ns) in self
                .spaces
                .iter_mut()
                .filter(|(_, ns)| ns.adopted == adopted)
            {
                let before = self.buf.len();
                let done = match lookups {
                    Some(lookups) if adopted => {
                        // Records of tracer's own namespace may carry 0 (a
                        // kernel whose events name no namespace).
                        let own = (inode == self.scope.own_inode()).then_some(0);
                        let mine: Vec<Lookup> = [Some(inode), own]
                            .into_iter()
                            .flatten()
                            .flat_map(|n| {
                                let from = lookups.partition_point(|(k, _)| *k < n);
                                let to = lookups.partition_point(|(k, _)| *k <= n);
                                lookups[from..to].iter().map(|(_, p)| *p)
                            })
                            .collect();
                        ns.look_up(opts, &mine, start_ns, &mut self.buf)
                            .map(|()| Vec::new())
                    }
                    _ => ns.append(full, opts, self.capture, start_ns, &mut self.buf),
                };
                match done {
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
        self.count(&mut census);
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
        // The reconcile first applies the events in the lanes, all but the
        // last `HOLD_BACK` of them. Waiting that long past the walk puts
        // every event of every socket it listed among them: a socket made
        // in the walk's last moment was otherwise adopted as `missed`
        // (about one per 20 s of peak churn).
        std::thread::sleep(crate::ingest::HOLD_BACK);
        let dump = Dump {
            start_ns,
            cpu_ns,
            full,
            looked_up,
            survey: false,
            unadopted: false,
            tw_limits,
            port_settings,
            result,
            covered,
            fresh_from,
            fresh,
            fresh_walk_ns,
            gone,
            datagrams,
            census,
        };
        (self, dump)
    }
}
