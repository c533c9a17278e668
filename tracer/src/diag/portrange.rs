//! The ephemeral port settings of one network namespace, read from
//! `/proc/sys` like [`super::netstat::TimeWaitLimit`]: files opened inside a
//! namespace keep reading that namespace's values.
use std::{fs::File, io, os::unix::fs::FileExt as _};

use crate::forecast::{PortSettings, ports::parse_range};

/// `net.ipv4.ip_local_port_range` and `net.ipv4.tcp_tw_reuse` of the
/// namespace they were opened in.
#[derive(Debug)]
pub struct PortSysctls {
    range: File,
    tw_reuse: File,
}

fn read_at_start(f: &File) -> Option<String> {
    let mut buf = [0u8; 32];
    let n = f.read_at(&mut buf, 0).ok()?;
    Some(std::str::from_utf8(&buf[..n]).ok()?.to_owned())
}

impl PortSysctls {
    /// Open the settings of the calling thread's namespace.
    pub fn open() -> io::Result<PortSysctls> {
        Ok(PortSysctls {
            range: File::open("/proc/sys/net/ipv4/ip_local_port_range")?,
            tw_reuse: File::open("/proc/sys/net/ipv4/tcp_tw_reuse")?,
        })
    }

    /// Their values now; `None` when unreadable.
    pub fn read(&self) -> Option<PortSettings> {
        let (low, high) = parse_range(&read_at_start(&self.range)?)?;
        let tw_reuse = read_at_start(&self.tw_reuse)?.trim().parse().ok()?;
        Some(PortSettings {
            low,
            high,
            tw_reuse,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_namespaces_settings_again_and_again() {
        let s = PortSysctls::open().expect("port sysctls");
        let first = s.read().expect("settings");
        assert!(first.low <= first.high && first.tw_reuse <= 2, "{first:?}");
        assert_eq!(s.read(), Some(first));
    }
}
