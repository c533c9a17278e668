//! The connection-churn workload: a loopback TCP server and client threads
//! that open, use and close connections as fast as possible or at an
//! open-loop target rate.
//!
//! Every connection is one exchange: the client sends `payload` bytes, the
//! server echoes them, then the chosen side closes first and the other
//! closes on EOF. A client that closes first leaves its socket in TIME_WAIT
//! for 60 s, so at tens of thousands of connections per second a single
//! (source, destination) address pair would run out of its ~28k ephemeral
//! ports within a second. [`Sources::Many`] therefore binds each client
//! connection to a source address from a rotating set in 127.1.0.0/16 with
//! `IP_BIND_ADDRESS_NO_PORT` (the port is chosen at `connect()`, against the
//! full 4-tuple), which gives every source address its own ephemeral port
//! range. The whole of 127.0.0.0/8 is local on Linux, so this needs no setup.
//! [`Sources::One`] connects from 127.0.0.1 without binding, so the kernel
//! recycles ports still in TIME_WAIT (`tcp_tw_reuse`, 2 by default, allows
//! it on loopback once a stay is a second old): the regime of a busy host
//! talking to one peer. Its windows share one server port
//! ([`ChurnConfig::server_port`]), so every window's clients meet the stays
//! the previous ones left and the population stays bounded by the port
//! range, as on a host that keeps talking to the same service.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

mod server;

pub use server::Server;
use server::wait_eof;

/// Which side calls `close()` first (and so keeps the TIME_WAIT socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Closer {
    /// The client closes first: the peak-churn scenario of issue 5.
    Client,
    /// The server closes first.
    Server,
}

impl Closer {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Closer::Client => "client",
            Closer::Server => "server",
        }
    }
}

/// Where client connections come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sources {
    /// 127.0.0.1 only: the kernel reuses ports still in TIME_WAIT.
    One,
    /// A rotating set of addresses in 127.1.0.0/16 (`--source-addrs`), so
    /// no port is reused while its TIME_WAIT lasts.
    Many,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ChurnConfig {
    /// Client threads, each one connection at a time.
    pub client_threads: usize,
    /// Server threads, all accepting on one listener.
    pub server_threads: usize,
    /// Who closes first.
    pub closer: Closer,
    /// Bytes sent each way per connection (0: connect and close).
    pub payload: usize,
    /// Target connections per second over all client threads; `None`: as
    /// fast as possible.
    pub rate: Option<u64>,
    /// How long the clients run.
    pub duration: Duration,
    /// One source address or many.
    pub sources: Sources,
    /// The server's port on 127.0.0.1; 0: a fresh ephemeral port each time
    /// a server starts.
    pub server_port: u16,
    /// How many client source addresses (127.1.x.y) to rotate through with
    /// [`Sources::Many`].
    pub source_addrs: u32,
}

