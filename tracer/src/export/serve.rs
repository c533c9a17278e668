//! The HTTP connection loop, with limits a hostile client cannot outlast:
//! a deadline for each request's headers (which also ends a keep-alive
//! connection that stays silent), an idle timeout for a connection on
//! which no byte moves, and a cap on open connections.
//!
//! At the cap the oldest connection that has no request in flight (a slow
//! or silent client) is closed to make room, so a scrape that arrives
//! during a slowloris flood is still accepted and answered; only when
//! every open connection is busy is the newcomer refused. Reaching the cap
//! is logged once per burst, and each connection closed there is counted
//! ([`Closed`]: `tracer_http_connections_closed_total`). So is each
//! connection the idle timeout closes (a client that stopped reading its
//! answer), with a log line at most once a minute.
//!
//! Under `--web-config` ([`Gate`]) each connection first completes a TLS
//! handshake, within the header deadline, and each request shows basic
//! auth credentials before the router sees it. A failed handshake ends
//! only its own connection.
use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use axum::Router;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{Notify, watch},
};

use super::web::{Gate, Refusal};

/// Limits on the server's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time allowed for a request's headers, counted from when the
    /// connection is ready for a request (so also a keep-alive gap).
    pub header_timeout: Duration,
    /// A connection on which no byte moves for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: crate::config::DEFAULT_MAX_HTTP_CONNECTIONS,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Serve on a thread of its own, with its own runtime: the event loop's
/// thread never runs a handler, and a handler never waits for an event
/// loop turn. Returns when `shutdown` fires and connections have closed.
pub fn spawn(
    listener: std::net::TcpListener,
    app: Router,
    limits: Limits,
    gate: Option<Arc<Gate>>,
    closed: Closed,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name("tracer-http".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(super::http::ENGINE_READERS + 2)
                .build()
                .context("starting the HTTP server's runtime")?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .context("registering the HTTP listener")?;
                serve(listener, app, limits, gate, closed, shutdown).await
            })
        })
        .context("starting the HTTP server's thread")
}

/// Connections the cap closed, by why: the series of
/// `tracer_http_connections_closed_total` (unregistered by default).
#[derive(Clone, Debug, Default)]
pub struct Closed {
    /// An idle connection closed to make room for a newcomer.
    pub evicted: Counter,
    /// A newcomer closed at once: every open connection was busy.
    pub refused: Counter,
    /// A connection on which no byte moved for the idle timeout.
    pub idle: Counter,
}

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Requests being answered on it now.
    busy: Arc<AtomicUsize>,
    /// Wakes the connection's task to close it.
    close: Arc<Notify>,
}

/// Open connections by accept order (oldest first).
#[derive(Default)]
struct Table {
    conns: BTreeMap<u64, Conn>,
    next_id: u64,
    /// The cap was reached and not yet left: log nothing more.
    in_burst: bool,
    /// What the cap and the idle timeout closed.
    closed: Closed,
    /// When an idle connection's closing was last logged (monotonic ms),
    /// and how many were closed since without a word.
    idle_said: Option<u64>,
    idle_unsaid: u64,
}

/// Serve `app` on `listener` within `limits`, behind `gate` if any, until
/// `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    gate: Option<Arc<Gate>>,
    closed: Closed,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let table = Arc::new(Mutex::new(Table {
        closed,
        ..Table::default()
    }));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: wait for a file to be freed rather
                    // than spin; a reset before accept is just skipped.
                    if !is_connection_error(&e) {
                        tracing::warn!(
                            event = "http_accept_failed",
                            "HTTP accept failed: {e}; retrying in 100 ms"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let Some((id, busy, close)) = admit(&table, limits.max_connections) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn_table = table.clone();
        let app = app.clone();
        let http = http.clone();
        let gate = gate.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let activity = Arc::new(AtomicU64::new(now_ms()));
            let stream = Watched {
                inner: stream,
                activity: activity.clone(),
            };
            let answering = busy.clone();
            let req_gate = gate.clone();
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let app = app.clone();
                let gate = req_gate.clone();
                let guard = Busy::new(busy.clone());
                async move {
                    let r = match &gate {
                        Some(g) => match g.admit(req.headers()).await {
                            Ok(()) => tower::ServiceExt::oneshot(app, req).await,
                            Err(refused) => Ok(refused),
                        },
                        None => tower::ServiceExt::oneshot(app, req).await,
                    };
                    drop(guard);
                    r
                }
            });
            let idle = idle_watch(activity, limits.idle_timeout);
            tokio::pin!(idle);
            let Some(tls) = gate.as_ref().and_then(|g| g.tls.clone()) else {
                let conn = http.serve_connection(TokioIo::new(stream), svc);
                if drive(conn, &close, &mut idle, &mut stop).await == Ended::Idle {
                    idled(&conn_table, peer, limits.idle_timeout, &answering);
                }
                leave(&conn_table, id, limits.max_connections);
                return;
            };
            // The handshake has the header deadline, and gives way to the
            // cap and to shutdown like a silent connection.
            let handshake = tokio::select! {
                r = tokio::time::timeout(limits.header_timeout, tls.accept(stream)) => Some(r),
                _ = close.notified() => None,
                _ = stop.changed() => None,
            };
            match handshake {
                Some(Ok(Ok(stream))) => {
                    let conn = http.serve_connection(TokioIo::new(stream), svc);
                    if drive(conn, &close, &mut idle, &mut stop).await == Ended::Idle {
                        idled(&conn_table, peer, limits.idle_timeout, &answering);
                    }
                }
                // A client that connects and leaves without a word (a TCP
                // probe) is not counted.
                Some(Ok(Err(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Some(_) => {
                    if let Some(g) = &gate {
                        g.refused(Refusal::Tls);
                    }
                }
                None => {}
            }
            leave(&conn_table, id, limits.max_connections);
        });
    }
    // Let answers in flight finish (each connection closes within 1 s).
    for _ in 0..30 {
        if table.lock().map_or(true, |t| t.conns.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// How a connection's run ended, as far as anyone is told.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// No byte moved for the idle timeout.
    Idle,
    /// It ended, the cap closed it, or the agent is stopping.
    Other,
}

/// Run one connection until it ends, the cap closes it, it idles out, or
/// shutdown (which lets an answer in flight finish, within 1 s).
async fn drive<I, S>(
    conn: http1::Connection<I, S>,
    close: &Notify,
    idle: &mut Pin<&mut impl Future<Output = ()>>,
    stop: &mut watch::Receiver<bool>,
) -> Ended
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => Ended::Other,
        _ = close.notified() => Ended::Other,
        _ = idle.as_mut() => Ended::Idle,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
            Ended::Other
        }
    }
}

