//! No false positives: a busy keep-alive HTTP workload, with short
//! thresholds, raises no flag in 30 s.
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::Netns;
use crate::support::*;

/// Read one HTTP head (through the blank line) into `buf`; false on EOF or stop.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>, stop: &AtomicBool) -> bool {
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if stop.load(Relaxed) {
            return false;
        }
        match s.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return false,
        }
    }
    true
}

const BODY: [u8; 2048] = [b'x'; 2048];

/// A keep-alive HTTP/1.1 server: one thread per connection, a 2 KiB body per
/// request; `Connection: close` requests get their answer, then the server closes.
fn http_server(listener: TcpListener, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        while !stop.load(Relaxed) {
            let mut s = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(e) => panic!("accept: {e}"),
            };
            let stop = stop.clone();
            std::thread::spawn(move || {
                s.set_nonblocking(false).expect("blocking");
                s.set_nodelay(true).expect("TCP_NODELAY");
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let mut buf = Vec::new();
                let mut response =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", BODY.len())
                        .into_bytes();
                response.extend_from_slice(&BODY);
                while read_head(&mut s, &mut buf, &stop) {
                    let close = String::from_utf8_lossy(&buf).contains("Connection: close");
                    buf.clear();
                    if s.write_all(&response).is_err() || close {
                        return;
                    }
                }
            });
        }
    })
}

/// One request and its whole response on `s`.
fn request(s: &mut TcpStream, close: bool, stop: &AtomicBool) -> bool {
    let conn = if close { "close" } else { "keep-alive" };
    let req = format!("GET / HTTP/1.1\r\nHost: test\r\nConnection: {conn}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    if !read_head(s, &mut buf, stop) {
        return false;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    let mut body = buf.split_off(end);
    let mut rest = vec![0u8; BODY.len().saturating_sub(body.len())];
    s.read_exact(&mut rest).is_ok() && {
        body.extend_from_slice(&rest);
        body.len() == BODY.len()
    }
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn busy_keep_alive_http_for_30_seconds_raises_no_flags() {
    let _ns = Netns::enter("nofalse");
    // This namespace only: other tests' namespaces raise flags of their own.
    let agent = start_agent(&[
        "--half-open-threshold",
        "2s",
        "--handshake-threshold",
        "2s",
        "--idle-threshold",
        "5s",
        "--close-wait-threshold",
        "2s",
        "--fin-wait2-threshold",
        "2s",
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = Stop::default();
    let _server = http_server(listener, stop.0.clone());
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // 8 persistent keep-alive clients, and 2 that open a connection per request.
    let workers: Vec<JoinHandle<()>> = (0..10)
        .map(|i| {
            let (stop, done, failed) = (stop.0.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                let keep_alive = i < 8;
                let connect = || {
                    let s = TcpStream::connect(addr).expect("connect");
                    s.set_nodelay(true).expect("TCP_NODELAY");
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .expect("timeout");
                    s
                };
                let mut persistent = keep_alive.then(connect);
                while !stop.load(Relaxed) {
                    let ok = match persistent.as_mut() {
                        Some(s) => request(s, false, &stop),
                        None => request(&mut connect(), true, &stop),
                    };
                    if ok {
                        done.fetch_add(1, Relaxed);
                    } else if !stop.load(Relaxed) {
                        failed.fetch_add(1, Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(if keep_alive { 2 } else { 20 }));
                }
            })
        })
        .collect();

    let start = Instant::now();
    let mut established = 0.0f64;
    while start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        let report = agent.json("/api/v1/leaks");
        assert!(
            all_flags(&report).is_empty()
                && report["recently_cleared"]
                    .as_array()
                    .is_some_and(Vec::is_empty),
            "flags raised after {:?} of a healthy workload: {report:#}",
            start.elapsed()
        );
        established = established.max(agent.metric("tracer_tcp_sockets{state=\"established\"}"));
    }
    drop(stop);
    for w in workers {
        w.join().expect("client thread");
    }
    let (done, failed) = (done.load(Relaxed), failed.load(Relaxed));
    assert!(
        done > 10_000 && failed == 0,
        "{done} requests answered, {failed} failed"
    );
    assert!(
        established >= 16.0,
        "the agent saw at most {established} established sockets"
    );
    for kind in [
        "close_wait",
        "half_open",
        "idle_no_keepalive",
        "stuck_handshake",
        "orphaned_fin_wait2",
    ] {
        let series = format!("tracer_leaks_flagged_total{{kind=\"{kind}\"}}");
        assert_eq!(agent.metric(&series), 0.0, "{series}");
    }
    let report = agent.json("/api/v1/leaks");
    assert_eq!(report["leak_count"], 0, "{report:#}");
}