impl ChurnConfig {
    /// The client side in words, for reports.
    pub fn describe_sources(&self) -> String {
        match self.sources {
            Sources::One => "one source address (ports reused from TIME_WAIT)".to_string(),
            Sources::Many => format!("{} source addresses", self.source_addrs),
        }
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChurnResult {
    /// Connections that completed the whole exchange.
    pub completed: u64,
    /// Connections that failed (connect, read, write or a short echo).
    pub errors: u64,
    /// How long the clients ran.
    pub elapsed: Duration,
}

impl ChurnResult {
    /// Completed connections per second.
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// How long any one socket operation may block before it counts as an error.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Run the clients against `server` for `cfg.duration`.
pub fn run_clients(server: &Server, cfg: &ChurnConfig) -> anyhow::Result<ChurnResult> {
    let threads = cfg.client_threads.max(1);
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + cfg.duration;
    // Each thread's share of the target rate, as an interval between starts.
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(threads as f64 / r.max(1) as f64));
    let mut handles = Vec::new();
    for t in 0..threads {
        let client = Client {
            dst: server.addr(),
            closer: cfg.closer,
            payload: cfg.payload,
            sources: match cfg.sources {
                Sources::One => None,
                Sources::Many => Some(cfg.source_addrs.max(1)),
            },
            next_source: t as u32 * 7919,
        };
        let h = thread::Builder::new()
            .name(format!("churn-cli-{t}"))
            .spawn(move || client.run(start, end, interval))
            .context("starting a churn client thread")?;
        handles.push(h);
    }
    let mut total = ChurnResult::default();
    for h in handles {
        let (ok, err) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a churn client thread panicked"))?;
        total.completed += ok;
        total.errors += err;
    }
    // Includes the tail: connections begun before `end` that finished after it.
    total.elapsed = Instant::now().saturating_duration_since(start);
    Ok(total)
}

/// Start a server, run the clients, stop the server.
pub fn run(cfg: &ChurnConfig) -> anyhow::Result<ChurnResult> {
    let server = Server::start(cfg)?;
    let mut r = run_clients(&server, cfg)?;
    r.errors += server.errors();
    Ok(r)
}

struct Client {
    dst: SocketAddr,
    closer: Closer,
    payload: usize,
    /// How many 127.1.x.y addresses to rotate through; `None`: 127.0.0.1, unbound.
    sources: Option<u32>,
    next_source: u32,
}

impl Client {
    fn run(mut self, start: Instant, end: Instant, interval: Option<Duration>) -> (u64, u64) {
        let mut buf = vec![0x5au8; self.payload];
        let (mut ok, mut err) = (0u64, 0u64);
        let mut due = start;
        sleep_until(start);
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if let Some(iv) = interval {
                if due > now {
                    sleep_until(due.min(end));
                    continue;
                }
                due += iv;
                // Open loop, but do not bank more than a second of missed starts.
                if now.saturating_duration_since(due) > Duration::from_secs(1) {
                    due = now;
                }
            }
            match self.one(&mut buf) {
                Ok(()) => ok += 1,
                Err(_) => {
                    err += 1;
                    thread::sleep(Duration::from_micros(200));
                }
            }
        }
        (ok, err)
    }

    /// The next source address: 127.1.a.b, b in 1..=254; `None` with one source.
    fn source(&mut self) -> Option<SocketAddr> {
        let k = self.next_source % self.sources?;
        self.next_source = self.next_source.wrapping_add(1);
        let ip = Ipv4Addr::new(127, 1, (k / 254) as u8, (k % 254 + 1) as u8);
        Some(SocketAddr::V4(SocketAddrV4::new(ip, 0)))
    }

    fn one(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let mut s = match self.source() {
            Some(src) => connect_from(src, self.dst)?,
            None => TcpStream::connect_timeout(&self.dst, IO_TIMEOUT)?,
        };
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        if !buf.is_empty() {
            s.write_all(buf)?;
            s.read_exact(buf)?;
        }
        match self.closer {
            Closer::Client => Ok(()),
            Closer::Server => {
                wait_eof(&mut s)?;
                let _ = s.shutdown(Shutdown::Both);
                Ok(())
            }
        }
    }
}

/// A loopback port nobody listens on right now, for [`ChurnConfig::server_port`].
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free server port")?;
    Ok(l.local_addr()?.port())
}

/// `socket()`, `IP_BIND_ADDRESS_NO_PORT`, `bind(src:0)`, `connect(dst)`.
fn connect_from(src: SocketAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid fd and a pointer to a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    s.bind(&SockAddr::from(src))?;
    s.connect_timeout(&SockAddr::from(dst), IO_TIMEOUT)?;
    Ok(s.into())
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(closer: Closer, payload: usize, rate: Option<u64>) -> ChurnConfig {
        ChurnConfig {
            client_threads: 2,
            server_threads: 2,
            closer,
            payload,
            rate,
            duration: Duration::from_millis(300),
            sources: Sources::Many,
            server_port: 0,
            source_addrs: 16,
        }
    }

    #[test]
    fn both_closers_complete_connections_without_errors() {
        for closer in [Closer::Client, Closer::Server] {
            for payload in [0, 100] {
                let r = run(&cfg(closer, payload, None)).expect("churn runs");
                assert!(r.completed > 10, "{closer:?}/{payload}: {r:?}");
                assert_eq!(r.errors, 0, "{closer:?}/{payload}: {r:?}");
            }
        }
    }

    #[test]
    fn one_source_completes_connections_without_errors() {
        let c = ChurnConfig {
            sources: Sources::One,
            server_port: free_port().expect("a port"),
            ..cfg(Closer::Client, 16, None)
        };
        // Twice on the same server port, as the windows of a scenario do.
        for _ in 0..2 {
            let r = run(&c).expect("churn runs");
            assert!(r.completed > 10, "{r:?}");
            assert_eq!(r.errors, 0, "{r:?}");
        }
    }

    #[test]
    fn a_target_rate_is_held() {
        let r = run(&cfg(Closer::Client, 16, Some(500))).expect("churn runs");
        // 500/s for 0.3 s: about 150 connections.
        assert!((100..=200).contains(&r.completed), "{r:?}");
    }
}
