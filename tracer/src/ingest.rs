//! Ring buffer -> decoded events, without allocating per event.
use std::os::fd::AsRawFd;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

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
    /// Records that could not be decoded (another ABI version, corruption).
    pub decode_errors: u64,
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
            decode_errors: 0,
        })
    }

    /// Wait until events are ready, then hand every ready one to `f`.
    /// Returns how many records were read.
    pub async fn next_batch(&mut self, f: impl FnMut(&SockEvent)) -> std::io::Result<usize> {
        let Ingest {
            fd,
            logs,
            tick,
            decode_errors,
        } = self;
        if let Some(l) = logs {
            l.flush();
        }
        let Some(tick) = tick else {
            let mut guard = fd.readable_mut().await?;
            let n = drain(guard.get_inner_mut(), decode_errors, f);
            guard.clear_ready();
            return Ok(n);
        };
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let n = drain(guard.get_inner_mut(), decode_errors, f);
                guard.clear_ready();
                Ok(n)
            }
            _ = tick.tick() => Ok(drain(fd.get_mut(), decode_errors, f)),
        }
    }

    /// Hand every event already in the ring buffer to `f`, without waiting.
    pub fn drain_now(&mut self, f: impl FnMut(&SockEvent)) -> usize {
        drain(self.fd.get_mut(), &mut self.decode_errors, f)
    }

    /// The ring buffer's file descriptor, for diagnostics.
    pub fn raw_fd(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }
}

/// Decode and hand out every record in the ring; count the undecodable.
fn drain(ring: &mut RingBuf<MapData>, errors: &mut u64, mut f: impl FnMut(&SockEvent)) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        n += 1;
        match SockEvent::decode(&item) {
            Ok(ev) => f(&ev),
            Err(_) => *errors += 1,
        }
    }
    n
}
