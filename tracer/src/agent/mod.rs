//! `tracer run`: the long-running agent. It runs the [`Pipeline`] with a
//! sink that feeds metrics and the state the HTTP API reads, and serves
//! that API from a thread of its own. Shared state sits behind one
//! short-held mutex; `/metrics` never takes it for longer than a
//! `try_lock`, and API answers copy a page under it and serialise after.
//! Before a scrape or an API answer, the server asks the event loop to read
//! the ring buffer and waits for that at most [`SCRAPE_DRAIN_WAIT`], so that
//! the answer counts every event the kernel had written when the request
//! came.
mod api;
pub mod dwell;
mod handshakes;
mod nofile;
mod sink;
pub mod state;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;

pub use self::state::{AgentState, Shared};
/// CLOCK_MONOTONIC in nanoseconds (see [`crate::pipeline::clock`]).
pub use crate::pipeline::monotonic_ns;
use crate::{
    config::Settings,
    engine,
    export::{http, metrics::Metrics, serve, web::Gate},
    pipeline::{self, NetnsScope, Pipeline, Reconcile},
};

/// How long a scrape or an API request waits for the event loop to read
/// the ring buffer before it answers with the engine as it is.
pub const SCRAPE_DRAIN_WAIT: Duration = Duration::from_millis(20);

/// The pipeline `tracer run` runs: every dump kind, the configured pace.
fn pipeline_config(settings: &Settings) -> anyhow::Result<pipeline::Config> {
    Ok(pipeline::Config {
        scope: NetnsScope::resolve(&settings.netns)?,
        ring_bytes: settings.ring_bytes,
        engine: engine::Config {
            max_sockets: settings.max_sockets,
            retention_ns: settings.closed_retention.as_nanos() as u64,
            ..engine::Config::default()
        },
        thresholds: settings.thresholds(),
        reconcile: Some(Reconcile {
            interval: settings.reconcile_interval,
            time_wait_interval: Some(settings.time_wait_interval),
            budget_percent: settings.reconcile_budget,
        }),
    })
}

/// Run the agent until SIGINT or SIGTERM.
pub fn run(settings: Settings) -> anyhow::Result<i32> {
    // One thread for the event loop and reconcile bookkeeping; dumps run
    // on the blocking pool. The HTTP server has a thread of its own (see
    // `serve::spawn`), so no client can hold up an event loop turn.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(settings))
}

async fn run_async(settings: Settings) -> anyhow::Result<i32> {
    // Before anything slow: a SIGTERM during start stops the agent cleanly
    // once it is up, instead of killing it half-way.
    let stop = pipeline::stop_signal()?;
    // Read first: a bad web config is refused before anything is bound or loaded.
    let gate = settings.web_config.as_deref().map(Gate::load).transpose()?;
    let listener = http::bind(settings.listen)?;
    // The port the kernel gave, for `--listen ADDR:0`.
    let serving = listener.local_addr().unwrap_or(settings.listen);
    let metrics = Arc::new(Metrics::new());
    let gate = gate.map(|g| {
        let agent = metrics.agent.clone();
        Arc::new(g.counting(move |why| agent.http_refused(why)))
    });
    metrics.workloads.set_cap(settings.max_workloads);
    let mut pipeline = Pipeline::new(pipeline_config(&settings)?, state::agent_state(&metrics))?;
    let started_ns = monotonic_ns();
    let shared = Arc::new(Shared {
        own_netns: pipeline.scope().own_inode(),
        followed_netns: pipeline.scope().only(),
        core: pipeline.core(),
        drain: pipeline.drain_handle(),
        metrics: metrics.clone(),
        settings: settings.clone(),
        started_ns,
        attached: AtomicBool::new(true),
        heartbeat_ns: AtomicU64::new(started_ns),
        last_event_ns: AtomicU64::new(0),
        last_reconcile_ns: AtomicU64::new(0),
        cap_binding: AtomicBool::new(false),
        forecasts: Default::default(),
        netns: Default::default(),
    });
    if let Some(warning) = nofile::raise_and_check(settings.max_http_connections) {
        tracing::warn!(event = "open_file_limit", "{warning}");
    }
    if let Some(warning) = crate::diag::naming_warning() {
        tracing::warn!(event = "owners_unreadable", "{warning}");
    }
    use crate::bpf::preflight::{CAP_SYS_PTRACE, has_effective};
    if pipeline.scope().is_all() && !has_effective(CAP_SYS_PTRACE) {
        tracing::warn!(
            event = "netns_unfindable",
            "{}",
            crate::pipeline::discover::UNREAD_WARNING
        );
    }
    let mut sink = sink::AgentSink::new(shared.clone());

    // Adopt what exists: the programs are attached, so nothing born from
    // here on is missed; events for adopted sockets simply update them.
    let adopted = pipeline
        .adopt(&mut sink)
        .await
        .context("listing existing TCP sockets with sock_diag")?;
    // Huge pages for the store's tables once they are resident.
    crate::memory::huge::spawn();
    tracing::info!(
        event = "started",
        "agent running: {adopted} existing sockets adopted; serving {}://{}/metrics",
        Gate::scheme(gate.as_deref()),
        serving
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let app = http::router(Arc::new(api::AgentApi(shared.clone())), metrics.clone());
        let limits = serve::Limits {
            max_connections: settings.max_http_connections,
            ..serve::Limits::default()
        };
        let closed = metrics.agent.http_closed.clone();
        serve::spawn(listener, app, limits, gate, closed, stop_rx)?
    };

    pipeline.run(&mut sink, stop).await?;

    tracing::info!(event = "stopping", "stopping");
    shared.attached.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    drop(pipeline);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !server.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !server.is_finished() {
        tracing::warn!(
            event = "http_stop_timeout",
            "HTTP server did not stop within 5 s"
        );
        return Ok(0);
    }
    match server.join() {
        Ok(r) => r.context("HTTP server")?,
        Err(_) => anyhow::bail!("the HTTP server's thread panicked"),
    }
    Ok(0)
}
