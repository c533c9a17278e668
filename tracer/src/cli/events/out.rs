//! Stdout for `tracer events`, written by a thread of its own.
//!
//! A reader that stops reading (a paused pager, a stuck ssh pipe, a
//! process that hangs) blocks a write to stdout for as long as it likes.
//! Written from the event loop, that stalls the loop and its signals with
//! it: SIGTERM would wait on the reader, and the kernel's lanes would fill.
//! So the loop appends each turn's lines to a buffer and hands it to the
//! writer thread, never waiting. While more than [`MAX_BACKLOG`] bytes wait
//! for the reader (a turn's own lines always go when nothing waits), a
//! turn's lines are dropped and counted instead: the
//! engine and the leak detectors keep every event, only printing falls
//! behind.
use std::{
    io::{self, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// At most this many bytes wait for the reader: about 100,000 events.
pub const MAX_BACKLOG: u64 = 32 << 20;

/// How long the end waits for a reader that takes nothing.
const PATIENCE: Duration = Duration::from_secs(2);

/// How often a watched descriptor is asked whether its reader has gone.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// What the writer thread and the loop share.
#[derive(Default)]
struct Shared {
    /// Bytes handed over and not yet written; once nothing more is handed
    /// over, its fall is the reader's progress.
    backlog: AtomicU64,
    /// Lines of the buffers handed over and not yet written whole.
    backlog_lines: AtomicU64,
    /// The write error that ended the thread.
    err: Mutex<Option<io::Error>>,
}

/// What the reader left unread when the command ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unread {
    /// Bytes handed to the writer and not written.
    pub bytes: u64,
    /// Lines of the buffers not written whole: not printed (a buffer the
    /// reader took part of counts whole).
    pub lines: u64,
}

/// A [`Write`] whose `flush` hands the lines so far to the writer thread.
pub struct Detached {
    buf: Vec<u8>,
    /// Each buffer handed over, with its lines.
    tx: Option<Sender<(Vec<u8>, u64)>>,
    /// Buffers the writer gives back, to be filled again.
    spare: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Lines dropped because the reader was [`MAX_BACKLOG`] behind.
    pub dropped: u64,
    /// The descriptor the thread writes to, when it is to be watched for a
    /// reader that went away, and when it was last asked.
    watch: Option<(std::os::fd::RawFd, Instant)>,
}

impl Detached {
    /// Start the thread that writes to `out`.
    pub fn spawn<W: Write + Send + 'static>(mut out: W) -> io::Result<Detached> {
        let (tx, rx) = mpsc::channel::<(Vec<u8>, u64)>();
        let (spare_tx, spare) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                for (mut buf, lines) in rx {
                    if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
                        *theirs.err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                    theirs
                        .backlog
                        .fetch_sub(buf.len() as u64, Ordering::Relaxed);
                    theirs.backlog_lines.fetch_sub(lines, Ordering::Relaxed);
                    buf.clear();
                    let _ = spare_tx.send(buf);
                }
            })?;
        Ok(Detached {
            buf: Vec::with_capacity(64 * 1024),
            tx: Some(tx),
            spare,
            shared,
            thread: Some(thread),
            dropped: 0,
            watch: None,
        })
    }

    /// Also ask `fd` (what the thread writes to) every [`WATCH_EVERY`]
    /// whether its reader has gone (`tracer events ... | head -1`): a
    /// closed pipe then ends the command at once, not at the next line
    /// written, which a narrow filter may not print for hours.
    pub fn watching(mut self, fd: std::os::fd::RawFd) -> Detached {
        self.watch = Some((fd, Instant::now()));
        self
    }

    /// True once `fd`'s reader has gone: `poll` reports an error (a pipe
    /// with no reader left) or a hang-up (a socket or terminal closed).
    fn hung_up(fd: std::os::fd::RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
    }

    /// The error that ended the writer, if it ended.
    fn failed(&self) -> Option<io::Error> {
        self.shared
            .err
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Hand over what is left and wait for the reader to take it, as long
    /// as it keeps taking some within [`PATIENCE`]. Returns what it left
    /// unread.
    pub fn finish(mut self) -> io::Result<Unread> {
        self.flush()?;
        drop(self.tx.take());
        let Some(thread) = self.thread.take() else {
            return Ok(Unread::default());
        };
        let mut left = self.shared.backlog.load(Ordering::Relaxed);
        let mut moved = Instant::now();
        while !thread.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.shared.backlog.load(Ordering::Relaxed);
            if now != left {
                (left, moved) = (now, Instant::now());
            } else if moved.elapsed() > PATIENCE {
                // The thread stays blocked in its write; the process ends.
                return Ok(Unread {
                    bytes: left,
                    lines: self.shared.backlog_lines.load(Ordering::Relaxed),
                });
            }
        }
        let _ = thread.join();
        match self.failed() {
            Some(e) => Err(e),
            None => Ok(Unread::default()),
        }
    }
}

