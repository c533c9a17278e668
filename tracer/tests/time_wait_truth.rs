//! The TIME_WAIT gauge against the kernel's own count, sampled *while* the
//! kernel recycles, overflows and expires timewait sockets: client-side
//! port reuse, server-side reuse, `tcp_max_tw_buckets` overflowing, and the
//! minute in which a burst of stays expires; and an orphaned FIN_WAIT2
//! socket that moves on to TIME_WAIT with no event. Privileged: each test has a
//! network namespace of its own, so `ss` there counts only its sockets.
mod common;

use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{Agent, Netns, NetnsPair, sh, ss_count, wait_until};

/// Connections per second over all client threads.
const RATE: f64 = 1_500.0;

/// Who closes first, and so keeps the timewait socket.
#[derive(Clone, Copy, PartialEq)]
enum Closer {
    Client,
    /// The server closes first; clients connect from `ports` in turn, so
    /// each new SYN meets the server's timewait socket on its 4-tuple.
    Server {
        ports: (u16, u16),
    },
}

/// Loopback connections to a server on `port` until `stop`, from
/// `threads` clients; returns the connections made.
fn churn(
    threads: usize,
    closer: Closer,
    stop: Arc<AtomicBool>,
) -> (u16, Vec<thread::JoinHandle<u64>>) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind server");
    let port = l.local_addr().unwrap().port();
    let mut handles = Vec::new();
    {
        let stop = stop.clone();
        handles.push(thread::spawn(move || {
            l.set_nonblocking(true).unwrap();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        if closer == Closer::Client {
                            let mut b = [0u8; 1];
                            let _ = s.read(&mut b);
                        }
                        n += 1;
                    }
                    Err(_) => thread::sleep(Duration::from_micros(200)),
                }
            }
            n
        }));
    }
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..threads {
        let (stop, next) = (stop.clone(), next.clone());
        handles.push(thread::spawn(move || {
            let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
            let mut n = 0;
            // Paced, so that the unoptimised agent the tests build keeps up
            // (events lost would make the comparison meaningless; the bench
            // measures truth at peak churn with the release build).
            let gap = Duration::from_secs_f64(threads as f64 / RATE);
            let begin = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(wait) = (begin + gap * n as u32).checked_duration_since(Instant::now())
                {
                    thread::sleep(wait);
                }
                let conn = match closer {
                    Closer::Client => TcpStream::connect(server),
                    Closer::Server { ports: (lo, hi) } => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let local = lo + (i % u64::from(hi - lo)) as u16;
                        connect_from(local, server)
                    }
                };
                let Ok(mut c) = conn else {
                    // Every port busy for now (EADDRNOTAVAIL): the kernel
                    // frees them as their stays end or are recycled.
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                if let Closer::Server { .. } = closer {
                    let mut b = [0u8; 1];
                    let _ = c.read(&mut b);
                }
                drop(c);
                n += 1;
            }
            n
        }));
    }
    (port, handles)
}

/// A connection to `server` from local port `port` (SO_REUSEADDR).
fn connect_from(port: u16, server: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).into())?;
    s.connect(&server.into())?;
    Ok(s.into())
}

/// One sample: the kernel's count just before and just after a scrape of
/// the gauge, and the gauge.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds into the sampling (shown in failure messages).
    #[allow(dead_code)]
    at_s: f64,
    before: usize,
    gauge: usize,
    after: usize,
}

impl Sample {
    /// Within 1% or 20 sockets (whichever is larger) of a count the kernel
    /// had while the scrape ran.
    fn agrees(&self) -> bool {
        let (lo, hi) = (self.before.min(self.after), self.before.max(self.after));
        let tol = (hi / 100).max(20);
        self.gauge + tol >= lo && self.gauge <= hi + tol
    }
}

/// What to compare: a series of the agent's, and the `ss` filter that
/// counts the same sockets.
#[derive(Clone, Copy)]
struct Gauge<'a> {
    series: &'a str,
    filter: &'a str,
}

/// The TIME_WAIT total of the namespace.
const TOTAL: Gauge = Gauge {
    series: "tracer_tcp_sockets{state=\"time_wait\"}",
    filter: "",
};

fn sample(agent: &Agent, g: Gauge, t0: Instant) -> Sample {
    let before = ss_count("time-wait", g.filter);
    let gauge = common::metric_value(&agent.get("/metrics"), g.series).unwrap_or(0.0) as usize;
    let after = ss_count("time-wait", g.filter);
    Sample {
        at_s: t0.elapsed().as_secs_f64(),
        before,
        gauge,
        after,
    }
}

