//! The churn's server: threads accepting on one listener, answering each
//! exchange, and closing first or on EOF as the churn asks.
use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;

use super::{ChurnConfig, Closer, IO_TIMEOUT};

/// A running server; stops (and joins its threads) on drop.
pub struct Server {
    addr: SocketAddr,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Server {
    /// Listen on 127.0.0.1 at `cfg.server_port` and start accepting.
    pub fn start(cfg: &ChurnConfig) -> anyhow::Result<Server> {
        let (threads, closer, payload) = (cfg.server_threads, cfg.closer, cfg.payload);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, cfg.server_port))
            .with_context(|| format!("binding the churn server to port {}", cfg.server_port))?;
        let addr = listener
            .local_addr()
            .context("reading the churn server's address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let l = listener.try_clone().context("sharing the churn listener")?;
            let (stop, errors) = (Arc::clone(&stop), Arc::clone(&errors));
            let h = thread::Builder::new()
                .name(format!("churn-srv-{i}"))
                .spawn(move || serve(l, closer, payload, &stop, &errors))
                .context("starting a churn server thread")?;
            handles.push(h);
        }
        Ok(Server {
            addr,
            listener,
            stop,
            errors,
            threads: handles,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections the server saw fail so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // On Linux, shutting a listener down wakes every thread blocked in accept().
        // SAFETY: plain syscall on a descriptor we own.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

fn serve(
    listener: TcpListener,
    closer: Closer,
    payload: usize,
    stop: &AtomicBool,
    errors: &AtomicU64,
) {
    let mut buf = vec![0u8; payload.max(1)];
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                if serve_one(s, closer, &mut buf[..payload]).is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) if stop.load(Ordering::Relaxed) => break,
            Err(_) => {
                // EMFILE and friends: count, breathe, go on.
                errors.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn serve_one(mut s: TcpStream, closer: Closer, buf: &mut [u8]) -> std::io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    if !buf.is_empty() {
        s.read_exact(buf)?;
        s.write_all(buf)?;
    }
    if closer == Closer::Client {
        wait_eof(&mut s)?;
    }
    Ok(())
}

/// Wait for the peer's FIN; any byte before it is unexpected.
pub(super) fn wait_eof(s: &mut TcpStream) -> std::io::Result<()> {
    let mut b = [0u8; 64];
    match s.read(&mut b)? {
        0 => Ok(()),
        _ => Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "unexpected bytes before EOF",
        )),
    }
}
