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
    collections::VecDeque,
    io::{self, Write},
    os::fd::RawFd,
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
    /// Lines handed over and not yet written (a line counts as written
    /// once its newline is).
    backlog_lines: AtomicU64,
    /// The write error that ended the thread.
    err: Mutex<Option<io::Error>>,
}

/// What the reader left unread when the command ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unread {
    /// Bytes handed to the writer and not written, and, when the reader
    /// of a pipe went away, those it left in the pipe.
    pub bytes: u64,
    /// Lines among them: not printed.
    pub lines: u64,
    /// True when the reader went away (a closed pipe), false when it
    /// stopped reading.
    pub gone: bool,
}

/// Where the writer thread writes: a pipe is written a page at most at a
/// time, on line boundaries, as the kernel takes such a write whole or
/// not at all; so a write blocked on a stalled reader has taken no line,
/// and the lines written are the lines the pipe took. The last writes are
/// kept, as many bytes as the pipe holds, to count the lines a reader
/// that went away left in it.
#[derive(Clone, Copy, Default)]
struct Pipe {
    /// Its capacity (`F_GETPIPE_SZ`).
    capacity: usize,
}

impl Pipe {
    /// A write to a pipe of at most this many bytes is whole or nothing
    /// (`PIPE_BUF`).
    const ATOMIC: usize = 4096;

    /// `fd`'s pipe, if it is one.
    fn of(fd: RawFd) -> Option<Pipe> {
        // SAFETY: fstat(2) fills the zeroed struct it is given.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `fd` is only read.
        if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return None;
        }
        // SAFETY: F_GETPIPE_SZ takes no argument.
        let capacity = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
        Some(Pipe {
            capacity: usize::try_from(capacity).unwrap_or(64 << 10),
        })
    }

    /// Bytes written to `fd`'s pipe and not read (`FIONREAD`).
    fn unread(fd: RawFd) -> u64 {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &raw mut n) };
        if rc == 0 { n.max(0) as u64 } else { 0 }
    }

    /// Where the next write of `buf` from `from` ends: past the last
    /// newline within [`Pipe::ATOMIC`] bytes, or past the first newline
    /// when one line is longer, or at the end.
    fn write_end(buf: &[u8], from: usize) -> usize {
        let window = &buf[from..buf.len().min(from + Pipe::ATOMIC)];
        if from + window.len() == buf.len() {
            return buf.len();
        }
        match window.iter().rposition(|&b| b == b'\n') {
            Some(i) => from + i + 1,
            None => buf[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |i| from + i + 1),
        }
    }
}

/// The lines of `b`: its newlines.
fn newlines(b: &[u8]) -> u64 {
    b.iter().filter(|&&b| b == b'\n').count() as u64
}

/// The buffers written last, as many bytes as a pipe holds.
#[derive(Default)]
struct Written {
    bufs: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl Written {
    /// Keep `buf` (the part written); give back those no longer needed.
    fn keep(&mut self, buf: Vec<u8>, capacity: usize, spare: &Sender<Vec<u8>>) {
        self.bytes += buf.len();
        self.bufs.push_back(buf);
        while let Some(first) = self.bufs.front()
            && self.bytes - first.len() >= capacity
        {
            self.bytes -= first.len();
            let mut old = self.bufs.pop_front().unwrap_or_default();
            old.clear();
            let _ = spare.send(old);
        }
    }

    /// Lines in the last `bytes` written: a line read in part counts.
    fn lines_in_last(&self, bytes: u64) -> u64 {
        let mut left = usize::try_from(bytes).unwrap_or(usize::MAX);
        let mut lines = 0;
        for b in self.bufs.iter().rev() {
            let take = left.min(b.len());
            lines += newlines(&b[b.len() - take..]);
            left -= take;
            if left == 0 {
                break;
            }
        }
        lines
    }
}

/// A [`Write`] whose `flush` hands the lines so far to the writer thread.
pub struct Detached {
    buf: Vec<u8>,
    /// Each buffer handed over, with its lines.
    tx: Option<Sender<(Vec<u8>, u64)>>,
    /// Buffers the writer gives back, to be filled again.
    spare: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Written>>,
    /// Lines dropped because the reader was [`MAX_BACKLOG`] behind.
    pub dropped: u64,
    /// The descriptor the thread writes to, when it is to be watched for a
    /// reader that went away, and when it was last asked.
    watch: Option<(RawFd, Instant)>,
    /// True when that descriptor is a pipe.
    pipe: bool,
}

impl Detached {
    /// Start the thread that writes to `out`.
    #[cfg(test)]
    pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<Detached> {
        Detached::start(out, None)
    }

