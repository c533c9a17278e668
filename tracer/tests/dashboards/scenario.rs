//! The real traffic the dashboard is evaluated against, all inside the
//! test's own network namespace, beside the kit's python3 server that
//! leaks CLOSE_WAIT sockets: short connections that leave TIME_WAIT
//! behind and complete stays in every state on the way, and a connection
//! and a connect whose answers an nft rule drops (half-open, stuck
//! handshakes). A listener that never accepts is the kit's
//! [`NotAccepting`](crate::common::NotAccepting).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::common::sh;

/// Short connections, one every 20 ms until dropped: the client writes a
/// byte and closes first (its socket goes to TIME_WAIT for 60 s), the
/// server reads to EOF and closes. Stays complete in SYN_SENT,
/// ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK and, after 60 s,
/// TIME_WAIT.
pub struct Churn {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub port: u16,
}

impl Churn {
    /// Start both ends on a loopback port of their own.
    pub fn start() -> Churn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let server = std::thread::spawn(move || {
            while !s.load(Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut sink = Vec::new();
                        let _ = c.read_to_end(&mut sink);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        let s = stop.clone();
        let client = std::thread::spawn(move || {
            while !s.load(Relaxed) {
                if let Ok(mut c) = TcpStream::connect(addr) {
                    let _ = c.write_all(b"x");
                    drop(c);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Churn {
            stop,
            threads: vec![server, client],
            port: addr.port(),
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A connection whose peer goes silent while we send (half-open,
/// `retransmitting`), and a connect whose SYN-ACKs never arrive (stuck in
/// SYN_SENT on our side, a SYN_RECV request on the listener): an nft rule
/// in the test's namespace drops every segment sent from either listening
/// port. The rule goes with the namespace; it is also deleted on drop.
pub struct Blackholed {
    _listeners: [TcpListener; 2],
    _half_open: TcpStream,
    _server_end: TcpStream,
    _connecting: Socket,
    pub half_open_port: u16,
    pub handshake_port: u16,
}

const TABLE: &str = "tracer_dashboards";

impl Blackholed {
    /// Set it up; the caller must be in a network namespace of its own.
    pub fn start() -> Blackholed {
        // The handshake stays stuck for the whole test: by default the
        // request gives up after 63 s and the connect after 127 s, and a
        // stuck-handshake alert checked then would have gone back to
        // inactive. These sysctls are the namespace's own.
        for knob in ["tcp_syn_retries", "tcp_synack_retries"] {
            std::fs::write(format!("/proc/sys/net/ipv4/{knob}"), "10")
                .unwrap_or_else(|e| panic!("{knob}: {e}"));
        }
        let h = TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (hp, sp) = (
            h.local_addr().expect("addr").port(),
            s.local_addr().expect("addr").port(),
        );
        let mut half_open = TcpStream::connect(("127.0.0.1", hp)).expect("connect");
        let (server_end, _) = h.accept().expect("accept");
        sh(
            "nft",
            &[&format!(
                "add table inet {TABLE}; \
                 add chain inet {TABLE} in {{ type filter hook input priority 0; policy accept; }}; \
                 add rule inet {TABLE} in tcp sport {{ {hp}, {sp} }} drop"
            )],
        );
        // Data the peer never acknowledges: retransmitted with backoff.
        half_open.write_all(&[7u8; 1000]).expect("write");
        let connecting =
            Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        connecting.set_nonblocking(true).expect("nonblocking");
        let target: SocketAddr = format!("127.0.0.1:{sp}").parse().expect("addr");
        match connecting.connect(&target.into()) {
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            other => panic!("non-blocking connect to {target}: {other:?}"),
        }
        Blackholed {
            _listeners: [h, s],
            _half_open: half_open,
            _server_end: server_end,
            _connecting: connecting,
            half_open_port: hp,
            handshake_port: sp,
        }
    }
}

impl Drop for Blackholed {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", TABLE])
            .output();
    }
}
