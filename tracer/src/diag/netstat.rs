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