    /// Start the thread that writes to `out`, which writes to `fd` (a
    /// descriptor of its own, a duplicate: `fd` is asked after the thread
    /// has ended and closed `out`, so it must stay open). Ask
    /// `fd` every [`WATCH_EVERY`] whether its reader has gone (`tracer
    /// events ... | head -1`): a closed pipe then ends the command at
    /// once, not at the next line written, which a narrow filter may not
    /// print for hours. A pipe is written as [`Pipe`] says.
    pub fn watching<W: Write + Send + 'static>(out: W, fd: RawFd) -> io::Result<Detached> {
        Detached::start(out, Some(fd))
    }

    fn start<W: Write + Send + 'static>(mut out: W, fd: Option<RawFd>) -> io::Result<Detached> {
        let (tx, rx) = mpsc::channel::<(Vec<u8>, u64)>();
        let (spare_tx, spare) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let pipe = fd.and_then(Pipe::of);
        let thread = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                let mut written = Written::default();
                for (mut buf, lines) in rx {
                    let done = write_out(&mut out, &buf, lines, pipe.is_some(), &theirs);
                    if let Err((e, took)) = done {
                        *theirs.err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        if let Some(p) = pipe {
                            // What the pipe took of it, for `lines_in_last`.
                            buf.truncate(took);
                            written.keep(buf, p.capacity, &spare_tx);
                        }
                        break;
                    }
                    match pipe {
                        Some(p) => written.keep(buf, p.capacity, &spare_tx),
                        None => {
                            let mut buf = buf;
                            buf.clear();
                            let _ = spare_tx.send(buf);
                        }
                    }
                }
                written
            })?;
        Ok(Detached {
            buf: Vec::with_capacity(64 * 1024),
            tx: Some(tx),
            spare,
            shared,
            thread: Some(thread),
            dropped: 0,
            watch: fd.map(|fd| (fd, Instant::now())),
            pipe: pipe.is_some(),
        })
    }

    /// True once `fd`'s reader has gone: `poll` reports an error (a pipe
    /// with no reader left) or a hang-up (a socket or terminal closed).
    fn hung_up(fd: RawFd) -> bool {
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

    fn backlog(&self) -> Unread {
        Unread {
            bytes: self.shared.backlog.load(Ordering::Relaxed),
            lines: self.shared.backlog_lines.load(Ordering::Relaxed),
            gone: false,
        }
    }

    /// Hand over what is left and wait for the reader to take it, as long
    /// as it keeps taking some within [`PATIENCE`]. Returns what it left
    /// unread: the lines never written (a reader that stalled, or went
    /// away), and those a pipe's reader that went away left in the pipe.
    pub fn finish(mut self) -> io::Result<Unread> {
        // Lines a reader that went away kept from being handed over.
        let kept = match self.flush() {
            Ok(()) => Unread::default(),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Unread {
                bytes: self.buf.len() as u64,
                lines: newlines(&self.buf),
                gone: true,
            },
            Err(e) => return Err(e),
        };
        drop(self.tx.take());
        let Some(thread) = self.thread.take() else {
            return Ok(kept);
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
                let u = self.backlog();
                return Ok(Unread {
                    bytes: u.bytes + kept.bytes,
                    lines: u.lines + kept.lines,
                    ..u
                });
            }
        }
        let written = thread.join().unwrap_or_default();
        let mut unread = self.backlog();
        (unread.bytes, unread.lines) = (unread.bytes + kept.bytes, unread.lines + kept.lines);
        unread.gone = kept.gone;
        if let Some((fd, _)) = self.watch
            && Detached::hung_up(fd)
        {
            unread.gone = true;
            if self.pipe {
                let bytes = Pipe::unread(fd);
                unread.bytes += bytes;
                unread.lines += written.lines_in_last(bytes);
            }
        }
        match self.failed() {
            Some(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
            _ => Ok(unread),
        }
    }
}

