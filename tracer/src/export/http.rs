//! The agent's HTTP server: `/metrics`, `/healthz` and the JSON API.
//!
//! The server knows nothing about the engine: it asks an [`Api`]
//! implementation (the agent) for JSON. `/metrics` reads only the metric
//! atomics, so a scrape never waits on the engine.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

use super::metrics::{Metrics, to_classic_text};

/// `?state=S&port=P` on `/api/v1/sockets`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SocketQuery {
    /// Keep sockets in this state (lowercase kernel name).
    pub state: Option<String>,
    /// Keep sockets with this port at either end.
    pub port: Option<u16>,
    /// Keep sockets of this network namespace (inode).
    pub netns: Option<u32>,
}

/// Health as `/healthz` reports it.
#[derive(Debug, serde::Serialize)]
pub struct Health {
    /// True while the kernel programs are attached and the event loop runs.
    pub ok: bool,
    /// Human-readable detail.
    pub detail: String,
}

/// What the server asks the agent for.
pub trait Api: Send + Sync + 'static {
    /// `/api/v1/sockets`; `Err` is a message for a 400 response.
    fn sockets(&self, q: &SocketQuery) -> Result<serde_json::Value, String>;
    /// `/api/v1/summary`.
    fn summary(&self) -> serde_json::Value;
    /// `/api/v1/leaks`.
    fn leaks(&self) -> serde_json::Value;
    /// `/healthz`.
    fn health(&self) -> Health;
    /// Bring the metrics up to date just before a scrape (cheap reads only).
    fn refresh_metrics(&self) {}
}

struct Shared<A> {
    api: Arc<A>,
    metrics: Arc<Metrics>,
}

impl<A> Clone for Shared<A> {
    fn clone(&self) -> Self {
        Shared {
            api: self.api.clone(),
            metrics: self.metrics.clone(),
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
        .with_state(Shared { api, metrics })
}

/// Bind `addr`, with an error that says what to do when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another process (maybe another tracer) uses it: pick another with --listen ADDR:PORT"
            }
            std::io::ErrorKind::AddrNotAvailable => "; that address is not on this host",
            std::io::ErrorKind::PermissionDenied => "; ports below 1024 need CAP_NET_BIND_SERVICE",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
    })
}

/// Serve until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

async fn index() -> &'static str {
    "tracer: /metrics /healthz /api/v1/sockets?state=S&port=P /api/v1/summary /api/v1/leaks\n"
}

/// OpenMetrics for clients that ask for it (Prometheus does), the classic
/// text format for everyone else (curl, promtool).
async fn metrics_handler<A: Api>(State(s): State<Shared<A>>, headers: HeaderMap) -> Response {
    s.api.refresh_metrics();
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

async fn sockets_handler<A: Api>(
    State(s): State<Shared<A>>,
    q: Result<Query<SocketQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    match s.api.sockets(&q) {
        Ok(v) => Json(v).into_response(),
        Err(msg) => bad_request(msg),
    }
}

async fn summary_handler<A: Api>(State(s): State<Shared<A>>) -> Response {
    Json(s.api.summary()).into_response()
}

async fn leaks_handler<A: Api>(State(s): State<Shared<A>>) -> Response {
    Json(s.api.leaks()).into_response()
}

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": msg })),
    )
        .into_response()
}