/// The idle timeout closed `peer`'s connection: count it, and say so at
/// most once a minute. Before it, the header deadline ends a connection
/// that waits for a request, so this is a client that stopped reading
/// its answer, or (`answering` above 0) one whose answer was still being
/// built.
fn idled(
    table: &Mutex<Table>,
    peer: std::net::SocketAddr,
    idle: Duration,
    answering: &AtomicUsize,
) {
    const EVERY_MS: u64 = 60_000;
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    t.closed.idle.inc();
    let now = now_ms();
    if t.idle_said.is_some_and(|at| now < at + EVERY_MS) {
        t.idle_unsaid += 1;
        return;
    }
    let also = match std::mem::take(&mut t.idle_unsaid) {
        0 => String::new(),
        n => format!("; {n} more since the last such line"),
    };
    t.idle_said = Some(now);
    let why = if answering.load(Ordering::Relaxed) > 0 {
        "its answer was still being built (API answers wait their turn, 2 at a time)"
    } else {
        "a client that stopped reading its answer"
    };
    tracing::warn!(
        event = "http_idle_closed",
        peer = %peer,
        "HTTP client {peer} moved no byte for {}s, so its connection was closed: {why} \
         (tracer_http_connections_closed_total{{reason=\"idle\"}} counts these; said at most \
         once a minute{also})",
        idle.as_secs()
    );
}

/// Make room for a new connection: its id, busy counter and close handle,
/// or `None` when every open connection is busy.
fn admit(table: &Mutex<Table>, max: usize) -> Option<(u64, Arc<AtomicUsize>, Arc<Notify>)> {
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    if t.conns.len() >= max {
        if !t.in_burst {
            t.in_burst = true;
            tracing::warn!(
                event = "http_connection_cap",
                "HTTP connection cap of {max} reached (--max-http-connections): \
                 closing the oldest idle connections to make room, or a newcomer when all are \
                 busy (tracer_http_connections_closed_total counts both); said once per burst"
            );
        }
        let oldest_idle = t
            .conns
            .iter()
            .find(|(_, c)| c.busy.load(Ordering::Relaxed) == 0)
            .map(|(&id, _)| id);
        let Some(victim) = oldest_idle.and_then(|id| t.conns.remove(&id)) else {
            t.closed.refused.inc();
            return None;
        };
        t.closed.evicted.inc();
        victim.close.notify_one();
    }
    let id = t.next_id;
    t.next_id += 1;
    let conn = Conn {
        busy: Arc::new(AtomicUsize::new(0)),
        close: Arc::new(Notify::new()),
    };
    let handles = (id, conn.busy.clone(), conn.close.clone());
    t.conns.insert(id, conn);
    Some(handles)
}

/// A connection ended: forget it; a burst ends below half the cap.
fn leave(table: &Mutex<Table>, id: u64, max: usize) {
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    t.conns.remove(&id);
    if t.in_burst && t.conns.len() <= max / 2 {
        t.in_burst = false;
    }
}

/// Counts a request in flight on its connection while alive.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(n: Arc<AtomicUsize>) -> Busy {
        n.fetch_add(1, Ordering::Relaxed);
        Busy(n)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once no byte has moved for `idle`.
async fn idle_watch(activity: Arc<AtomicU64>, idle: Duration) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let last = activity.load(Ordering::Relaxed);
        let due = last.saturating_add(idle_ms);
        let now = now_ms();
        if now >= due {
            return;
        }
        tokio::time::sleep(Duration::from_millis(due - now)).await;
    }
}

/// Milliseconds on the monotonic clock.
fn now_ms() -> u64 {
    crate::pipeline::monotonic_ns() / 1_000_000
}

/// A stream that notes when a byte last moved either way.
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
}

impl Watched {
    fn moved<T>(&self, r: &Poll<std::io::Result<T>>, n: usize) {
        if n > 0 && matches!(r, Poll::Ready(Ok(_))) {
            self.activity.store(now_ms(), Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.moved(&r, buf.filled().len() - before);
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        let n = match &r {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        self.moved(&r, n);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let n = match &r {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        self.moved(&r, n);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Errors of one connection that say nothing about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests;
