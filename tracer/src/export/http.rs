//! The agent's HTTP server: `/metrics`, `/healthz` and the JSON API.
//!
//! The server knows nothing about the engine: it asks an [`Api`]
//! implementation (the agent) for answers. `/metrics` and `/healthz` read
//! only atomics (and the engine's gauges through a `try_lock`), so they
//! never wait on the engine. Every answer that needs the engine is built on
//! a blocking thread, at most [`ENGINE_READERS`] at once, so neither the
//! server's thread nor the event loop waits on a client; JSON is gzipped
//! when the client asks. Connection limits live in [`super::serve`].
use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{
    metrics::{Metrics, to_classic_text},
    page::Page,
};

mod query;
use query::missing_netns;
pub use query::{LeakQuery, SocketQuery, percent_encode};

/// Health as `/healthz` reports it.
#[derive(Debug, serde::Serialize)]
pub struct Health {
    /// True while the kernel programs are attached and the event loop runs.
    pub ok: bool,
    /// Human-readable detail.
    pub detail: String,
}

/// What the server asks the agent for. Every method but `health` and
/// `refresh_metrics` may wait on the engine: the server calls them on a
/// blocking thread.
pub trait Api: Send + Sync + 'static {
    /// One socket as the API lists it.
    type Socket: Serialize + Send + 'static;
    /// One page of `/api/v1/sockets`; `Err` is a message for a 400 response.
    fn sockets(&self, q: &SocketQuery) -> Result<Page<Self::Socket>, String>;
    /// `/api/v1/summary`.
    fn summary(&self) -> serde_json::Value;
    /// `/api/v1/leaks`.
    fn leaks(&self, q: &crate::filter::Match) -> serde_json::Value;
    /// `/healthz`; must not wait on the engine.
    fn health(&self) -> Health;
    /// Apply the events the kernel has written so far, before an answer
    /// from the engine; must not wait on the engine, and waits on anything
    /// else only briefly.
    fn catch_up(&self) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }
    /// Bring the metrics up to date just before a scrape; must not wait on
    /// the engine, and waits on anything else only briefly.
    fn refresh_metrics(&self) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }
}

/// Most API answers built at once: each takes the engine lock for a walk,
/// and the event loop must not queue behind many of them.
pub const ENGINE_READERS: usize = 2;

struct Shared<A> {
    api: Arc<A>,
    metrics: Arc<Metrics>,
    readers: Arc<Semaphore>,
}

impl<A> Clone for Shared<A> {
    fn clone(&self) -> Self {
        Shared {
            api: self.api.clone(),
            metrics: self.metrics.clone(),
            readers: self.readers.clone(),
        }
    }
}

/// Build the router.
pub fn router<A: Api>(api: Arc<A>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler::<A>))
        .route("/healthz", get(health_handler::<A>))
        .route("/api/v1/sockets", get(sockets_handler::<A>))
        .route("/api/v1/summary", get(summary_handler::<A>))
        .route("/api/v1/leaks", get(leaks_handler::<A>))
        .route("/", get(index))
        .fallback(not_found)
        .with_state(Shared {
            api,
            metrics,
            readers: Arc::new(Semaphore::new(ENGINE_READERS)),
        })
}

/// Bind `addr`, with an error that says what to do when it is taken. The
/// listener is non-blocking, ready for any tokio runtime.
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                let who = crate::diag::who_listens(addr.port())
                    .unwrap_or_else(|| "another process (maybe another tracer)".to_owned());
                format!(
                    "; {who} listens on port {}: pick another with --listen ADDR:PORT",
                    addr.port()
                )
            }
            std::io::ErrorKind::AddrNotAvailable => "; that address is not on this host".into(),
            std::io::ErrorKind::PermissionDenied => {
                "; ports below 1024 need CAP_NET_BIND_SERVICE".into()
            }
            _ => String::new(),
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
    })?;
    l.set_nonblocking(true)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    Ok(l)
}

/// The endpoints, for `/` and a 404.
const ENDPOINTS: &str = "/metrics /healthz /api/v1/sockets?state=S&port=P&netns=N&pid=N&comm=C&limit=N&after=CURSOR /api/v1/summary /api/v1/leaks?state=S&port=P&netns=N&pid=N&comm=C";

async fn index() -> String {
    format!("tracer: {ENDPOINTS}\n")
}