/// Sample every `every` for `dur`, then assert every sample agreed.
fn sample_for(agent: &Agent, dur: Duration, every: Duration, what: &str) -> Vec<Sample> {
    sample_gauge(agent, TOTAL, dur, every, what)
}

/// Sample `g` every `every` for `dur`, then assert every sample agreed.
fn sample_gauge(
    agent: &Agent,
    g: Gauge,
    dur: Duration,
    every: Duration,
    what: &str,
) -> Vec<Sample> {
    let t0 = Instant::now();
    let mut samples = Vec::new();
    while t0.elapsed() < dur {
        samples.push(sample(agent, g, t0));
        thread::sleep(every);
    }
    // Recursion misses (the kernel skipping a nested run of a program)
    // are a trickle at any rate; a full ring buffer would be a flood.
    let lost = agent.metric("tracer_events_lost_total");
    let events = agent.metric("tracer_events_total{kind=\"state\"}");
    assert!(
        lost <= events / 500.0,
        "{what}: {lost} of {events} events lost"
    );
    let bad: Vec<_> = samples.iter().filter(|s| !s.agrees()).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} samples off by more than 1% or 20 ({lost} events lost): \
         {bad:?}\nall: {samples:?}",
        bad.len(),
        samples.len()
    );
    samples
}

fn agent() -> Agent {
    Agent::start(&["--reconcile-interval", "1s", "--time-wait-interval", "2s"])
}

