//! Ring buffer -> decoded events, without allocating per event.
use std::os::fd::AsRawFd;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::event::SockEvent;

/// Wakes when the kernel has written events, and hands them out decoded.
pub struct Ingest {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Records that could not be decoded (another ABI version, corruption).
    pub decode_errors: u64,
}

impl Ingest {
    /// Wrap the ring buffer; must be called inside a tokio runtime.
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Ingest> {
        // SAFETY: the ring buffer owns its fd and closes it only on drop,
        // which happens after the AsyncFd that wraps it deregisters.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Ingest {
            fd,
            decode_errors: 0,
        })
    }

    /// Wait until events are ready, then hand every ready one to `f`.
    /// Returns how many records were read.
    pub async fn next_batch(&mut self, mut f: impl FnMut(&SockEvent)) -> std::io::Result<usize> {
        let mut guard = self.fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut n = 0;
        let mut errors = 0;
        while let Some(item) = ring.next() {
            n += 1;
            match SockEvent::decode(&item) {
                Ok(ev) => f(&ev),
                Err(_) => errors += 1,
            }
        }
        guard.clear_ready();
        self.decode_errors += errors;
        Ok(n)
    }

    /// Hand every event already in the ring buffer to `f`, without waiting.
    pub fn drain_now(&mut self, mut f: impl FnMut(&SockEvent)) -> usize {
        let ring = self.fd.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            match SockEvent::decode(&item) {
                Ok(ev) => f(&ev),
                Err(_) => self.decode_errors += 1,
            }
        }
        n
    }

    /// The ring buffer's file descriptor, for diagnostics.
    pub fn raw_fd(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }
}
