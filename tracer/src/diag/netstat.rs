//! Kernel TCP settings of one network namespace, read from `/proc/sys`.
use std::{fs::File, io, os::unix::fs::FileExt as _};

/// `net.ipv4.tcp_max_tw_buckets` of the network namespace this was opened
/// in: a `/proc/sys/net` file stays bound to the namespace of the thread
/// that opened it, so one opened inside a namespace (see
/// [`super::NetnsHandle::run_inside`]) reads that namespace's value for good.
#[derive(Debug)]
pub struct TimeWaitLimit(File);

impl TimeWaitLimit {
    /// Open the setting of the calling thread's namespace.
    pub fn open() -> io::Result<TimeWaitLimit> {
        File::open("/proc/sys/net/ipv4/tcp_max_tw_buckets").map(TimeWaitLimit)
    }

    /// Its value now; `None` when unreadable.
    pub fn read(&self) -> Option<u32> {
        let mut buf = [0u8; 24];
        let n = self.0.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }
}

/// Whether the calling thread's network namespace has a TCP hash table of
/// its own. A namespace made while `net.ipv4.tcp_child_ehash_entries` is 0
/// (the default) shares the initial namespace's table, and its
/// `net.ipv4.tcp_ehash_entries` reads negative (Linux 6.1+). A sock_diag
/// dump walks the whole table it is given and skips other namespaces'
/// sockets one by one, so a dump of such a namespace costs a walk over
/// every TCP socket of the host. `None` where the setting does not exist.
pub fn owns_tcp_table() -> Option<bool> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_ehash_entries").ok()?;
    let n: i64 = s.trim().parse().ok()?;
    Some(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_namespaces_limit_again_and_again() {
        let limit = TimeWaitLimit::open().expect("tcp_max_tw_buckets");
        let first = limit.read().expect("a number");
        assert!(first > 0);
        assert_eq!(limit.read(), Some(first), "read from the start each time");
    }
}