/// A path the agent does not serve: 404, with the ones it does, and where
/// the stream of events is (a command of its own, not an endpoint).
async fn not_found(uri: axum::http::Uri) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!(
            "tracer serves no {}: its endpoints are {ENDPOINTS}; the stream of kernel events is \
             the command `tracer events`\n",
            uri.path()
        ),
    )
}

/// OpenMetrics for clients that ask for it (Prometheus does), the classic
/// text format for everyone else (curl, promtool).
async fn metrics_handler<A: Api>(State(s): State<Shared<A>>, headers: HeaderMap) -> Response {
    s.api.refresh_metrics().await;
    let body = s.metrics.encode();
    let wants_om = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_om {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            to_classic_text(&body),
        )
            .into_response()
    }
}

async fn health_handler<A: Api>(State(s): State<Shared<A>>) -> Response {
    let h = s.api.health();
    let code = if h.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h)).into_response()
}

/// A JSON answer, serialised (and compressed) off the server's thread.
struct Answer {
    body: Vec<u8>,
    gzip: bool,
    headers: Vec<(header::HeaderName, String)>,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut r = (StatusCode::OK, self.body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if self.gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        r
    }
}

/// Run `f` (which may wait on the engine) on a blocking thread, one of at
/// most [`ENGINE_READERS`], and encode what it returns.
async fn off_thread<A: Api>(
    s: &Shared<A>,
    headers: &HeaderMap,
    f: impl FnOnce(&A) -> Result<(Vec<u8>, Vec<(header::HeaderName, String)>), String> + Send + 'static,
) -> Response {
    let gzip = accepts_gzip(headers);
    let Ok(_permit) = s.readers.clone().acquire_owned().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let api = s.api.clone();
    let job = tokio::task::spawn_blocking(move || {
        let (json, headers) = f(&api)?;
        let body = if gzip { gzip_bytes(&json) } else { json };
        Ok::<_, String>(Answer {
            body,
            gzip,
            headers,
        })
    });
    match job.await {
        Ok(Ok(a)) => a.into_response(),
        Ok(Err(msg)) => bad_request(msg),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn sockets_handler<A: Api>(
    State(s): State<Shared<A>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match SocketQuery::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(msg) => return bad_request(msg),
    };
    if let Err(msg) = q.limit() {
        return bad_request(msg);
    }
    s.api.catch_up().await;
    off_thread(&s, &headers, move |api| {
        let page = api.sockets(&q)?;
        // An inode no namespace has is said when nothing matched, not
        // answered with an empty list (the same rule as /api/v1/leaks).
        if page.total == 0
            && !q.netns.is_empty()
            && let Some(said) = missing_netns(&q.netns)
        {
            return Err(said);
        }
        let json = serde_json::to_vec(&page.items).map_err(|e| e.to_string())?;
        let mut extra = vec![(
            header::HeaderName::from_static("x-total-count"),
            page.total.to_string(),
        )];
        if let Some(c) = page.next_after {
            extra.push((
                header::LINK,
                format!("</api/v1/sockets?{}>; rel=\"next\"", q.next(c)),
            ));
            extra.push((
                header::HeaderName::from_static("x-next-after"),
                c.to_string(),
            ));
        }
        Ok((json, extra))
    })
    .await
}

async fn summary_handler<A: Api>(
    State(s): State<Shared<A>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(msg) = query::no_parameters(raw.as_deref(), "/api/v1/summary") {
        return bad_request(msg);
    }
    s.api.catch_up().await;
    off_thread(&s, &headers, |api| {
        serde_json::to_vec(&api.summary())
            .map(|j| (j, Vec::new()))
            .map_err(|e| e.to_string())
    })
    .await
}

async fn leaks_handler<A: Api>(
    State(s): State<Shared<A>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let m = match LeakQuery::parse(raw.as_deref()) {
        Ok(q) => q.matching(),
        Err(msg) => return bad_request(msg),
    };
    s.api.catch_up().await;
    off_thread(&s, &headers, move |api| {
        let report = api.leaks(&m);
        // An inode no namespace has is said when nothing matched, not
        // answered with an empty report (the same rule as /api/v1/sockets).
        if !m.netns.is_empty()
            && report["leak_count"] == 0
            && let Some(said) = missing_netns(&m.netns)
        {
            return Err(said);
        }
        serde_json::to_vec(&report)
            .map(|j| (j, Vec::new()))
            .map_err(|e| e.to_string())
    })
    .await
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a non-zero weight.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !zero
        })
}

/// Gzip at the fastest level: API JSON shrinks about tenfold even so.
fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": msg })),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
