//! Sockets bound to an interface: an IPv6 link-local connection over a
//! veth. The kernel binds such a socket to the interface of its address's
//! scope, and finds it by lookup only when asked with that interface.
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{NetnsPair, sh};
use crate::support::*;

const A: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa);
const B: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xb);

/// A CLOSE_WAIT leak on a link-local address is flagged, and stays flagged
/// through the lookups and walks that follow: no dump finds it gone.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_link_local_close_wait_leak_stays_flagged() {
    let pair = NetnsPair::new("lladdr", 68);
    let (dev_a, dev_b) = pair.devices();
    for (ns, dev, addr) in [(&pair.a, &dev_a, A), (&pair.b, &dev_b, B)] {
        let addr = format!("{addr}/64");
        sh(
            "ip",
            &["-n", ns, "-6", "addr", "add", &addr, "dev", dev, "nodad"],
        );
    }
    let _inside = Inside::enter(&pair.a);
    // A walk of every state each second, lookups every 250 ms between.
    let agent = start_agent(&["--close-wait-threshold", "1s", "--time-wait-interval", "1s"]);
    let url = format!("http://{}", agent.addr);
    let listener = TcpListener::bind("[::]:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // The peer, in b, connects over its veth and closes at once.
    NetnsPair::in_ns(&pair.b, move || {
        let name = std::ffi::CString::new(dev_b).expect("name");
        // SAFETY: a NUL-terminated name.
        let scope = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(scope, 0, "no veth in b");
        TcpStream::connect(SocketAddrV6::new(A, port, 0, scope)).expect("connect");
    });
    let (held, peer) = listener.accept().expect("accept");
    let local = SocketAddr::new(IpAddr::V6(A), port);
    let remote = SocketAddr::new(IpAddr::V6(B), peer.port());

    let flagged = |r: &serde_json::Value| flag_of(&all_flags(r), "close_wait", local, remote);
    let (_, report, ok) = poll(&url, Duration::from_secs(8), |r| flagged(r).is_some());
    assert!(ok, "link-local CLOSE_WAIT not flagged: {report:#}");
    let vanished = "tracer_reconcile_corrections_total{reason=\"vanished\"}";
    let before = agent.metric(vanished);
    // Three walks and a dozen lookups later, still flagged, never cleared.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let (_, r) = tracer_leaks(&url);
        assert!(flagged(&r).is_some(), "the flag went away: {r:#}");
        let cleared = r["recently_cleared"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            flag_of(&cleared, "close_wait", local, remote).is_none(),
            "the flag cleared while its socket lives: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        agent.metric(vanished),
        before,
        "a live socket was taken for gone"
    );
    drop(held);
}
