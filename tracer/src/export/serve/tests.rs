//! The connection cap: who makes room, and when a burst ends.
use super::*;

#[test]
fn at_the_cap_the_oldest_idle_connection_makes_room() {
    let t = Mutex::new(Table::default());
    let (a, busy_a, _) = admit(&t, 2).unwrap();
    let (b, _, close_b) = admit(&t, 2).unwrap();
    busy_a.fetch_add(1, Ordering::Relaxed);
    // a is busy, so b (idle) goes.
    let (c, busy_c, _) = admit(&t, 2).unwrap();
    assert!(t.lock().unwrap().conns.contains_key(&a));
    assert!(!t.lock().unwrap().conns.contains_key(&b));
    assert!(t.lock().unwrap().in_burst);
    // close_b was notified: a permit is stored.
    let waker = futures_noop();
    let mut fut = Box::pin(close_b.notified());
    assert!(
        fut.as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
    );
    // Everyone busy: the newcomer is refused.
    busy_c.fetch_add(1, Ordering::Relaxed);
    assert!(admit(&t, 2).is_none());
    let closed = t.lock().unwrap().closed.clone();
    assert_eq!((closed.evicted.get(), closed.refused.get()), (1, 1));
    // Back to half the cap: the burst is over.
    leave(&t, c, 2);
    assert!(!t.lock().unwrap().in_burst);
    leave(&t, a, 2);
    assert!(t.lock().unwrap().conns.is_empty());
}

fn futures_noop() -> std::task::Waker {
    std::task::Waker::noop().clone()
}

use std::future::Future as _;

/// A log written into a shared buffer, for the thread that installs it.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_counted_and_named() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let log = Log::default();
    let writer = log.clone();
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    // An answer far larger than both sockets' buffers, so writing it
    // stalls as soon as the client stops reading.
    let app = Router::new().route(
        "/big",
        axum::routing::get(|| async { vec![b'x'; 32 << 20] }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        // Long enough that the reading client is never cut on a busy
        // machine, well inside the header deadline.
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let closed = Closed::default();
    let (stop_tx, stop) = watch::channel(false);
    let server = tokio::spawn(serve(listener, app, limits, None, closed.clone(), stop));

    // One client reads its whole answer: nothing is cut.
    let mut reader = TcpStream::connect(addr).await.unwrap();
    reader
        .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    reader.read_to_end(&mut all).await.unwrap();
    assert!(all.len() > 32 << 20, "{} bytes", all.len());
    assert_eq!(closed.idle.get(), 0);

    // Two clients ask and never read.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while closed.idle.get() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(closed.idle.get(), 2, "both stalled readers counted");
    // Their connections are closed: reading on drains what was sent and
    // then ends.
    for mut s in stalled {
        let mut buf = vec![0; 1 << 20];
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "a stalled reader's connection still open");
    }
    // One line names the first; the second is counted, not said.
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<_> = text
        .lines()
        .filter(|l| l.contains("moved no byte"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("WARN"), "{text}");
    assert!(lines[0].contains("127.0.0.1:"), "{text}");
    assert!(lines[0].contains("stopped reading its answer"), "{text}");
    assert!(lines[0].contains("moved no byte for 2s"), "{text}");
    assert!(lines[0].contains("reason=\"idle\""), "{text}");
    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}
