//! Why a sock_diag dump failed, in words a user can act on.
use std::io;

/// A failed dump, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The netlink socket could not be created or bound.
    #[error("cannot open a NETLINK_SOCK_DIAG socket (needed to list TCP sockets)")]
    Open(#[source] io::Error),
    /// The network namespace could not be entered to open the socket there.
    #[error("cannot enter the network namespace (entering another namespace needs CAP_SYS_ADMIN)")]
    Enter(#[source] io::Error),
    /// Sending the dump request failed.
    #[error("cannot send the {family} TCP socket dump request to the kernel")]
    Send {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The send error.
        #[source]
        source: io::Error,
    },
    /// Receiving the dump failed.
    #[error("cannot read the {family} TCP socket dump from the kernel")]
    Recv {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The receive error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered with an error (`NLMSG_ERROR`, or a negative
    /// status in `NLMSG_DONE`).
    #[error("the kernel refused the {family} TCP socket dump: {}", explain(*.errno))]
    Refused {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The positive errno.
        errno: i32,
    },
    /// A datagram was larger than the receive buffer and was cut; the
    /// buffer has been grown, so the next dump will fit.
    #[error("a {family} sock_diag datagram of {needed} bytes did not fit the receive buffer")]
    Truncated {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The datagram's real size.
        needed: usize,
    },
    /// The kernel's reply could not be decoded.
    #[error("the kernel sent a malformed {family} sock_diag reply: {detail}")]
    Malformed {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// One sentence for a sock_diag errno.
fn explain(errno: i32) -> String {
    match errno {
        libc::EPERM | libc::EACCES => "permission denied; a seccomp, SELinux or AppArmor policy \
            blocks sock_diag: run tracer as root or allow NETLINK_SOCK_DIAG"
            .to_owned(),
        libc::ENOENT => "this kernel has no TCP sock_diag support; load it with \
            `modprobe tcp_diag` or build with CONFIG_INET_DIAG and CONFIG_INET_TCP_DIAG"
            .to_owned(),
        e => format!("{}", io::Error::from_raw_os_error(e)),
    }
}
