//! The golden-replay tier: recordings of real traffic
//! (`tests/replay/<scenario>/recording.jsonl`: ring-buffer records and
//! sock_diag dumps' datagrams, as the kernel sent them, in the order the
//! pipeline read them) played through the agent's user-space pipeline
//! (decode, sock_diag parser, namespace scope, engine, detectors, the
//! agent's sink and metrics) with time taken from the recording; the
//! outcome is compared with the golden files beside it. Unprivileged:
//! nothing is loaded (one test takes a dump of its own namespace).
//!
//! - `TRACER_BLESS=1 cargo test -p tracer --test replay` rewrites the golden files;
//! - `TRACER_RECORD=1 cargo test -p tracer --test replay -- --ignored record`
//!   (as root) records every scenario again.
mod common;
#[path = "replay/scenarios.rs"]
mod scenarios;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64},
    },
};

use serde_json::{Value, json};
use tracer::{
    agent::{Shared, state::agent_state},
    config::Settings,
    diag::{DumpOptions, Dumper, parse_datagrams},
    engine::{self, Engine},
    export::metrics::Metrics,
    pipeline::{Recording, Replay},
};

/// The metric families the golden exposition keeps: lifecycle, handshakes,
/// leaks. The rest depends on the host (build, process, forecasts read
/// from `/proc`) or on timings (dump CPU, intervals).
const FAMILIES: [&str; 8] = [
    "tracer_tcp_",
    "tracer_time_wait_",
    "tracer_leaks_",
    "tracer_close_wait_",
    "tracer_half_open_",
    "tracer_stuck_handshakes",
    "tracer_idle_without_keepalive",
    "tracer_orphaned_fin_wait2",
];

fn dir(scenario: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/replay")
        .join(scenario)
}

/// What a replay left: the golden files' contents, by file name.
fn replay(scenario: &str) -> Vec<(&'static str, String)> {
    let path = dir(scenario).join("recording.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; record it (see this file's header)",
            path.display()
        )
    });
    let rec = Recording::parse(&text).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let metrics = Arc::new(Metrics::new());
    let mut replay = Replay::new(
        &rec.header,
        engine::Config::default(),
        agent_state(&metrics),
    );
    let shared = Arc::new(Shared {
        own_netns: rec.header.netns,
        followed_netns: None,
        core: replay.core(),
        metrics: metrics.clone(),
        settings: Settings::default(),
        started_ns: 0,
        attached: AtomicBool::new(true),
        heartbeat_ns: AtomicU64::new(0),
        last_event_ns: AtomicU64::new(0),
        last_reconcile_ns: AtomicU64::new(0),
        cap_binding: AtomicBool::new(false),
        drain: Arc::default(),
        forecasts: Default::default(),
        netns: Default::default(),
    });
    let mut sink = shared.sink();
    replay
        .play(&rec, &mut sink)
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let now = rec.end_ns();
    let core = shared.core.lock();
    shared.publish(&core);
    let mut report = serde_json::to_value(core.detector.report(now)).expect("report");
    // The replay's clock starts at the recording's boot, not this host's.
    if let Some(o) = report.as_object_mut() {
        o.remove("generated_at");
    }
    let sockets = sockets(&core.engine, now);
    drop(core);
    let exposition = exposition(&metrics.encode());
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("json") + "\n";
    vec![
        ("metrics.prom", exposition),
        ("leaks.json", pretty(&report)),
        ("sockets.json", pretty(&sockets)),
        ("decode_errors.txt", format!("{}\n", replay.decode_errors())),
    ]
}

/// The families in [`FAMILIES`], each family's series sorted (their order
/// in the encoder is a hash map's).
fn exposition(text: &str) -> String {
    tracer_testkit::exposition::by_series(text, |name| FAMILIES.iter().any(|f| name.starts_with(f)))
}

