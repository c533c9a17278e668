//! What the fault soak does to the agent, each piece stopped and cleaned up
//! on drop: the run's own network namespace, churn that runs until stopped,
//! API clients in a loop, slow clients holding half a request, and network
//! namespaces that appear and vanish.
use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::bench::churn::{self, ChurnConfig, ChurnResult};

/// A network namespace made here (`ip netns add`), deleted on drop.
pub struct Netns(String);

impl Netns {
    /// Make `/run/netns/NAME` with its loopback up.
    pub fn add(name: String) -> anyhow::Result<Netns> {
        ip(&["netns", "add", &name])?;
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name under /run/netns.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Move the calling thread into the namespace; threads and processes it
    /// starts afterwards are born there.
    pub fn enter(&self) -> anyhow::Result<()> {
        let path = format!("/run/netns/{}", self.0);
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on this thread only, with a namespace fd we hold.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("entering network namespace {}", self.0));
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// Run `ip ARGS` quietly; its stderr in the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A stop flag and the threads that watch it; stops and joins on drop.
struct Threads<T> {
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<T>>,
}

impl<T> Threads<T> {
    fn new() -> Threads<T> {
        Threads {
            stop: Arc::new(AtomicBool::new(false)),
            handles: Vec::new(),
        }
    }

    fn spawn(
        &mut self,
        name: String,
        f: impl FnOnce(&AtomicBool) -> T + Send + 'static,
    ) -> anyhow::Result<()>
    where
        T: Send + 'static,
    {
        let stop = Arc::clone(&self.stop);
        let h = thread::Builder::new()
            .name(name)
            .spawn(move || f(&stop))
            .context("starting a fault-soak thread")?;
        self.handles.push(h);
        Ok(())
    }

    /// Stop and collect what each thread returned.
    fn join(mut self) -> anyhow::Result<Vec<T>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handles
            .drain(..)
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a fault-soak thread panicked"))
            })
            .collect()
    }
}

impl<T> Drop for Threads<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// The churn workload, running in chunks against one server until stopped.
pub struct Churn(Threads<anyhow::Result<ChurnResult>>);

impl Churn {
    /// Start a server and its clients in the calling thread's namespace.
    pub fn start(cfg: &ChurnConfig) -> anyhow::Result<Churn> {
        let server = churn::Server::start(cfg)?;
        let chunk = ChurnConfig {
            duration: Duration::from_secs(2),
            ..cfg.clone()
        };
        let mut t = Threads::new();
        t.spawn("faults-churn".into(), move |stop| {
            let mut total = ChurnResult::default();
            while !stop.load(Ordering::Relaxed) {
                let r = churn::run_clients(&server, &chunk)?;
                total.completed += r.completed;
                total.errors += r.errors;
                total.elapsed += r.elapsed;
            }
            total.errors += server.errors();
            Ok(total)
        })?;
        Ok(Churn(t))
    }

    /// Stop the clients and the server; what they did.
    pub fn finish(self) -> anyhow::Result<ChurnResult> {
        self.0.join()?.pop().context("the churn thread is gone")?
    }
}

/// What the API clients saw.
#[derive(Clone, Debug, Default)]
pub struct ApiStats {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests that failed or answered something else.
    pub errors: u64,
    /// Bytes of answers read.
    pub bytes: u64,
    /// The slowest answer per path.
    pub slowest: Vec<(&'static str, Duration)>,
}

/// What the API clients ask for, in turn.
pub const API_PATHS: [&str; 3] = ["/api/v1/sockets?limit=1000", "/metrics", "/healthz"];

/// `n` clients, each asking for [`API_PATHS`] in a loop.
pub struct ApiClients(Threads<ApiStats>);

impl ApiClients {
    /// Start them against the agent at `addr`.
    pub fn start(addr: SocketAddr, n: usize) -> anyhow::Result<ApiClients> {
        let mut t = Threads::new();
        for i in 0..n {
            t.spawn(format!("faults-api-{i}"), move |stop| {
                let mut s = ApiStats::default();
                let mut k = i;
                while !stop.load(Ordering::Relaxed) {
                    let path = API_PATHS[k % API_PATHS.len()];
                    k += 1;
                    let t0 = Instant::now();
                    match get_discard(addr, path) {
                        Ok((200, bytes)) => {
                            s.ok += 1;
                            s.bytes += bytes;
                        }
                        Ok(_) | Err(_) => {
                            s.errors += 1;
                            thread::sleep(Duration::from_millis(50));
                        }
                    }
                    note_slowest(&mut s.slowest, path, t0.elapsed());
                }
                s
            })?;
        }
        Ok(ApiClients(t))
    }

