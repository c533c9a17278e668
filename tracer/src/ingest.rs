//! Ring buffer -> decoded events, without allocating per event.
use std::{os::fd::AsRawFd, sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::Notify};

use crate::{
    bpf::{Stream, klog::KernelLogger},
    event::SockEvent,
};

/// Wakes when the kernel has written events, and hands them out decoded.
pub struct Ingest {
    fd: AsyncFd<RingBuf<MapData>>,
    /// The programs' diagnostics, forwarded to the log on every drain.
    logs: Option<KernelLogger>,
    /// Drain on this timer too, for programs that wake us only when the
    /// ring fills up (`Probes::load(.., batched: true)`).
    tick: Option<tokio::time::Interval>,
    /// Asks from other threads to read the ring buffer now.
    asks: Arc<Drain>,
    /// Records that could not be decoded (another ABI version, corruption).
    pub decode_errors: u64,
    /// Sees every record's bytes before it is decoded (a recording).
    tap: Option<Tap>,
}

/// What a recording taps the ring buffer with: the bytes of each record
/// read, before decoding.
pub type Tap = Box<dyn FnMut(&[u8]) + Send>;

/// Lets another thread (the HTTP server, before a scrape) ask the event
/// loop to read the ring buffer now, and wait a bounded time until what it
/// read has been applied and published. Between drains the programs wake
/// user space only every [`crate::bpf::DRAIN_INTERVAL`], and at a busy
/// host's rate that is enough events to move a gauge past `ss`'s count.
#[derive(Default)]
pub struct Drain {
    asked: Notify,
    done: Notify,
}

impl Drain {
    /// Ask for a drain and wait until it is done, at most `within`.
    /// Returns whether it was done in time.
    pub async fn now(&self, within: Duration) -> bool {
        let done = self.done.notified();
        tokio::pin!(done);
        // Registered before asking, so the answer cannot be missed.
        done.as_mut().enable();
        self.asked.notify_one();
        tokio::time::timeout(within, done).await.is_ok()
    }

    /// The event loop has applied and published a drain that was asked for.
    pub fn done(&self) {
        self.done.notify_waiters();
    }
}

impl Ingest {
    /// Wrap the programs' stream; must be called inside a tokio runtime.
    /// `drain_every` also drains on a timer (for batched wake-ups).
    pub fn new(
        stream: Stream,
        drain_every: Option<std::time::Duration>,
    ) -> std::io::Result<Ingest> {
        let Stream { events: ring, logs } = stream;
        // SAFETY: the ring buffer owns its fd and closes it only on drop,
        // which happens after the AsyncFd that wraps it deregisters.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        let tick = drain_every.map(|d| {
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        Ok(Ingest {
            fd,
            logs,
            tick,
            asks: Arc::default(),
            decode_errors: 0,
            tap: None,
        })
    }

    /// Hand the bytes of every record read from now on to `tap` too.
    pub fn tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// The handle other threads ask for a drain with.
    pub fn drain_handle(&self) -> Arc<Drain> {
        self.asks.clone()
    }

    /// A drain asked for has been applied and published.
    pub fn drained(&self) {
        self.asks.done();
    }

    /// Wait until events are ready, the drain timer fires or a drain is
    /// asked for, then hand every ready event to `f`. Returns how many
    /// records were read, and whether a drain was asked for (answer it with
    /// [`Drain::done`] once the batch is published).
    pub async fn next_batch(
        &mut self,
        f: impl FnMut(&SockEvent),
    ) -> std::io::Result<(usize, bool)> {
        let Ingest {
            fd,
            logs,
            tick,
            asks,
            decode_errors,
            tap,
        } = self;
        if let Some(l) = logs {
            l.flush();
        }
        let timer = async {
            match tick {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let n = drain(guard.get_inner_mut(), decode_errors, tap, f);
                guard.clear_ready();
                Ok((n, false))
            }
            () = timer => Ok((drain(fd.get_mut(), decode_errors, tap, f), false)),
            () = asks.asked.notified() => Ok((drain(fd.get_mut(), decode_errors, tap, f), true)),
        }
    }

    /// Hand every event already in the ring buffer to `f`, without waiting.
    pub fn drain_now(&mut self, f: impl FnMut(&SockEvent)) -> usize {
        drain(self.fd.get_mut(), &mut self.decode_errors, &mut self.tap, f)
    }

    /// The ring buffer's file descriptor, for diagnostics.
    pub fn raw_fd(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }
}

/// Decode and hand out every record in the ring; count the undecodable.
fn drain(
    ring: &mut RingBuf<MapData>,
    errors: &mut u64,
    tap: &mut Option<Tap>,
    mut f: impl FnMut(&SockEvent),
) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        n += 1;
        if let Some(tap) = tap {
            tap(&item);
        }
        match SockEvent::decode(&item) {
            Ok(ev) => f(&ev),
            Err(_) => *errors += 1,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::Drain;

    #[tokio::test]
    async fn a_drain_nobody_answers_times_out() {
        let d = Drain::default();
        assert!(!d.now(Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn a_drain_is_answered_once_the_loop_has_read() {
        let d = Arc::new(Drain::default());
        let event_loop = {
            let d = d.clone();
            tokio::spawn(async move {
                // As the loop does: wake on the ask, read, then answer.
                d.asked.notified().await;
                d.done();
            })
        };
        assert!(d.now(Duration::from_secs(5)).await);
        event_loop.await.unwrap();
    }
}