impl Write for Detached {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    /// Hand the lines so far to the writer; never waits. Fails with the
    /// writer's error once it has stopped (a closed pipe: `BrokenPipe`).
    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        if let Some((fd, asked)) = &mut self.watch
            && asked.elapsed() >= WATCH_EVERY
        {
            *asked = Instant::now();
            if Detached::hung_up(*fd) {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let n = self.buf.len() as u64;
        let lines = self.buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let backlog = self.shared.backlog.load(Ordering::Relaxed);
        if backlog > 0 && backlog + n > MAX_BACKLOG {
            if self.dropped == 0 {
                tracing::warn!(
                    event = "stdout_slow",
                    "stdout is not keeping up: events are left unprinted until its reader \
                     catches up (the exit line counts them)"
                );
            }
            self.dropped += lines;
            self.buf.clear();
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.buf.len()));
        let full = std::mem::replace(&mut self.buf, next);
        self.shared.backlog.fetch_add(n, Ordering::Relaxed);
        self.shared
            .backlog_lines
            .fetch_add(lines, Ordering::Relaxed);
        let sent = self.tx.as_ref().map(|tx| tx.send((full, lines)));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread ended between the check above and now.
            _ => Err(self
                .failed()
                .unwrap_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::SyncSender;

    use super::*;

    /// A reader that takes one write each time the test allows it.
    struct Gate(Receiver<()>, SyncSender<Vec<u8>>);

    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.recv().map_err(|_| io::ErrorKind::BrokenPipe)?;
            let _ = self.1.send(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_reader_in_order() {
        let (allow, gate) = mpsc::channel();
        let (got_tx, got) = mpsc::sync_channel(16);
        let mut d = Detached::spawn(Gate(gate, got_tx)).unwrap();
        for i in 0..3 {
            writeln!(d, "line {i}").unwrap();
            d.flush().unwrap();
            allow.send(()).unwrap();
        }
        let all: Vec<u8> = (0..3).flat_map(|_| got.recv().unwrap()).collect();
        assert_eq!(String::from_utf8(all).unwrap(), "line 0\nline 1\nline 2\n");
        assert_eq!(d.finish().unwrap(), Unread::default());
    }

    #[test]
    fn a_reader_that_stops_costs_lines_not_time() {
        let (_allow, gate) = mpsc::channel::<()>();
        let (got_tx, _got) = mpsc::sync_channel(16);
        let mut d = Detached::spawn(Gate(gate, got_tx)).unwrap();
        let line = [b'x'; 1023];
        let started = Instant::now();
        // Twice the backlog, one 1 KiB line a turn: half are kept.
        let turns = 2 * MAX_BACKLOG / 1024;
        for _ in 0..turns {
            d.write_all(&line).unwrap();
            d.write_all(b"\n").unwrap();
            d.flush().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(d.dropped, turns - MAX_BACKLOG / 1024);
        let started = Instant::now();
        // Nothing was read: the end gives up after its patience, and says
        // how many lines were handed over but never written.
        assert_eq!(
            d.finish().unwrap(),
            Unread {
                bytes: MAX_BACKLOG,
                lines: MAX_BACKLOG / 1024
            }
        );
        let waited = started.elapsed();
        assert!(PATIENCE <= waited && waited < PATIENCE * 2, "{waited:?}");
    }

    #[test]
    fn a_turn_larger_than_the_backlog_goes_when_nothing_waits() {
        let (allow, gate) = mpsc::channel();
        let (got_tx, got) = mpsc::sync_channel(16);
        let mut d = Detached::spawn(Gate(gate, got_tx)).unwrap();
        let big = vec![b'x'; (MAX_BACKLOG + 1) as usize];
        d.write_all(&big).unwrap();
        d.flush().unwrap();
        assert_eq!(d.dropped, 0);
        allow.send(()).unwrap();
        assert_eq!(got.recv().unwrap().len(), big.len());
        assert_eq!(d.finish().unwrap(), Unread::default());
    }

    #[test]
    fn a_closed_reader_ends_the_stream_with_its_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut d = Detached::spawn(Closed).unwrap();
        d.write_all(b"one\n").unwrap();
        d.flush().unwrap();
        let closed = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            d.write_all(b"two\n").unwrap();
            d.flush()
                .is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        });
        assert!(closed, "the writer's BrokenPipe never reached the loop");
    }

    /// A reader gone while nothing is written: the next flush after the
    /// watch interval says so, without a line to write.
    #[test]
    fn a_watched_pipe_whose_reader_closed_is_broken_without_a_write() {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let mut fds = [0; 2];
        // SAFETY: two descriptors for pipe(2) to fill.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe(2) just made them, and nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let fd = write.as_raw_fd();
        let mut d = Detached::spawn(std::fs::File::from(write))
            .unwrap()
            .watching(fd);
        std::thread::sleep(WATCH_EVERY);
        assert!(d.flush().is_ok(), "the reader is still there");
        drop(read);
        std::thread::sleep(WATCH_EVERY);
        let e = d.flush().expect_err("the reader has gone");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