    /// Stop them (each finishes its request in flight); their sum.
    pub fn finish(self) -> anyhow::Result<ApiStats> {
        let mut sum = ApiStats::default();
        for s in self.0.join()? {
            sum.ok += s.ok;
            sum.errors += s.errors;
            sum.bytes += s.bytes;
            for (p, d) in s.slowest {
                note_slowest(&mut sum.slowest, p, d);
            }
        }
        Ok(sum)
    }
}

fn note_slowest(slowest: &mut Vec<(&'static str, Duration)>, path: &'static str, d: Duration) {
    match slowest.iter_mut().find(|(p, _)| *p == path) {
        Some((_, worst)) => *worst = (*worst).max(d),
        None => slowest.push((path, d)),
    }
}

/// GET `path` and read the answer to its end without keeping it: (status, bytes).
fn get_discard(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, u64)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let (mut head, mut buf, mut bytes) = (Vec::new(), vec![0u8; 64 * 1024], 0u64);
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if head.len() < 64 {
            head.extend_from_slice(&buf[..n.min(64)]);
        }
        bytes += n as u64;
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    Ok((status, bytes))
}

/// Connections that each sent half a request and hold it (slowloris).
pub struct SlowClients(Vec<TcpStream>);

impl SlowClients {
    /// Open `n` of them to `addr`; those the agent refused are not kept.
    pub fn open(addr: SocketAddr, n: usize) -> SlowClients {
        let half = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
        let conns = (0..n)
            .filter_map(|_| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
                s.write_all(half.as_bytes()).ok()?;
                Some(s)
            })
            .collect();
        SlowClients(conns)
    }

    /// How many were opened.
    pub fn opened(&self) -> usize {
        self.0.len()
    }

    /// How many the agent has not closed yet.
    pub fn still_open(&self) -> usize {
        self.0
            .iter()
            .filter(|s| {
                let mut b = [0u8; 1];
                // SAFETY: a peek into a buffer we own, without blocking.
                let n = unsafe {
                    libc::recv(
                        s.as_raw_fd(),
                        b.as_mut_ptr().cast(),
                        1,
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                n < 0 && std::io::Error::last_os_error().kind() == ErrorKind::WouldBlock
            })
            .count()
    }
}

/// Network namespaces appearing and vanishing in cycles until stopped:
/// each cycle makes `per_cycle` of them with a listener and `conns`
/// connections each, holds them a while, deletes them.
pub struct NetnsChurn(Threads<anyhow::Result<(u64, u64)>>);

impl NetnsChurn {
    /// Start cycling, each cycle's namespaces living `hold`; names are `PREFIX-<cycle>-<i>`.
    pub fn start(
        prefix: String,
        per_cycle: usize,
        conns: usize,
        hold: Duration,
    ) -> anyhow::Result<NetnsChurn> {
        let mut t = Threads::new();
        t.spawn("faults-netns".into(), move |stop| {
            let (mut cycles, mut made) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let mut held = Vec::new();
                for i in 0..per_cycle {
                    let ns = Netns::add(format!("{prefix}-{cycles}-{i}"))?;
                    held.push((sockets_in(&ns, conns)?, ns));
                    made += 1;
                }
                sleep_unless(stop, hold);
                // Sockets close first, then each namespace is deleted.
                drop(held);
                cycles += 1;
                sleep_unless(stop, Duration::from_secs(2));
            }
            Ok((cycles, made))
        })?;
        Ok(NetnsChurn(t))
    }

    /// Stop (the namespaces of the cycle in progress are deleted): (cycles, namespaces made).
    pub fn finish(self) -> anyhow::Result<(u64, u64)> {
        self.0
            .join()?
            .pop()
            .context("the namespace thread is gone")?
    }
}

type Held = (TcpListener, Vec<(TcpStream, TcpStream)>);

/// A listener and `conns` connections to it, made inside `ns`.
fn sockets_in(ns: &Netns, conns: usize) -> anyhow::Result<Held> {
    let path = format!("/run/netns/{}", ns.name());
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    thread::spawn(move || -> std::io::Result<Held> {
        // SAFETY: setns on this short-lived thread only, with an fd we hold.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let pairs = (0..conns)
            .map(|_| Ok((TcpStream::connect(addr)?, l.accept()?.0)))
            .collect::<std::io::Result<_>>()?;
        Ok((l, pairs))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in namespace {} panicked", ns.name()))?
    .with_context(|| format!("making sockets in namespace {}", ns.name()))
}

/// Sleep for `d`, waking early when `stop` is set.
pub fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
    }
}
