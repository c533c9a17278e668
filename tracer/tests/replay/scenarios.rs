//! Recording the scenarios (privileged): the real programs, loaded by the
//! real [`Pipeline`] with a [`Recorder`] tapped in, while a scenario drives
//! sockets in a network namespace of its own. Each writes
//! `tests/replay/<scenario>/recording.jsonl`.
use std::{
    any::Any,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt as _,
    sync::mpsc,
    thread,
    time::Duration,
};

use socket2::{Domain, Socket, Type};
use tracer::{
    engine,
    leaks::Thresholds,
    pipeline::{self, NetnsScope, Pipeline, Reconcile, Recorder, Sink},
};

use crate::common::{Netns, set_tcp_int, sh};

/// A scenario: drives sockets in the namespace its thread is in, and
/// returns what must stay open until the recording ends.
pub type Drive = fn() -> Box<dyn Any>;

/// The scenarios, by the folder their recording lives in.
pub const ALL: [(&str, Drive); 3] = [
    ("close_wait_leak", close_wait_leak),
    ("refused_and_timeout", refused_and_timeout),
    ("resets", resets),
];

/// Short thresholds, so that a scenario of a few seconds raises flags.
fn thresholds() -> Thresholds {
    Thresholds {
        close_wait: Duration::from_secs(1),
        handshake: Duration::from_secs(1),
        ..Thresholds::default()
    }
}

/// A sink that wants nothing: the recorder is the output.
struct Quiet;

impl Sink for Quiet {
    type Derived = ();
}

/// Record `drive` in a fresh namespace; returns the recording's text.
pub fn record(name: &str, drive: Drive) -> String {
    let tag = format!("rp{}", &name[..3]);
    let ns = Netns::enter(&tag);
    let inode = std::fs::metadata("/proc/thread-self/ns/net")
        .expect("own netns")
        .ino() as u32;
    let recorder = Recorder::new();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let loop_thread = {
        let recorder = recorder.clone();
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let cfg = pipeline::Config {
                    // Not `own`: dumps open the namespace from /run/netns,
                    // wherever the dump thread runs.
                    scope: NetnsScope::One { inode, own: false },
                    ring_bytes: 1 << 20,
                    engine: engine::Config::default(),
                    thresholds: thresholds(),
                    reconcile: Some(Reconcile {
                        interval: Duration::from_millis(500),
                        time_wait_interval: Some(Duration::from_secs(1)),
                        budget_percent: 0.0,
                    }),
                };
                let mut p = Pipeline::new(cfg, ()).expect("loading the programs");
                p.record(recorder);
                p.adopt(&mut Quiet).await.expect("adopting");
                ready_tx.send(()).expect("ready");
                let stop = async {
                    let _ = stop_rx.await;
                };
                p.run(&mut Quiet, stop).await.expect("pipeline");
            });
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("pipeline started");
    let keep = drive();
    // Dumps after the scenario: flags raised, stays confirmed.
    thread::sleep(Duration::from_millis(2_500));
    let _ = stop_tx.send(());
    loop_thread.join().expect("pipeline thread");
    drop(keep);
    drop(ns);
    recorder.text()
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let a = l.local_addr().expect("address");
    (l, a)
}

/// Two connections the server never closes after their clients did
/// (CLOSE_WAIT leaks), and three that end normally, the client keeping
/// TIME_WAIT.
fn close_wait_leak() -> Box<dyn Any> {
    let (l, addr) = listener();
    let mut kept = Vec::new();
    for _ in 0..2 {
        let c = TcpStream::connect(addr).expect("connect");
        let (s, _) = l.accept().expect("accept");
        drop(c);
        kept.push(s);
    }
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        c.write_all(b"hello").expect("write");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        s.write_all(b"bye").expect("write");
        c.read_exact(&mut buf[..3]).expect("read");
        drop(c);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("read to EOF");
        drop(s);
    }
    Box::new((l, kept))
}

/// A connect refused (no listener), a handshake that times out (its SYNs
/// dropped, `TCP_SYNCNT` 1) and one aborted by close while in SYN_SENT.
fn refused_and_timeout() -> Box<dyn Any> {
    let (l, addr) = listener();
    drop(l);
    let refused = TcpStream::connect(addr).expect_err("nobody listens");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // SYNs to port 9 vanish on the way in.
    sh(
        "nft",
        &[
            "add table inet replay; add chain inet replay in { type filter hook input priority 0; policy accept; }; add rule inet replay in tcp dport 9 drop",
        ],
    );
    let target: SocketAddr = (Ipv4Addr::LOCALHOST, 9).into();
    let timing_out = thread::spawn(move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        set_tcp_int(&s, libc::TCP_SYNCNT, 1);
        s.connect(&target.into())
    });
    let aborted = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    aborted.set_nonblocking(true).expect("nonblocking");
    let _ = aborted.connect(&target.into());
    thread::sleep(Duration::from_millis(1_600));
    drop(aborted);
    let r = timing_out.join().expect("connect thread");
    assert!(r.is_err(), "the handshake must time out");
    Box::new(())
}

/// A server that closes with unread data (it sends a RST), and a client
/// that closes with SO_LINGER 0 (it sends a RST).
fn resets() -> Box<dyn Any> {
    let (l, addr) = listener();
    let mut c = TcpStream::connect(addr).expect("connect");
    let (s, _) = l.accept().expect("accept");
    c.write_all(b"never read").expect("write");
    thread::sleep(Duration::from_millis(50));
    drop(s);
    thread::sleep(Duration::from_millis(50));
    let mut buf = [0u8; 8];
    let _ = c.read(&mut buf);
    drop(c);
    let c = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    c.connect(&addr.into()).expect("connect");
    let (mut s, _) = l.accept().expect("accept");
    c.set_linger(Some(Duration::ZERO)).expect("linger 0");
    drop(c);
    thread::sleep(Duration::from_millis(50));
    let _ = s.read(&mut buf);
    drop(s);
    Box::new(l)
}
