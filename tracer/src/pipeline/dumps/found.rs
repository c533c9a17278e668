//! What a dump or a survey found: the namespaces and the outcome.
use std::sync::Arc;

use crate::{
    container::{ContainerMap, ResolverStats},
    diag::Datagram,
};

/// What the dump source knows about namespaces after a dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Namespaces with dumpers (followed).
    pub tracked: usize,
    /// Namespaces that could not be entered (no `CAP_SYS_ADMIN`), sorted.
    pub refused: Vec<u32>,
    /// Namespaces found beyond [`MAX_NETNS`](super::MAX_NETNS).
    pub over_cap: usize,
    /// Namespaces followed that have no TCP hash table of their own (see
    /// [`owns_tcp_table`](crate::diag::netstat::owns_tcp_table)): a dump
    /// of each walks every TCP socket of the host.
    pub sharing_host_table: usize,
    /// Every namespace found (sorted), followed or not.
    pub known: Vec<u32>,
    /// Processes whose `/proc/<pid>/ns/net` could not be read.
    pub unreadable_processes: u32,
    /// The container of each namespace in scope that has one.
    pub containers: Arc<ContainerMap>,
    /// The container resolver's counters.
    pub resolver: ResolverStats,
}

impl Census {
    /// Processes whose namespace could not be read for want of
    /// `CAP_SYS_PTRACE` ([`unread`](crate::pipeline::discover::unread)).
    pub fn unread(&self) -> u32 {
        crate::pipeline::discover::unread(self.unreadable_processes)
    }
}

/// What a one-shot answer (`tracer leaks`, `tracer port`) could not look
/// at, for `n` processes [`Census::unread`]: "N processes' network
/// namespaces could not be read (...)"; `None` for 0.
pub fn unread_said(n: u32) -> Option<String> {
    (n > 0).then(|| {
        format!(
            "{n} processes' network namespaces could not be read (that needs CAP_SYS_PTRACE), so a \
             namespace only they hold was not looked at"
        )
    })
}

/// What one dump found; the sockets stay in [`DumpSource::sockets`](super::DumpSource::sockets).
#[derive(Debug)]
pub struct Dump {
    /// Monotonic ns when the dump started.
    pub start_ns: u64,
    /// CPU time the dumping thread spent on it: discovery and every
    /// namespace's walk (mostly the kernel's).
    pub cpu_ns: u64,
    /// TIME_WAIT sockets included.
    pub full: bool,
    /// For a live dump that walked only the listening tables of the
    /// namespaces adopted earlier and looked sockets up one by one
    /// ([`DumpSource::look_up`](super::DumpSource::look_up)): the cookies
    /// looked up, sorted, the sockets it can tell about beside the
    /// listeners. `None` for a walk.
    pub looked_up: Option<Vec<u64>>,
    /// Only a look for namespaces ([`DumpSource::survey`](super::DumpSource::survey)): no sockets.
    pub survey: bool,
    /// A survey found namespaces no dump has adopted yet.
    pub unadopted: bool,
    /// `tcp_max_tw_buckets` of each namespace followed (full dumps only).
    pub tw_limits: Vec<(u32, u32)>,
    /// Ephemeral port settings of each namespace followed (not in surveys).
    pub port_settings: Vec<(u32, crate::forecast::PortSettings)>,
    /// Whether the dump succeeded (in at least one namespace).
    pub result: anyhow::Result<()>,
    /// Namespaces adopted earlier and dumped now: their sockets are
    /// `sockets()[..fresh_from]`, to reconcile.
    pub covered: Vec<u32>,
    /// Where the sockets of namespaces dumped for the first time begin.
    pub fresh_from: usize,
    /// Namespaces dumped for the first time: `sockets()[fresh_from..]`, to adopt.
    pub fresh: Vec<u32>,
    /// Monotonic ns when the walk of the first of them began (after the
    /// namespaces adopted earlier were walked): the events stamped before
    /// it are their sockets' history, applied before they are adopted.
    pub fresh_walk_ns: u64,
    /// Namespaces that vanished since the last dump: their sockets are gone.
    pub gone: Vec<u32>,
    /// When recording ([`DumpSource::capture`](super::DumpSource::capture)):
    /// each namespace dumped and the datagrams its sockets came in, in the
    /// order of the sockets (`covered`, then `fresh`). Empty otherwise.
    pub datagrams: Vec<(u32, Vec<Datagram>)>,
    /// The namespaces found, followed, refused.
    pub census: Census,
}