fn stop_all(stop: &AtomicBool, handles: Vec<thread::JoinHandle<u64>>) -> u64 {
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn client_side_port_reuse_keeps_the_gauge_on_ss() {
    let _ns = Netns::enter("twcli");
    // 2,000 ports: the kernel recycles each after about a second.
    sh(
        "sysctl",
        &["-qw", "net.ipv4.ip_local_port_range=40000 41999"],
    );
    sh("sysctl", &["-qw", "net.ipv4.tcp_tw_reuse=1"]);
    let agent = agent();
    let stop = Arc::new(AtomicBool::new(false));
    let (_, handles) = churn(2, Closer::Client, stop.clone());
    // From the first connection: while the count climbs, the gauge must
    // count every event written before the scrape, not one drain earlier.
    let samples = sample_for(
        &agent,
        Duration::from_secs(10),
        Duration::from_millis(100),
        "client reuse",
    );
    let conns = stop_all(&stop, handles);
    let reused = agent.metric("tracer_tcp_time_wait_ended_total{how=\"reused\"}");
    assert!(
        conns > 4_000,
        "{conns} connections: not enough to recycle ports"
    );
    assert!(reused > 1_000.0, "{reused} stays ended as reused");
    assert!(samples.iter().any(|s| s.before > 500), "{samples:?}");
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn server_side_reuse_keeps_the_gauge_on_ss() {
    let _ns = Netns::enter("twsrv");
    let agent = agent();
    let stop = Arc::new(AtomicBool::new(false));
    let (port, handles) = churn(
        2,
        Closer::Server {
            ports: (45000, 45400),
        },
        stop.clone(),
    );
    thread::sleep(Duration::from_secs(2));
    let samples = sample_for(
        &agent,
        Duration::from_secs(6),
        Duration::from_millis(300),
        "server reuse",
    );
    // The server's stays are on its listening port: so is the port gauge.
    let (series, filter) = (
        format!("tracer_tcp_time_wait_sockets{{port=\"{port}\"}}"),
        format!("( sport = :{port} )"),
    );
    let by_port = Gauge {
        series: &series,
        filter: &filter,
    };
    let on_port = sample_gauge(
        &agent,
        by_port,
        Duration::from_secs(4),
        Duration::from_millis(300),
        "server reuse, by port",
    );
    assert!(on_port.iter().all(|s| s.before > 100), "{on_port:?}");
    let conns = stop_all(&stop, handles);
    let reused = agent.metric("tracer_tcp_time_wait_ended_total{how=\"reused\"}");
    assert!(conns > 2_000, "{conns} connections");
    assert!(reused > 1_000.0, "{reused} stays ended as reused");
    // One per client port, and one per scrape of our own.
    let most = 400 + samples.len() * 3;
    assert!(samples.iter().all(|s| s.before <= most), "{samples:?}");
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_overflowing_tcp_max_tw_buckets_keeps_the_gauge_on_ss() {
    let _ns = Netns::enter("twmax");
    sh("sysctl", &["-qw", "net.ipv4.tcp_max_tw_buckets=300"]);
    let agent = agent();
    let stop = Arc::new(AtomicBool::new(false));
    let (_, handles) = churn(2, Closer::Client, stop.clone());
    thread::sleep(Duration::from_secs(1));
    let samples = sample_for(
        &agent,
        Duration::from_secs(8),
        Duration::from_millis(300),
        "overflow",
    );
    stop_all(&stop, handles);
    assert!(
        samples.iter().all(|s| s.before <= 300) && samples.iter().any(|s| s.before >= 290),
        "the kernel held the limit: {samples:?}"
    );
    assert!(agent.metric("tracer_time_wait_overflows_total") > 100.0);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_burst_of_stays_expires_on_the_kernels_ticks() {
    let _ns = Netns::enter("twburst");
    let agent = agent();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let (_, handles) = churn(2, Closer::Client, stop.clone());
    thread::sleep(Duration::from_secs(3));
    let conns = stop_all(&stop, handles);
    let stopped = Instant::now();
    assert!(conns > 1_000, "{conns} connections in the burst");
    // Settled: every stay confirmed and the gauge equal to ss.
    sample_for(
        &agent,
        Duration::from_secs(5),
        Duration::from_millis(500),
        "after the burst",
    );
    // The stays end from 60 s after the first close to about 2 s (the
    // timer wheel's buckets at HZ=250) past 60 s after the last: sample
    // from 59 s after the first to 64 s after the last.
    thread::sleep(Duration::from_secs(59).saturating_sub(start.elapsed()));
    let until = stopped + Duration::from_secs(64);
    let samples = sample_for(
        &agent,
        until.saturating_duration_since(Instant::now()),
        Duration::from_millis(100),
        "expiry",
    );
    let (first, last) = (samples[0].before, samples[samples.len() - 1].before);
    assert!(first > last + 300, "stays expired meanwhile: {samples:?}");
    // What is left are our own scrapes' stays (the agent closes first).
    assert!(last < 150, "the burst expired: {samples:?}");
}

/// Clients close first, and the server closes its listener with their
/// connections never accepted: each child resets its client, whose orphan
/// (a timewait socket waiting in FIN_WAIT2 for a FIN) dies of it with no
/// event. The agent ends them at the child's reset, not two full dumps
/// later (a minute away here).
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn orphans_reset_by_their_peer_here_leave_at_once() {
    orphans_reset_by("twrst", Ipv4Addr::LOCALHOST.into());
}

/// The same with a dual-stack server (an IPv6 socket on `::`): its
/// children's resets name the IPv4 clients' tuples as IPv4-mapped ones.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn orphans_reset_by_a_dual_stack_peer_here_leave_at_once() {
    orphans_reset_by("twrst6", std::net::Ipv6Addr::UNSPECIFIED.into());
}

/// IPv4 clients of a listener on `listen_on` that never accepts them
/// close, and the listener closes; in a namespace named for `name`.
fn orphans_reset_by(name: &str, listen_on: std::net::IpAddr) {
    let _ns = Netns::enter(name);
    let agent = Agent::start(&["--reconcile-interval", "60s", "--time-wait-interval", "60s"]);
    const N: usize = 50;
    // The clients' live records: their orphans (an orphan in FIN_WAIT2, or
    // a TIME_WAIT inferred at its close), and nothing else.
    let orphans_on = |port: u16, closed: bool| {
        let list = agent.json(&format!("/api/v1/sockets?port={port}"));
        let list = list.as_array().cloned().unwrap_or_default();
        list.iter()
            .filter(|s| s["live"] == true && s["dport"] == port)
            .filter(|s| !closed || s["state"] == "time_wait" || s["state"] == "fin_wait2")
            .count()
    };
    // A round whose events the agent lost (counted: a busy host's kernel
    // skips nested runs, a lane overflows) is played again.
    let mut round = 0;
    let (listener, port) = loop {
        round += 1;
        let lost = agent.metric("tracer_events_lost_total");
        let listener = TcpListener::bind((listen_on, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        for _ in 0..N {
            drop(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect"));
        }
        let filter = format!("dport = :{port}");
        let waiting = wait_until(Duration::from_secs(5), || {
            ss_count("fin-wait-2", &filter) == N && orphans_on(port, true) == N
        });
        if waiting {
            break (listener, port);
        }
        let lost = agent.metric("tracer_events_lost_total") - lost;
        assert!(
            lost > 0.0 && round < 3,
            "round {round}: ss fin-wait-2: {}, agent: {} of {N} closed; {lost} events lost; \
             events {}, of other namespaces {}; {}",
            ss_count("fin-wait-2", &filter),
            orphans_on(port, true),
            agent.metric("tracer_events_total"),
            agent.metric("tracer_events_other_netns_total"),
            agent.get(&format!("/api/v1/sockets?port={port}"))
        );
        eprintln!("round {round}: the agent lost {lost} events; again");
    };
    let filter = format!("dport = :{port}");
    let orphans = || orphans_on(port, false);
    drop(listener);
    let gone = wait_until(Duration::from_secs(2), || {
        ss_count("fin-wait-2", &filter) == 0 && orphans() == 0
    });
    assert!(
        gone,
        "ss fin-wait-2: {}, time-wait: {}, agent: {}",
        ss_count("fin-wait-2", &filter),
        ss_count("time-wait", &filter),
        agent.get(&format!("/api/v1/sockets?port={port}"))
    );
    // They end as the orphans they were: no TIME_WAIT stay, none ended.
    for series in [
        "tracer_tcp_time_wait_ended_total{how=\"reset\"}",
        "tracer_tcp_state_duration_seconds_count{state=\"time_wait\"}",
    ] {
        assert_eq!(agent.metric(series), 0.0, "{series}");
    }
    let fin_wait2 = agent.metric("tracer_tcp_state_duration_seconds_count{state=\"fin_wait2\"}");
    assert!(
        fin_wait2 >= 2.0 * N as f64,
        "{fin_wait2} FIN_WAIT2 stays: before and after the close"
    );
}

/// Pods on one node: the clients are in one namespace, the listener that
/// never accepts them in another, over a veth. The listener's children's
/// resets are events of its namespace; the orphans they kill are of the
/// other.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn orphans_reset_by_their_peer_in_another_namespace_leave_at_once() {
    use std::os::unix::fs::MetadataExt as _;
    let pair = NetnsPair::new("twveth", 75);
    let clients = std::fs::metadata(format!("/run/netns/{}", pair.a))
        .expect("netns")
        .ino();
    let agent = Agent::start(&[
        "--reconcile-interval",
        "60s",
        "--time-wait-interval",
        "60s",
        "--netns",
        "all",
    ]);
    let addr_b = pair.addr_b.clone();
    let listener = NetnsPair::in_ns(&pair.b, move || {
        TcpListener::bind((addr_b.as_str(), 0)).expect("bind")
    });
    let server = listener.local_addr().expect("addr");
    let port = server.port();
    const N: usize = 30;
    NetnsPair::in_ns(&pair.a, move || {
        for _ in 0..N {
            drop(TcpStream::connect(server).expect("connect"));
        }
    });
    let in_a = |state: &'static str| {
        let filter = format!("dport = :{port}");
        NetnsPair::in_ns(&pair.a, move || ss_count(state, &filter))
    };
    let orphans = || {
        let list = agent.json(&format!("/api/v1/sockets?port={port}"));
        let list = list.as_array().cloned().unwrap_or_default();
        list.iter()
            .filter(|s| s["live"] == true && s["dport"] == port && s["netns"] == clients)
            .count()
    };
    let waiting = wait_until(Duration::from_secs(5), || {
        in_a("fin-wait-2") == N && orphans() == N
    });
    assert!(
        waiting,
        "ss fin-wait-2: {}, agent: {} ({clients}): {}",
        in_a("fin-wait-2"),
        orphans(),
        agent.get(&format!("/api/v1/sockets?port={port}"))
    );
    drop(listener);
    let gone = wait_until(Duration::from_secs(2), || {
        in_a("fin-wait-2") == 0 && orphans() == 0
    });
    assert!(
        gone,
        "ss fin-wait-2: {}, time-wait: {}, agent: {} of {N}",
        in_a("fin-wait-2"),
        in_a("time-wait"),
        orphans()
    );
    let ended = agent.metric("tracer_tcp_state_duration_seconds_count{state=\"fin_wait2\"}");
    assert!(ended >= 2.0 * N as f64, "{ended} FIN_WAIT2 stays");
}

/// The state the agent lists for the live socket on `port` whose local
/// port is `local`, if it lists one.
fn agent_state(agent: &Agent, port: u16, local: SocketAddr) -> Option<String> {
    let list = agent.json(&format!("/api/v1/sockets?port={port}"));
    list.as_array()?
        .iter()
        .find(|s| s["live"] == true && s["sport"] == local.port())
        .and_then(|s| s["state"].as_str().map(str::to_owned))
}

/// An agent with live dumps every 250 ms and full ones every `full`, and
/// a loopback connection whose client has closed: once the server
/// acknowledges the FIN (after its delayed ACK), the closed client is an
/// orphaned FIN_WAIT2 socket. The agent, the server's address, the server's
/// socket (not closed) and the client's address.
fn orphan(full: &str) -> (Agent, SocketAddr, TcpStream, SocketAddr) {
    let agent = Agent::start(&[
        "--reconcile-interval",
        "250ms",
        "--time-wait-interval",
        full,
        "--reconcile-budget",
        "0",
    ]);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let server = listener.local_addr().expect("addr");
    let client = TcpStream::connect(server).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    let local = client.local_addr().expect("client addr");
    drop(client);
    (agent, server, accepted, local)
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_orphan_that_gets_its_fin_reads_time_wait_before_the_next_full_dump() {
    let _ns = Netns::enter("twfin");
    // The next full dump is a minute away.
    let (agent, server, accepted, local) = orphan("60s");
    let filter = format!("sport = :{}", local.port());
    let orphan = wait_until(Duration::from_secs(5), || {
        ss_count("fin-wait-2", &filter) == 1
            && agent_state(&agent, server.port(), local).as_deref() == Some("fin_wait2")
    });
    assert!(
        orphan,
        "ss fin-wait-2: {}, agent: {}",
        ss_count("fin-wait-2", &filter),
        agent.get(&format!("/api/v1/sockets?port={}", server.port()))
    );
    // Live dumps have listed the orphan; now its peer's FIN moves it to
    // TIME_WAIT, which the kernel reports with no event.
    thread::sleep(Duration::from_millis(600));
    drop(accepted);
    let moved = wait_until(Duration::from_secs(2), || {
        agent_state(&agent, server.port(), local).as_deref() == Some("time_wait")
    });
    assert!(
        moved,
        "ss time-wait: {}, agent: {:?}",
        ss_count("time-wait", &filter),
        agent_state(&agent, server.port(), local)
    );
    assert_eq!(ss_count("time-wait", &filter), 1);
}

/// The agent's record of the socket with local address `local`, live or
/// finished.
fn agent_record(agent: &Agent, port: u16, local: SocketAddr) -> Option<serde_json::Value> {
    let list = agent.json(&format!("/api/v1/sockets?port={port}"));
    list.as_array()?
        .iter()
        .find(|s| s["sport"] == local.port())
        .cloned()
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_orphan_whose_fin_timeout_runs_out_ends_at_its_timer() {
    let _ns = Netns::enter("twfto");
    // An orphan lives tcp_fin_timeout after the close: 3 s here.
    sh("sysctl", &["-qw", "net.ipv4.tcp_fin_timeout=3"]);
    // The server never closes: the client's orphan waits for a FIN that
    // never comes, until its timer.
    let (agent, server, _accepted, local) = orphan("1s");
    let filter = format!("sport = :{}", local.port());
    let mut closed_ns = 0;
    let orphan = wait_until(Duration::from_secs(3), || {
        agent_record(&agent, server.port(), local).is_some_and(|r| {
            closed_ns = r["state_since_ns"].as_u64().unwrap_or(0);
            r["live"] == true && r["state"] == "fin_wait2" && r["time_wait_confirmed"] == true
        })
    });
    assert!(
        orphan,
        "ss fin-wait-2: {}, agent: {:?}",
        ss_count("fin-wait-2", &filter),
        agent_record(&agent, server.port(), local)
    );
    assert!(wait_until(Duration::from_secs(8), || ss_count(
        "fin-wait-2",
        &filter
    ) == 0));
    // Gone from the kernel: the next full dump (1 s) ends it.
    let ended = wait_until(Duration::from_secs(3), || {
        agent_record(&agent, server.port(), local).is_some_and(|r| r["live"] == false)
    });
    let record = agent_record(&agent, server.port(), local);
    assert!(ended, "still live: {record:?}");
    let record = record.expect("a finished record");
    let lasted = record["state_since_ns"].as_u64().expect("since") - closed_ns;
    // At its timer, 3 s after the close, not at a dump after it.
    assert!(
        (2_900_000_000..3_500_000_000).contains(&lasted),
        "the orphan lasted {lasted} ns by the agent: {record}"
    );
}
