//! States the kernel reports oddly: TIME_WAIT with the client's cookie,
//! request sockets, and bound-but-inactive sockets.
use super::*;

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn client_close_leaves_timewait_with_the_client_cookie() {
    require_root();
    let mut c = conn4();
    let (laddr, caddr) = (c.laddr, c.caddr);
    let (port, cport) = (laddr.port(), caddr.port());
    let cookie = one(&dump(false), caddr, laddr).cookie;
    let client_in = |state: TcpState, timewait: bool| {
        move |s: &[SocketSnapshot]| {
            find(s, caddr, laddr)
                .into_iter()
                .find(|s| (s.state, s.timewait) == (state, timewait))
        }
    };

    // Half-close: a full FIN_WAIT2 socket, still owned (inode != 0).
    c.client.shutdown(Shutdown::Write).expect("shutdown");
    let fw2 = wait_for("full FIN_WAIT2", client_in(TcpState::FinWait2, false));
    assert_eq!(fw2.cookie, cookie);
    assert_ne!(fw2.inode, 0);
    assert_eq!(one(&dump(false), laddr, caddr).state, TcpState::CloseWait);

    // close() orphans it, and tcp_close turns an orphan in FIN_WAIT2 into a
    // timewait socket with substate FIN_WAIT2 (tcp_fin_timeout <= 60 s).
    drop(c.client);
    let orphan = wait_for("orphaned FIN_WAIT2", client_in(TcpState::FinWait2, true));
    assert_eq!(
        (orphan.cookie, orphan.timer, orphan.inode, orphan.uid),
        (cookie, TimerKind::TimeWait, 0, 0)
    );
    // Counted from the dump's start, which may be a few milliseconds
    // before the kernel wrote the 60 s it had left (`diag::on_dump_clock`).
    assert!(orphan.expires_ms <= 60_000 + 250, "{orphan:?}");
    assert_eq!(ss_cookie("FIN-WAIT-2", cport, port), cookie);

    // The server's FIN moves the same timewait socket to TIME_WAIT.
    assert_eq!(c.server.read(&mut [0u8; 1]).expect("read EOF"), 0);
    drop(c.server);
    let tw = wait_for("TIME_WAIT", client_in(TcpState::TimeWait, true));
    assert_eq!(
        (tw.cookie, tw.timer, tw.inode),
        (cookie, TimerKind::TimeWait, 0)
    );
    assert!(tw.expires_ms > 0 && tw.expires_ms <= 60_000 + 250, "{tw:?}");
    assert_eq!(ss_cookie("TIME-WAIT", cport, port), cookie);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn request_socket_reads_as_new_syn_recv() {
    require_root();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let laddr = listener.local_addr().expect("addr");
    // TCP_DEFER_ACCEPT drops the bare final ACK, so the request socket
    // stays in NEW_SYN_RECV while the client is already ESTABLISHED.
    common::set_tcp_int(&listener, libc::TCP_DEFER_ACCEPT, 30);
    let client = TcpStream::connect(laddr).expect("connect");
    let caddr = client.local_addr().expect("addr");
    let req = wait_for("request socket", |s| find(s, laddr, caddr).first().copied());
    assert_eq!(
        (req.state, req.inode, req.timer, req.timewait),
        (TcpState::NewSynRecv, 0, TimerKind::Retransmit, false)
    );
    assert_eq!(
        ss_cookie("SYN-RECV", laddr.port(), caddr.port()),
        req.cookie
    );
    assert_eq!(one(&dump(false), caddr, laddr).state, TcpState::Established);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn bound_socket_reads_as_bound_inactive() {
    require_root();
    if !common::kernel_at_least(6, 8) {
        // sock_diag lists bound-only sockets from Linux 6.8 on.
        eprintln!("skipped: sock_diag shows no bound-inactive socket before Linux 6.8");
        return;
    }
    // SAFETY: socket/bind/getsockname on a socket this test owns, with
    // address buffers of the sizes passed.
    let (fd, port) = unsafe {
        let fd = OwnedFd::from_raw_fd(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ));
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len),
            0,
            "bind"
        );
        assert_eq!(
            libc::getsockname(fd.as_raw_fd(), (&raw mut sa).cast(), &mut len),
            0
        );
        (fd, u16::from_be(sa.sin_port))
    };
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let s = one(
        &dump(false),
        local,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
    );
    assert_eq!((s.state, s.inode), (TcpState::BoundInactive, inode_of(&fd)));
}
