//! Requests, truncation and error sentences of the [`Dumper`].
use super::*;

#[test]
fn request_asks_for_every_state_and_info() {
    let opts = DumpOptions {
        with_info: true,
        without_time_wait: false,
    };
    let req = request(AF_INET6, opts, states(opts));
    // nlmsghdr(16) + inet_diag_req_v2(56)
    assert_eq!(req.len(), 72);
    let nl = NetlinkBuffer::new_checked(&req[..]).expect("header");
    assert_eq!(
        nl.message_type(),
        netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY
    );
    assert_eq!(nl.flags(), NLM_F_REQUEST | NLM_F_DUMP);
    let p = nl.payload();
    assert_eq!((p[0], p[1]), (AF_INET6, IPPROTO_TCP));
    assert_eq!(p[2], 1 << (netlink_packet_sock_diag::INET_DIAG_INFO - 1));
    assert_eq!(u32::from_ne_bytes([p[4], p[5], p[6], p[7]]), u32::MAX);
    let plain = request(AF_INET, DumpOptions::default(), u32::MAX);
    assert_eq!(
        NetlinkBuffer::new_checked(&plain[..])
            .expect("header")
            .payload()[2],
        0
    );
}

#[test]
fn one_walk_request_is_an_inet_diag_req() {
    let opts = DumpOptions {
        with_info: true,
        without_time_wait: true,
    };
    let req = request_both(opts, states(opts));
    // nlmsghdr(16) + inet_diag_req(60)
    assert_eq!(req.len(), 76);
    let nl = NetlinkBuffer::new_checked(&req[..]).expect("header");
    assert_eq!(nl.message_type(), TCPDIAG_GETSOCK);
    assert_eq!(nl.flags(), NLM_F_REQUEST | NLM_F_DUMP);
    let p = nl.payload();
    assert_eq!(p.len(), 60);
    assert_eq!(p[3], 1 << (netlink_packet_sock_diag::INET_DIAG_INFO - 1));
    let states = u32::from_ne_bytes([p[52], p[53], p[54], p[55]]);
    assert_eq!(states, !(1 << 6), "every state but TIME_WAIT");
    assert_eq!(&p[56..60], &[0; 4], "idiag_dbs");
    let all = request_both(DumpOptions::default(), u32::MAX);
    assert_eq!(all[16 + 3], 0);
    assert_eq!(&all[16 + 52..16 + 56], &u32::MAX.to_ne_bytes());
}

/// Needs no privileges: any user may dump TCP sockets.
#[test]
fn truncated_datagrams_grow_the_buffer_and_retry() {
    // Enough listeners that the first datagram (at least NLMSG_GOODSIZE,
    // ~3.7 KiB) overflows a 512-byte buffer.
    let listeners: Vec<_> = (0..16)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let mut dumper = Dumper::with_buffer(
        DumpOptions {
            with_info: true,
            without_time_wait: false,
        },
        512,
        None,
    )
    .expect("open");
    let mut out = Vec::new();
    dumper.dump_into(&mut out).expect("dump after one retry");
    assert!(dumper.buf.len() > 512);
    for l in &listeners {
        let port = l.local_addr().expect("addr").port();
        assert!(
            out.iter()
                .any(|s| s.sport == port && s.state == crate::tcp::TcpState::Listen)
        );
    }
}

/// The agent moves a `Dumper` into `spawn_blocking`.
const _: () = {
    const fn send<T: Send>() {}
    send::<Dumper>();
};

#[test]
fn errors_read_as_sentences() {
    let e = DiagError::Refused {
        family: "IPv4",
        errno: libc::EPERM,
    };
    assert!(
        e.to_string()
            .starts_with("the kernel refused the IPv4 TCP socket dump: permission denied")
    );
    let e = DiagError::Refused {
        family: "IPv6",
        errno: libc::EINVAL,
    };
    assert!(e.to_string().contains("Invalid argument"), "{e}");
}