/// Write `buf` (`lines` lines) to `out`, a pipe's way when `pipe`,
/// taking what is written off the backlog as it goes. An error comes with
/// the bytes written before it.
fn write_out(
    out: &mut impl Write,
    buf: &[u8],
    lines: u64,
    pipe: bool,
    shared: &Shared,
) -> Result<(), (io::Error, usize)> {
    let mut from = 0;
    while from < buf.len() {
        let end = if pipe {
            Pipe::write_end(buf, from)
        } else {
            buf.len()
        };
        match out.write(&buf[from..end]) {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), from)),
            Ok(n) => {
                let took = if from == 0 && n == buf.len() {
                    lines
                } else {
                    newlines(&buf[from..from + n])
                };
                from += n;
                shared.backlog.fetch_sub(n as u64, Ordering::Relaxed);
                shared.backlog_lines.fetch_sub(took, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, from)),
        }
    }
    out.flush().map_err(|e| (e, from))
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
        let lines = newlines(&self.buf);
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
                lines: MAX_BACKLOG / 1024,
                gone: false
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
        // SAFETY: two descriptors for pipe2(2) to fill (close-on-exec: a
        // child another test spawns must not hold the read end open).
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe(2) just made them, and nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let fd = write.as_raw_fd();
        let mut d = Detached::watching(std::fs::File::from(write), fd).unwrap();
        std::thread::sleep(WATCH_EVERY);
        assert!(d.flush().is_ok(), "the reader is still there");
        drop(read);
        std::thread::sleep(WATCH_EVERY);
        let e = d.flush().expect_err("the reader has gone");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    /// A pipe whose reader took some lines and went away: what it never
    /// got, lines never written and lines it left in the pipe, is counted
    /// exactly, a line it took in part among them.
    #[test]
    fn a_pipe_whose_reader_went_away_counts_the_lines_it_never_got() {
        use std::io::Read as _;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let mut fds = [0; 2];
        // SAFETY: two descriptors for pipe2(2) to fill (close-on-exec: a
        // child another test spawns must not hold the read end open).
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe(2) just made them, and nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // The writer gets a duplicate, as `tracer events` gives it one of
        // stdout: the descriptor watched stays open after the writer ends.
        let out = std::fs::File::from(write.try_clone().unwrap());
        let mut d = Detached::watching(out, write.as_raw_fd()).unwrap();
        assert!(d.pipe);
        // 2000 lines of 100 bytes, in turns of 50: three times what the
        // pipe holds (64 KiB).
        for turn in 0..40 {
            for i in 0..50 {
                writeln!(d, "{:099}", turn * 50 + i).unwrap();
            }
            d.flush().unwrap();
        }
        // The reader takes 123 lines and part of the next, then leaves
        // once the writer has filled the pipe again.
        let mut reader = std::fs::File::from(read);
        let mut got = vec![0u8; 12_345];
        reader.read_exact(&mut got).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(reader);
        std::thread::sleep(WATCH_EVERY);
        let u = d.finish().unwrap();
        assert!(u.gone, "{u:?}");
        assert_eq!(u.lines, 2000 - 123, "{u:?}");
        assert_eq!(u.bytes, 200_000 - 12_345, "{u:?}");
    }

    #[test]
    fn a_pipe_is_written_in_whole_lines_of_at_most_a_page() {
        let line = [b'x'; 99];
        let mut buf = Vec::new();
        for _ in 0..100 {
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        // 40 lines of 100 bytes fit in 4096, 41 do not.
        assert_eq!(Pipe::write_end(&buf, 0), 4000);
        assert_eq!(Pipe::write_end(&buf, 4000), 8000);
        assert_eq!(Pipe::write_end(&buf, 8000), 10_000);
        // A line longer than a page goes whole, alone.
        let mut long = vec![b'y'; 5000];
        long.push(b'\n');
        long.extend_from_slice(b"short\n");
        assert_eq!(Pipe::write_end(&long, 0), 5001);
        assert_eq!(Pipe::write_end(&long, 5001), long.len());
    }
}
