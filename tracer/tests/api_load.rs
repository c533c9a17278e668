//! Privileged tests of the HTTP server under abuse: paging, filters and
//! gzip on `/api/v1/sockets`; eight API clients walking tens of thousands
//! of sockets while connections churn, without a lost kernel event or a
//! slow `/metrics`; a slowloris flood from an unprivileged user against an
//! agent held to 1,024 files; and the open-file limit at start. Each test
//! has a network namespace of its own.
mod common;

use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    Agent, Netns, http_get, http_get_with, metric_sum, metric_value, sh, ss_count, wait_until,
};
use serde_json::Value;

/// `n` connections to a fresh listener, each closed by the client first:
/// `n` TIME_WAIT sockets on the client's side. Returns the server's port.
fn time_wait_burst(n: usize) -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = l.local_addr().unwrap();
    for _ in 0..n {
        let c = TcpStream::connect(addr).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        drop(c);
        let _ = s.read(&mut [0u8; 1]);
    }
    addr.port()
}

/// A JSON page of sockets, its total and its next cursor.
fn page(agent: &Agent, path: &str, gzip: bool) -> (Vec<Value>, usize, Option<String>) {
    let headers: &[(&str, &str)] = if gzip {
        &[("Accept-Encoding", "gzip")]
    } else {
        &[]
    };
    let r = http_get_with(agent.addr, path, headers, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("GET {path}: no answer"));
    assert_eq!(
        r.code,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let body = if gzip {
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{}", r.head);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&r.body[..])
            .read_to_end(&mut out)
            .expect("gunzip");
        out
    } else {
        assert_eq!(r.header("content-encoding"), None, "{}", r.head);
        r.body.clone()
    };
    let list: Vec<Value> = serde_json::from_slice(&body).expect("JSON array");
    let total = r
        .header("x-total-count")
        .and_then(|v| v.parse().ok())
        .expect("X-Total-Count");
    let next = r.header("x-next-after").map(str::to_owned);
    if let Some(c) = &next {
        let link = r.header("link").expect("Link with a next page");
        assert!(
            link.contains(&format!("after={c}")) && link.contains("rel=\"next\""),
            "{link}"
        );
    }
    (list, total, next)
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn sockets_come_in_pages_with_filters_and_gzip() {
    let _ns = Netns::enter("apipage");
    let agent = Agent::start(&[]);
    let port = time_wait_burst(250);
    let base = format!("/api/v1/sockets?state=time-wait&port={port}&limit=100");
    assert!(
        wait_until(Duration::from_secs(20), || page(&agent, &base, false).1
            == 250),
        "the agent never listed 250 TIME_WAIT sockets on port {port}"
    );
    // Three pages, in cookie order, each socket once; gzip on every other.
    let mut seen = Vec::new();
    let mut path = base.clone();
    let mut sizes = Vec::new();
    for i in 0.. {
        let (list, total, next) = page(&agent, &path, i % 2 == 1);
        assert_eq!(total, 250);
        sizes.push(list.len());
        seen.extend(list.iter().map(|s| {
            assert_eq!(s["state"], "time_wait");
            s["cookie"].as_u64().expect("cookie")
        }));
        match next {
            Some(c) => path = format!("{base}&after={c}"),
            None => break,
        }
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "not in cookie order");
    assert_eq!(
        seen.len(),
        ss_count("time-wait", &format!("( dport = :{port} )"))
    );
    // The kernel's spelling filters the same sockets.
    let (kernel, _, _) = page(
        &agent,
        &format!("/api/v1/sockets?state=time_wait&port={port}&limit=10000"),
        false,
    );
    assert_eq!(kernel.len(), 250);
    // Filters repeat: any of their values.
    let (either, _, _) = page(
        &agent,
        &format!("/api/v1/sockets?state=close-wait&state=time_wait&port={port}&limit=10000"),
        false,
    );
    assert_eq!(either.len(), 250);
    // Bad pages are refused in words.
    for bad in [
        "limit=0",
        "limit=10001",
        "after=x",
        "state=waiting",
        "port=99999",
        "limit=1&limit=2",
        "colour=red",
    ] {
        let (code, body) = http_get(agent.addr, &format!("/api/v1/sockets?{bad}")).expect("answer");
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{bad}: {body}");
    }
}

/// Connections closed by the client at about `rate` per second until
/// `stop`; returns how many were made.
fn churn(rate: f64, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = l.local_addr().unwrap();
        let start = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let c = TcpStream::connect(addr).expect("connect");
            let (mut s, _) = l.accept().expect("accept");
            drop(c);
            let _ = s.read(&mut [0u8; 1]);
            n += 1;
        }
        n
    })
}

