//! What the rules need and sock_diag does not say: the socket options
//! of the sockets on the port, and, where those cannot be read, the
//! kernel's own answer from a test `bind()`.
//!
//! A socket some process holds is read through a duplicate of its
//! descriptor (`pidfd_getfd(2)`, Linux 5.6, which needs what ptrace
//! needs: root, or `CAP_SYS_PTRACE`): `SO_REUSEADDR` and `IPV6_V6ONLY`,
//! then the duplicate is closed. TIME_WAIT and orphaned sockets have no
//! descriptor; for them a test `bind()` with `SO_REUSEADDR` in the port's
//! namespace, closed at once, answers.
//!
//! sock_diag does not report a socket's `SO_REUSEADDR`, and Linux lets a
//! new listener with it past a TIME_WAIT socket or a live connection only
//! when that socket set it too. A `bind()` that is never followed by
//! `listen()` receives nothing and lives for microseconds; it answers
//! exactly that question. It is tried only when no listener overlaps (a
//! listener blocks anyway, and `bind()` alone would not find it when the
//! listener set `SO_REUSEADDR`: only `listen()` checks that).
use std::{
    io,
    mem::size_of,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use crate::diag::NetnsHandle;

/// The options of a socket that matter to a new listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOptions {
    /// `SO_REUSEADDR`.
    pub reuseaddr: bool,
    /// `IPV6_V6ONLY`, for an IPv6 socket.
    pub v6only: Option<bool>,
}

