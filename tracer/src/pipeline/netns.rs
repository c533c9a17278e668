//! Which network namespaces the pipeline follows: one [`NetnsScope`] value
//! decides both which kernel events reach the engine and where sock_diag
//! dumps come from, so the two always agree.
//!
//! Today the scope is the namespace the process runs in, the only one a
//! sock_diag socket opened here can see.
use std::os::unix::fs::MetadataExt as _;

use crate::{
    diag::{DiagError, DiagSocket, DumpOptions, Dumper},
    event::SockEvent,
};

/// The network namespaces the pipeline follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsScope {
    /// Inode of the namespace (0: unreadable, then every event passes).
    inode: u32,
}

impl NetnsScope {
    /// The namespace this process runs in: what sock_diag answers for.
    pub fn own() -> NetnsScope {
        let inode = std::fs::metadata("/proc/self/ns/net")
            .map(|m| m.ino() as u32)
            .unwrap_or(0);
        NetnsScope { inode }
    }

    /// The namespace's inode, as the kernel programs report it in `netns`
    /// (0 if unreadable).
    pub fn inode(&self) -> u32 {
        self.inode
    }

    /// True for events of sockets in scope (or of unknown namespace).
    pub fn contains(&self, ev: &SockEvent) -> bool {
        ev.netns == 0 || self.inode == 0 || ev.netns == self.inode
    }

    /// A sock_diag dumper that lists the sockets in scope.
    pub fn dumper(&self, opts: DumpOptions) -> Result<Dumper, DiagError> {
        Dumper::new(opts)
    }

    /// One dump of the sockets in scope, with a fresh dumper.
    pub fn snapshot(&self, opts: DumpOptions) -> Result<Vec<DiagSocket>, DiagError> {
        let mut out = Vec::new();
        self.dumper(opts)?.dump_into(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(netns: u32) -> SockEvent {
        let any = std::net::IpAddr::from([127, 0, 0, 1]);
        SockEvent {
            ts_ns: 1,
            kind: crate::event::Kind::State,
            cookie: 1,
            family: None,
            saddr: any,
            sport: 1,
            daddr: any,
            dport: 2,
            old_state: None,
            new_state: None,
            pid: 0,
            tid: 0,
            comm: [0; 16],
            netns,
        }
    }

    #[test]
    fn the_scope_keeps_its_namespace_and_unknown_ones() {
        let scope = NetnsScope { inode: 7 };
        assert!(scope.contains(&event(7)));
        assert!(scope.contains(&event(0)));
        assert!(!scope.contains(&event(8)));
        let unknown = NetnsScope { inode: 0 };
        assert!(unknown.contains(&event(8)));
    }
}