/// Walk every page of `/api/v1/sockets` until `stop`; returns the pages read.
fn api_client(
    agent_addr: SocketAddr,
    gzip: bool,
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let headers: &[(&str, &str)] = if gzip {
            &[("Accept-Encoding", "gzip")]
        } else {
            &[]
        };
        let mut pages = 0;
        let mut after: Option<String> = None;
        while !stop.load(Ordering::Relaxed) {
            let path = match &after {
                Some(c) => format!("/api/v1/sockets?after={c}"),
                None => "/api/v1/sockets".to_owned(),
            };
            match http_get_with(agent_addr, &path, headers, Duration::from_secs(30)) {
                Some(r) if r.code == 200 => {
                    pages += 1;
                    after = r.header("x-next-after").map(str::to_owned);
                }
                Some(r) => errors
                    .lock()
                    .unwrap()
                    .push(format!("GET {path}: {}", r.code)),
                None => errors
                    .lock()
                    .unwrap()
                    .push(format!("GET {path}: no answer")),
            }
        }
        pages
    })
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn eight_api_clients_under_churn_lose_no_events() {
    const SOCKETS: usize = 100_000;
    let _ns = Netns::enter("apiload");
    sh(
        "sysctl",
        &["-qw", "net.ipv4.ip_local_port_range=1024 65535"],
    );
    sh("sysctl", &["-qw", "net.ipv4.tcp_tw_reuse=0"]);
    sh("sysctl", &["-qw", "net.ipv4.tcp_max_tw_buckets=262144"]);
    // TIME_WAIT sockets made beforehand are adopted from one dump: a big
    // table without a flood of events. They last the kernel's 60 s.
    let made = Instant::now();
    let builders: Vec<_> = (0..4)
        .map(|_| thread::spawn(|| time_wait_burst(SOCKETS / 4)))
        .collect();
    builders.into_iter().for_each(|b| {
        b.join().expect("builder");
    });
    let time_wait = ss_count("time-wait", "");
    eprintln!(
        "{time_wait} TIME_WAIT sockets made in {:.1?}",
        made.elapsed()
    );
    let agent = Agent::start(&[]);
    let tracked = agent.metric("tracer_tracked_sockets");
    assert!(
        tracked >= (time_wait as f64) * 0.9,
        "{tracked} tracked of {time_wait}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let churner = churn(1000.0, stop.clone());
    let clients: Vec<_> = (0..8)
        .map(|i| api_client(agent.addr, i % 2 == 0, stop.clone(), errors.clone()))
        .collect();

    // Meanwhile: /healthz stays 200, and /metrics answers every time
    // within a second (a scrape queued behind an API client's walk of the
    // table would wait for the walk) and typically within 100 ms. The
    // latency itself is the bench's to measure (`--soak-faults`); a busy
    // CI host can delay a single answer past 100 ms.
    let mut slowest = Duration::ZERO;
    let mut took_ms = Vec::new();
    let mut slow = Vec::new();
    let mut unhealthy = Vec::new();
    let scrapes = AtomicU64::new(0);
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        let t = Instant::now();
        let r = http_get_with(agent.addr, "/metrics", &[], Duration::from_secs(5));
        let took = t.elapsed();
        slowest = slowest.max(took);
        took_ms.push(took.as_millis());
        scrapes.fetch_add(1, Ordering::Relaxed);
        if r.as_ref().is_none_or(|r| r.code != 200) || took > Duration::from_secs(1) {
            slow.push(format!("{took:.1?} {:?}", r.map(|r| r.code)));
        }
        match http_get(agent.addr, "/healthz") {
            Some((200, _)) => {}
            other => unhealthy.push(format!("{other:?}")),
        }
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let pages: Vec<u64> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let churned = churner.join().expect("churn");
    thread::sleep(Duration::from_millis(500));

    let text = agent.get("/metrics");
    let lost = metric_value(&text, "tracer_events_lost_total").expect("lost");
    let events = metric_sum(&text, "tracer_events_total");
    eprintln!(
        "pages per client {pages:?}; {churned} connections churned; {events} events, {lost} lost; \
         {} scrapes, slowest {slowest:.1?}; {:.1?} since the sockets were made",
        scrapes.load(Ordering::Relaxed),
        made.elapsed()
    );
    let errors = errors.lock().unwrap();
    assert!(errors.is_empty(), "API errors: {errors:?}");
    // Together the clients walk the table several times over.
    assert!(
        pages.iter().all(|&p| p >= 10) && pages.iter().sum::<u64>() >= SOCKETS as u64 / 1000,
        "pages per client: {pages:?}"
    );
    assert!(unhealthy.is_empty(), "/healthz not 200: {unhealthy:?}");
    assert!(
        slow.is_empty(),
        "/metrics failed or slower than 1 s: {slow:?}"
    );
    took_ms.sort_unstable();
    let median = took_ms[took_ms.len() / 2];
    assert!(
        median <= 100,
        "/metrics took {median} ms at the median: {took_ms:?}"
    );
    assert!(churned > 5_000, "churn ran: {churned}");
    assert!(
        lost <= events / 500.0,
        "{lost} kernel events lost of {events} (recursion misses alone stay below 1/500)"
    );
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn slow_clients_are_cut_off_and_metrics_keep_answering() {
    let _ns = Netns::enter("slowloris");
    let (agent, log) = Agent::start_logged(&["prlimit", "--nofile=1024:1024"], &[]);
    let port = agent.addr.port();
    // 1,100 half-sent requests from nobody, held open.
    let script = format!(
        "for i in $(seq 1100); do exec {{fd}}<>/dev/tcp/127.0.0.1/{port} || break; \
         printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n' >&$fd; done; echo opened; exec sleep 60"
    );
    let mut attacker = Command::new("prlimit")
        .args([
            "--nofile=4096:4096",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(["bash", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the slow clients");
    let mut out = attacker.stdout.take().expect("stdout");
    let mut opened = [0u8; 7];
    out.read_exact(&mut opened).expect("the slow clients open");
    assert_eq!(&opened, b"opened\n");
    let flooded = Instant::now();

    let mut slow = Vec::new();
    let mut slowest = Duration::ZERO;
    while flooded.elapsed() < Duration::from_secs(13) {
        let t = Instant::now();
        let r = http_get_with(agent.addr, "/metrics", &[], Duration::from_secs(5));
        let took = t.elapsed();
        slowest = slowest.max(took);
        if r.as_ref().is_none_or(|r| r.code != 200) || took > Duration::from_millis(500) {
            slow.push(format!(
                "{:.1?} after the flood: {took:.1?} {:?}",
                flooded.elapsed(),
                r.map(|r| r.code)
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
    // By now the header timeout has closed every slow connection.
    let held = ss_count("established", &format!("( sport = :{port} )"));
    let _ = attacker.kill();
    let _ = attacker.wait();
    let log = log.lock().unwrap().clone();
    eprintln!(
        "slowest /metrics during the flood: {slowest:.1?}; {held} connections held after 13 s"
    );
    assert!(
        slow.is_empty(),
        "/metrics slow or failing during the flood: {slow:?}"
    );
    assert!(
        held <= 2,
        "{held} slow connections still held after the header timeout"
    );
    let capped = log.matches("HTTP connection cap of 256 reached").count();
    assert_eq!(capped, 1, "one log line per burst:\n{log}");
    // Each connection the cap closed is counted.
    let evicted = agent.metric("tracer_http_connections_closed_total{reason=\"evicted\"}");
    assert!(evicted >= 1.0, "no eviction counted:\n{log}");
    assert!(
        !log.contains("open-file limit"),
        "1,024 files fit 256 connections:\n{log}"
    );
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn the_open_file_limit_is_raised_and_a_low_one_named() {
    let _ns = Netns::enter("nofile");
    let (agent, log) = Agent::start_logged(&["prlimit", "--nofile=512:8192"], &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).expect("limits");
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    assert_eq!(
        files.split_whitespace().skip(3).take(2).collect::<Vec<_>>(),
        ["8192", "8192"],
        "{files}"
    );
    assert!(!log.lock().unwrap().contains("open-file limit"));
    drop(agent);

    let (_agent, log) = Agent::start_logged(&["prlimit", "--nofile=200:200"], &[]);
    let log = log.lock().unwrap().clone();
    let warning = log
        .lines()
        .find(|l| l.contains("open-file limit (RLIMIT_NOFILE) is 200"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains("--max-http-connections"), "{warning}");
}