/// Read the options of socket `inode` through descriptor `fd` of process
/// `pid`. `None` when it cannot be read (no `pidfd_getfd`, not allowed,
/// the process is gone) or the descriptor is now another file.
pub fn options_of(pid: u32, fd: u32, inode: u64) -> Option<SockOptions> {
    let pid = i32::try_from(pid).ok()?;
    let fd = i32::try_from(fd).ok()?;
    // SAFETY: pidfd_open(2) with plain integers; the result is owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = owned(i32::try_from(pidfd).ok()?)?;
    // SAFETY: pidfd_getfd(2) with plain integers; the result is owned below.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    let dup = owned(i32::try_from(dup).ok()?)?;
    // SAFETY: fstat(2) fills the zeroed struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(dup.as_raw_fd(), &raw mut st) } != 0
        || st.st_mode & libc::S_IFMT != libc::S_IFSOCK
        || st.st_ino != inode
    {
        return None;
    }
    let reuseaddr = get_int(&dup, libc::SOL_SOCKET, libc::SO_REUSEADDR)? != 0;
    let v6only = if get_int(&dup, libc::SOL_SOCKET, libc::SO_DOMAIN)? == libc::AF_INET6 {
        Some(get_int(&dup, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? != 0)
    } else {
        None
    };
    Some(SockOptions { reuseaddr, v6only })
}

/// Own a descriptor a syscall returned (`None` for an error).
fn owned(raw: i32) -> Option<OwnedFd> {
    // SAFETY: a non-negative result is a descriptor nobody else owns.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

fn get_int(fd: &OwnedFd, level: i32, name: i32) -> Option<i32> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// `bind()` a fresh TCP socket to `addr:port` with `SO_REUSEADDR`
/// (and `IPV6_V6ONLY` as given, for IPv6), inside the namespace at
/// `netns` (`None`: this process's), then close it.
pub fn test_bind(addr: IpAddr, port: u16, v6only: bool, netns: Option<&Path>) -> io::Result<()> {
    let at = SocketAddr::new(addr, port);
    match netns {
        None => bind_here(at, v6only),
        Some(p) => NetnsHandle::open(p)?.run_inside(|| bind_here(at, v6only))?,
    }
}

/// Whether `addr` is an address of the namespace at `netns` (`None`:
/// this process's), as `bind()` sees it: `Some(false)` when a bind to it
/// fails with `EADDRNOTAVAIL` ("Cannot assign requested address"), as a
/// new listener's would whatever its port; `None` when it cannot tell (the
/// namespace could not be entered; an IPv6 link-local address, which needs
/// an interface). The test socket asks for no port (0) and is closed at
/// once. `net.ipv4.ip_nonlocal_bind` and an IPv6 address still in
/// duplicate address detection count as the kernel counts them.
pub fn has_addr(addr: IpAddr, netns: Option<&Path>) -> Option<bool> {
    let at = SocketAddr::new(addr, 0);
    let bound = match netns {
        None => bind_here(at, false),
        Some(p) => NetnsHandle::open(p)
            .and_then(|ns| ns.run_inside(|| bind_here(at, false)))
            .and_then(|r| r),
    };
    match bound {
        Ok(()) => Some(true),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Some(false),
        Err(_) => None,
    }
}

fn bind_here(at: SocketAddr, v6only: bool) -> io::Result<()> {
    let family = if at.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) with constant arguments; the descriptor is owned
    // (and closed) by `fd` from here on.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if at.is_ipv6() {
        set_int(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            i32::from(v6only),
        )?;
    }
    // SAFETY: an all-zero sockaddr_storage is valid; the address is
    // written below as the family's own struct, within its size.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match at {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds a valid address of `len` bytes.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const storage).cast(),
            len as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_int(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<i32>()` bytes from `&value`.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use socket2::{Domain, Socket, Type};

    use super::*;

    fn holder(reuseaddr: bool) -> (Socket, u16) {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_reuse_address(reuseaddr).expect("SO_REUSEADDR");
        s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind");
        let port = s
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet")
            .port();
        (s, port)
    }

    #[test]
    fn options_are_read_from_a_descriptor_of_a_process() {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::fs::MetadataExt as _;
        for reuse in [false, true] {
            let (s, _) = holder(reuse);
            let fd = s.as_raw_fd();
            let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .expect("fd")
                .ino();
            let me = std::process::id();
            let Some(o) = options_of(me, fd as u32, inode) else {
                // pidfd_getfd needs Linux 5.6 and ptrace rights over
                // ourselves (a seccomp or LSM policy may refuse it).
                return;
            };
            assert_eq!(
                o,
                SockOptions {
                    reuseaddr: reuse,
                    v6only: None
                }
            );
            // Another inode through the same number: refused.
            assert_eq!(options_of(me, fd as u32, inode + 1), None);
        }
        let s = Socket::new(Domain::IPV6, Type::STREAM, None).expect("socket");
        s.set_only_v6(true).expect("v6only");
        let fd = s.as_raw_fd();
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .expect("fd")
            .ino();
        if let Some(o) = options_of(std::process::id(), fd as u32, inode) {
            assert_eq!(o.v6only, Some(true));
        }
    }

    #[test]
    fn a_test_bind_answers_whether_the_holder_set_reuseaddr() {
        let any = IpAddr::from(Ipv4Addr::UNSPECIFIED);
        let (without, port) = holder(false);
        let e = test_bind(any, port, false, None).expect_err("busy");
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
        drop(without);
        let (with, port) = holder(true);
        test_bind(any, port, false, None).expect("both set SO_REUSEADDR");
        drop(with);
        // The test socket is gone: the port binds plainly.
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("rebind");
    }

    #[test]
    fn an_address_no_interface_has_is_unavailable() {
        let here = |a: &str| has_addr(a.parse().expect("address"), None);
        assert_eq!(here("127.0.0.1"), Some(true));
        assert_eq!(here("0.0.0.0"), Some(true));
        // TEST-NET-1 (RFC 5737) is on no interface, unless the machine
        // lets a socket bind any address.
        let nonlocal = std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind")
            .is_ok_and(|v| v.trim() == "1");
        assert_eq!(here("192.0.2.1"), Some(nonlocal));
        // A link-local address needs an interface (a scope) to bind.
        assert_eq!(here("fe80::1"), None);
    }
}
