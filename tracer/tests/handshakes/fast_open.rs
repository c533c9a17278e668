//! TCP Fast Open, the one way a Linux server gets a full socket in
//! SYN_RECV: a SYN that carries a valid cookie and data makes the listener
//! create the connection at once (`tcp_fastopen_create_child()`), queue it
//! for `accept()` and answer with a SYN-ACK; the socket stays in SYN_RECV
//! until the client's ACK arrives. Here: the namespace switch, a Fast Open
//! listener and client, the firewall rule that keeps that ACK from the
//! server, and the kernel's TCP state of a socket as an oracle.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsFd, AsRawFd as _},
    time::Duration,
};

use socket2::{Domain, Socket, Type};

use crate::common::{set_tcp_int, sh};

/// `TCP_ESTABLISHED` and `TCP_SYN_RECV` in `tcpi_state` (include/net/tcp_states.h).
pub const ESTABLISHED: u8 = 1;
pub const SYN_RECV: u8 = 3;

/// Fast Open as client and server (`net.ipv4.tcp_fastopen=3`; the default,
/// 1, is client only) in namespace `ns`; the setting is per namespace.
pub fn enable(ns: &str) {
    sh(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_fastopen=3",
        ],
    );
}

/// A listener on `addr` that accepts Fast Open SYNs (`TCP_FASTOPEN`, with a
/// queue of 16 pending Fast Open connections). Call it inside the server's
/// namespace.
pub fn listener(addr: SocketAddr) -> TcpListener {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    set_tcp_int(&sock, libc::TCP_FASTOPEN, 16);
    sock.bind(&addr.into()).expect("bind");
    sock.listen(16).expect("listen");
    sock.into()
}

/// Connect to `server` with `data` sent by `sendto(MSG_FASTOPEN)`: in the
/// SYN when the client holds a cookie for the server, else after a
/// handshake whose SYN asks for one. Returns once connected (the socket
/// blocks). With `reset_on_close`, SO_LINGER 0: closing it sends a RST.
/// Call it inside the client's namespace.
pub fn connect(server: SocketAddr, data: &[u8], reset_on_close: bool) -> TcpStream {
    let sock = Socket::new(Domain::for_address(server), Type::STREAM, None).expect("socket");
    if reset_on_close {
        sock.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    }
    let sent = sock
        .send_to_with_flags(data, &server.into(), libc::MSG_FASTOPEN)
        .expect("sendto MSG_FASTOPEN");
    assert_eq!(sent, data.len());
    sock.into()
}

/// Drop, in namespace `ns`, every outgoing segment to `port` that is a bare
/// ACK (no SYN, FIN, RST or data flag): a Fast Open client's ACK of the
/// SYN-ACK never reaches the server, while its RST (RST|ACK) still does.
/// The table goes with the namespace.
pub fn drop_bare_acks_to(ns: &str, port: u16) {
    let rules = format!(
        "add table inet tracer_tfo; \
         add chain inet tracer_tfo out {{ type filter hook output priority 0; }}; \
         add rule inet tracer_tfo out tcp dport {port} \
         tcp flags & (fin|syn|rst|psh|ack) == ack drop"
    );
    sh("ip", &["netns", "exec", ns, "nft", &rules]);
}

/// The kernel's TCP state of a socket (`tcpi_state` of TCP_INFO).
pub fn tcp_state(sock: &impl AsFd) -> u8 {
    // SAFETY: tcp_info is plain integers; zeroes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt into a buffer of `len` bytes on a valid socket.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(
        rc,
        0,
        "getsockopt TCP_INFO: {}",
        std::io::Error::last_os_error()
    );
    info.tcpi_state
}
