//! `cargo xtask bench --netns-scale N`: `tracer run` beside N network
//! namespaces that hold idle sockets. Does reconciliation stay inside
//! `--reconcile-budget`, and what does a dump cost per namespace and per
//! socket? The namespaces are made here (`trb-<pid>-<i>`, loopback only)
//! and deleted on the way out, whatever happens.
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{agent::TempNetns, procfs, scrape};
use crate::cmd;

/// Namespaces made for the run, each holding a listener and its idle
/// connections; deleted on drop.
struct Namespaces {
    // Declared first: the sockets close before their namespaces go.
    _held: Vec<(TcpListener, Vec<(TcpStream, TcpStream)>)>,
    names: Vec<TempNetns>,
}

/// Run `f` on a thread that has entered the namespace `/run/netns/NAME`.
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace fd we hold.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in namespace {name} panicked"))?
    .with_context(|| format!("making sockets in namespace {name}"))
}

/// Make `n` namespaces with `conns` idle loopback connections each.
fn make(n: usize, conns: usize) -> anyhow::Result<Namespaces> {
    let mut ns = Namespaces {
        names: Vec::new(),
        _held: Vec::new(),
    };
    for i in 0..n {
        let name = format!("trb-{}-{i}", std::process::id());
        ns.names.push(TempNetns::make(name.clone())?);
        cmd::run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
        let held = in_netns(&name, move || {
            let l = TcpListener::bind("127.0.0.1:0")?;
            let addr = l.local_addr()?;
            let mut pairs = Vec::with_capacity(conns);
            for _ in 0..conns {
                let c = TcpStream::connect(addr)?;
                pairs.push((c, l.accept()?.0));
            }
            Ok((l, pairs))
        })?;
        ns._held.push(held);
    }
    Ok(ns)
}

/// The sum of a metric's series with every label of `want`; 0 when none.
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    tracer_testkit::exposition::gauge(text, name, want).unwrap_or(0.0)
}

/// The agent under test; killed on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run the scenario and print what it measured.
pub fn run(
    tracer: &std::path::Path,
    namespaces: usize,
    conns: usize,
    secs: f64,
) -> anyhow::Result<()> {
    if namespaces == 0 {
        bail!("--netns-scale needs at least one namespace");
    }
    eprintln!("xtask: making {namespaces} namespaces with {conns} idle connections each");
    let ns = make(namespaces, conns)?;
    let addr: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let agent = Agent(
        Command::new(tracer)
            .args(["run", "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", tracer.display()))?,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(scrape::get(addr, "/healthz"), Ok((200, _))) {
        if Instant::now() > deadline {
            bail!("tracer run did not become healthy on {addr}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the adoption dump and the first full dump pass.
    std::thread::sleep(Duration::from_secs(12));
    let pid = agent.0.id();
    let (_, m0) = scrape::get(addr, "/metrics")?;
    let (c0, t0) = (procfs::cpu_secs(pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (_, m1) = scrape::get(addr, "/metrics")?;
    let (c1, wall) = (procfs::cpu_secs(pid)?, t0.elapsed().as_secs_f64());
    drop(agent);
    drop(ns);

    let tracked_ns = metric(&m1, "tracer_netns_tracked", &[]);
    let sockets = metric(&m1, "tracer_tracked_sockets", &[]);
    println!(
        "netns scale: {namespaces} namespaces made, {conns} idle connections each ({} sockets each); \
         the agent followed {tracked_ns:.0} namespaces and {sockets:.0} sockets; {wall:.0} s window",
        2 * conns + 1
    );
    println!(
        "| dump | dumps | CPU % of a core | CPU per dump | per namespace | per tracked socket |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for dump in ["live", "full"] {
        let f = [("dump", dump)];
        let n =
            metric(&m1, "tracer_reconciles_total", &f) - metric(&m0, "tracer_reconciles_total", &f);
        let cpu = metric(&m1, "tracer_reconcile_cpu_seconds_total", &f)
            - metric(&m0, "tracer_reconcile_cpu_seconds_total", &f);
        let per_dump = if n > 0.0 { cpu / n } else { 0.0 };
        println!(
            "| {dump} | {n:.0} | {:.2} | {:.1} ms | {:.1} µs | {:.2} µs |",
            100.0 * cpu / wall,
            per_dump * 1e3,
            per_dump * 1e6 / tracked_ns.max(1.0),
            per_dump * 1e6 / sockets.max(1.0),
        );
    }
    println!(
        "agent CPU in the window: {:.2} % of a core (budget: --reconcile-budget, default 1 % for all dumps together)",
        100.0 * (c1 - c0) / wall
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_the_matching_series() {
        let text = "# HELP x\n\
                    tracer_reconciles_total{dump=\"live\"} 4\n\
                    tracer_reconciles_total{dump=\"full\"} 2\n\
                    tracer_netns_tracked 101\n";
        assert_eq!(
            metric(text, "tracer_reconciles_total", &[("dump", "live")]),
            4.0
        );
        assert_eq!(metric(text, "tracer_reconciles_total", &[]), 6.0);
        assert_eq!(metric(text, "tracer_netns_tracked", &[]), 101.0);
        assert_eq!(metric(text, "tracer_missing", &[]), 0.0);
    }
}
