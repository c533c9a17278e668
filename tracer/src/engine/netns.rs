//! Network namespaces that vanish: every socket of a namespace ends with
//! it. The kernel destroys a namespace once no process, mount or socket
//! holds it, and purges its timewait sockets without any event; the
//! pipeline notices when discovery no longer finds it and calls
//! [`Engine::end_netns`].
use super::Engine;
use super::observer::{Correction, Observer, TimeWaitEnd};
use super::record::{flag, tw_end};
use crate::tcp::TcpState::Close;

impl Engine {
    /// End every live record of the network namespaces `gone` (sorted) at
    /// `now_ns`, in one pass over the records however many vanished: a
    /// TIME_WAIT stay ends as `Reset` (killed before its timer), any other
    /// socket is closed and counted as [`Correction::NetnsGone`]. Returns
    /// how many records ended. Records of unknown namespace (0) are never
    /// ended this way.
    pub fn end_netns(&mut self, gone: &[u32], now_ns: u64, obs: &mut impl Observer) -> u64 {
        debug_assert!(gone.is_sorted(), "namespaces sorted");
        if gone.iter().all(|&n| n == 0) {
            return 0;
        }
        self.clock_ns = self.clock_ns.max(now_ns);
        self.time_wait_timers(obs);
        let mut n = 0;
        for slot in 0..self.store.slots() {
            let Some(r) = self.store.get(slot) else {
                continue;
            };
            if r.netns == 0 || r.has(flag::FINISHED) || gone.binary_search(&r.netns).is_err() {
                continue;
            }
            n += 1;
            if r.has(flag::TW) {
                self.end_time_wait(slot, now_ns, TimeWaitEnd::Reset, obs);
                continue;
            }
            obs.correction(r.cookie, Correction::NetnsGone);
            self.store.update(slot, |r| {
                r.push_path(Close);
                r.set(flag::FINISHED, true);
                r.set(flag::LOWER_BOUND, false);
                r.state = Close;
                r.since_ns = now_ns.max(r.since_ns);
                r.tw_end = tw_end::NONE;
            });
        }
        self.drop_retained();
        n
    }
}
