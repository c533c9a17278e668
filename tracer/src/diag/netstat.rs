//! Kernel TCP counters from `/proc/self/net/netstat` (per network namespace).

/// `TcpExt: TCPTimeWaitOverflow`: closes that left no timewait socket
/// because `tcp_max_tw_buckets` was full, in this process's network
/// namespace. `None` when the file or the counter is missing.
pub fn time_wait_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/net/netstat").ok()?;
    counter(&text, "TcpExt:", "TCPTimeWaitOverflow")
}

/// A counter from netstat-format text: a header line of names and a value
/// line, both starting with `prefix`.
pub fn counter(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(i) = names.split_whitespace().position(|n| n == name) {
            return values.split_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_counter_by_name() {
        let text = "TcpExt: SyncookiesSent TCPTimeWaitOverflow TWRecycled\nTcpExt: 3 1234 0\nIpExt: InNoRoutes\nIpExt: 9\n";
        assert_eq!(counter(text, "TcpExt:", "TCPTimeWaitOverflow"), Some(1234));
        assert_eq!(counter(text, "IpExt:", "InNoRoutes"), Some(9));
        assert_eq!(counter(text, "TcpExt:", "Nope"), None);
        assert_eq!(counter("", "TcpExt:", "TCPTimeWaitOverflow"), None);
    }

    #[test]
    fn reads_this_namespace() {
        assert!(
            time_wait_overflows().is_some(),
            "/proc/self/net/netstat has TCPTimeWaitOverflow"
        );
    }
}
