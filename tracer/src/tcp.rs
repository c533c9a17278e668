//! TCP vocabulary shared by every layer: kernel socket states and address families.
use std::fmt;

/// A kernel TCP state (`include/net/tcp_states.h`), with its lowercase kernel name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    /// `TCP_ESTABLISHED`
    Established = 1,
    /// `TCP_SYN_SENT`
    SynSent = 2,
    /// `TCP_SYN_RECV`
    SynRecv = 3,
    /// `TCP_FIN_WAIT1`
    FinWait1 = 4,
    /// `TCP_FIN_WAIT2`
    FinWait2 = 5,
    /// `TCP_TIME_WAIT`
    TimeWait = 6,
    /// `TCP_CLOSE`
    Close = 7,
    /// `TCP_CLOSE_WAIT`
    CloseWait = 8,
    /// `TCP_LAST_ACK`
    LastAck = 9,
    /// `TCP_LISTEN`
    Listen = 10,
    /// `TCP_CLOSING`
    Closing = 11,
    /// `TCP_NEW_SYN_RECV`
    NewSynRecv = 12,
    /// `TCP_BOUND_INACTIVE` (Linux 6.8+): bound, neither listening nor connected.
    BoundInactive = 13,
}

impl TcpState {
    /// Every state, in kernel order.
    pub const ALL: [TcpState; 13] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
        TcpState::BoundInactive,
    ];

    /// Number of states; `index()` is below this.
    pub const COUNT: usize = 13;

    /// The state for a kernel state number, if it is one.
    pub fn from_kernel(n: u8) -> Option<TcpState> {
        TcpState::ALL.get((n as usize).checked_sub(1)?).copied()
    }

    /// A dense index in `0..COUNT`, for per-state arrays.
    pub fn index(self) -> usize {
        self as usize - 1
    }

    /// The lowercase kernel name (`time_wait`, `close_wait`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn_sent",
            TcpState::SynRecv => "syn_recv",
            TcpState::FinWait1 => "fin_wait1",
            TcpState::FinWait2 => "fin_wait2",
            TcpState::TimeWait => "time_wait",
            TcpState::Close => "close",
            TcpState::CloseWait => "close_wait",
            TcpState::LastAck => "last_ack",
            TcpState::Listen => "listen",
            TcpState::Closing => "closing",
            TcpState::NewSynRecv => "new_syn_recv",
            TcpState::BoundInactive => "bound_inactive",
        }
    }

    /// Parse a lowercase kernel name, as users type it in `?state=`.
    pub fn from_name(s: &str) -> Option<TcpState> {
        TcpState::ALL.iter().copied().find(|st| st.name() == s)
    }

    /// A state as people type it: the kernel's name (`close_wait`) or
    /// ss's (`close-wait`, `estab`, `fin-wait-1`, `syn-recv`, `listening`,
    /// `closed`), any case.
    pub fn parse(s: &str) -> Option<TcpState> {
        let name = s.trim().to_ascii_lowercase().replace('-', "_");
        let name = match name.as_str() {
            "estab" => "established",
            "fin_wait_1" => "fin_wait1",
            "fin_wait_2" => "fin_wait2",
            "listening" => "listen",
            "closed" => "close",
            "timewait" => "time_wait",
            other => other,
        };
        TcpState::from_name(name)
    }

    /// [`TcpState::parse`] with the sentence a person sees when it fails.
    pub fn parse_or_say(s: &str) -> Result<TcpState, String> {
        TcpState::parse(s).ok_or_else(|| {
            let names: Vec<_> = TcpState::ALL.iter().map(|s| s.name()).collect();
            format!(
                "unknown state {s:?}; expected one of {} (or ss's spelling: close-wait, estab, fin-wait-1, ...)",
                names.join(", ")
            )
        })
    }
}

impl serde::Serialize for TcpState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `AF_INET`
    Ipv4,
    /// `AF_INET6`
    Ipv6,
}

impl serde::Serialize for Family {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl Family {
    /// `ipv4` or `ipv6`, as the JSON outputs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_numbers_round_trip() {
        for st in TcpState::ALL {
            assert_eq!(TcpState::from_kernel(st as u8), Some(st));
            assert_eq!(TcpState::from_name(st.name()), Some(st));
            assert!(st.index() < TcpState::COUNT);
        }
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(14), None);
        assert_eq!(TcpState::from_name("TIME_WAIT"), None);
    }

    #[test]
    fn states_are_read_in_either_spelling() {
        for (typed, want) in [
            ("close_wait", TcpState::CloseWait),
            ("close-wait", TcpState::CloseWait),
            ("CLOSE-WAIT", TcpState::CloseWait),
            ("time-wait", TcpState::TimeWait),
            ("estab", TcpState::Established),
            ("fin-wait-1", TcpState::FinWait1),
            ("fin-wait-2", TcpState::FinWait2),
            ("fin_wait2", TcpState::FinWait2),
            ("syn-recv", TcpState::SynRecv),
            ("listening", TcpState::Listen),
            ("last-ack", TcpState::LastAck),
            ("closed", TcpState::Close),
        ] {
            assert_eq!(TcpState::parse(typed), Some(want), "{typed}");
        }
        assert_eq!(TcpState::parse("waiting"), None);
    }
}