/// The engine's sockets, as the API lists them, with ages at `now`.
fn sockets(engine: &Engine, now: u64) -> Value {
    let mut all: Vec<Value> = engine
        .sockets()
        .map(|v| {
            json!({
                "cookie": v.cookie(),
                "local": v.local().to_string(),
                "remote": v.remote().to_string(),
                "state": v.state(),
                "age_seconds": now.saturating_sub(v.state_since_ns()) as f64 / 1e9,
                "age_is_lower_bound": v.since_is_lower_bound(),
                "path": v.path().collect::<Vec<_>>(),
                "closed_by": v.closed_by().map(|c| c.name()),
                "half_closed": v.half_closed(),
                "time_wait_confirmed": v.in_time_wait().then(|| v.time_wait_confirmed()),
                "time_wait_ended": v.time_wait_end().map(|e| e.name()),
                "retransmits": v.retransmits(),
                "synack_retransmits": v.synack_retransmits(),
                "resets_sent": v.resets_sent(),
                "resets_received": v.resets_received(),
                "live": v.is_live(),
            })
        })
        .collect();
    all.sort_by_key(|s| s["cookie"].as_u64());
    Value::Array(all)
}

/// Compare with the golden files, or write them with `TRACER_BLESS=1`.
fn check(scenario: &str) {
    let bless = std::env::var_os("TRACER_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for (file, got) in replay(scenario) {
        let path = dir(scenario).join(file);
        if bless {
            std::fs::write(&path, &got).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != got {
            failures.push(format!(
                "{} differs (- golden, + replay):\n{}",
                path.display(),
                diff(&want, &got)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nIf the change is intended, regenerate the golden files: \
         TRACER_BLESS=1 cargo test -p tracer --test replay",
        failures.join("\n")
    );
}

/// A line diff with two lines of context, from the longest common
/// subsequence (golden files are a few hundred lines).
fn diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, l)) in ops.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            out.push_str(&format!("{c} {l}\n"));
        } else {
            skipped = true;
        }
    }
    out
}

#[test]
fn close_wait_leak() {
    check("close_wait_leak");
}

#[test]
fn refused_and_timeout() {
    check("refused_and_timeout");
}

#[test]
fn resets() {
    check("resets");
}

/// A dump's captured datagrams parse into the sockets the dump listed,
/// in the same order, whether it took one walk or one per family: what a
/// replay decodes is what the live agent saw.
#[test]
fn captured_datagrams_parse_as_the_dump_did() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let _c = std::net::TcpStream::connect(l.local_addr().expect("address")).expect("connect");
    let opts = DumpOptions {
        with_info: true,
        without_time_wait: false,
    };
    for mut d in [Dumper::new(opts), Dumper::per_family(opts)].map(|d| d.expect("sock_diag")) {
        let mut live = Vec::new();
        d.dump_into(&mut live).expect("dump");
        assert!(d.take_captured().is_empty(), "capture is off by default");
        d.set_capture(true);
        d.dump_into(&mut live).expect("dump");
        let kept = d.take_captured();
        assert!(
            !kept.is_empty() && live.len() >= 3,
            "{} sockets",
            live.len()
        );
        let mut parsed = Vec::new();
        parse_datagrams(&kept, d.netns(), &mut parsed).expect("parse");
        assert_eq!(parsed, live, "one walk: {}", d.one_walk());
        // Cut before NLMSG_DONE (its last 20 bytes): an error, not a
        // shorter dump.
        let mut cut = kept.clone();
        let last = cut.last_mut().expect("a datagram");
        last.bytes.truncate(last.bytes.len() - 20);
        let e = parse_datagrams(&cut, d.netns(), &mut Vec::new()).expect_err("cut short");
        assert!(e.to_string().contains("NLMSG_DONE"), "{e}");
    }
}

#[test]
fn the_diff_shows_what_changed() {
    let d = diff("a\nb\nc\n", "a\nB\nc\n");
    assert_eq!(d, "  a\n- b\n+ B\n  c\n");
}

/// Record every scenario again (as root, with `TRACER_RECORD=1`; a no-op
/// otherwise, so that running the privileged tiers never rewrites them).
#[test]
#[ignore = "privileged: records the fixtures with TRACER_RECORD=1"]
fn record() {
    if std::env::var_os("TRACER_RECORD").is_none_or(|v| v != "1") {
        eprintln!("TRACER_RECORD=1 not set: the recordings are left as they are");
        return;
    }
    common::require_root();
    for (name, drive) in scenarios::ALL {
        let text = scenarios::record(name, drive);
        let d = dir(name);
        std::fs::create_dir_all(&d).expect("fixture folder");
        std::fs::write(d.join("recording.jsonl"), text).expect("write recording");
        eprintln!("recorded {}", d.display());
    }
}
