//! Engine tests: builders for events and dump entries, a recording
//! observer, and a harness that checks the store's invariants after every
//! step. The scenarios live in the submodules, one concern each.
use super::{
    ClosedBy, Config, Correction, Direction, Engine, Handshake, Listing, Observer, ReconcileReport,
    Role, SocketView, TimeWaitEnd,
};
use crate::event::{Kind, SockEvent};
use crate::snapshot::SocketSnapshot;
use crate::tcp::{Family, TcpState};
pub use crate::testkit::SnapshotBuilder;
use crate::testkit::{LOCAL, REMOTE_PORT, local_port};

mod coverage;
mod disorder;
mod evict;
mod handshakes;
mod lifecycle;
mod lives;
mod netns;
mod props;
mod reconcile;
mod reuse;
mod timers;
mod timewait;

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Milliseconds as ns.
pub fn ms(n: u64) -> u64 {
    n * 1_000_000
}

/// Seconds as ns.
pub fn secs(n: u64) -> u64 {
    n * 1_000_000_000
}

/// An event under construction: `ev(7).from(FinWait2).to(Close).at(ms(5))`.
#[derive(Clone, Copy, Debug)]
pub struct Ev(pub SockEvent);

/// A state event of `cookie` at time 0, from a bystander task (pid 999).
pub fn ev(cookie: u64) -> Ev {
    Ev(crate::testkit::event(cookie))
}

/// A reset received by `cookie`.
pub fn rst_rx(cookie: u64) -> Ev {
    ev(cookie).kind(Kind::ResetReceived)
}

/// A reset sent by `cookie`.
pub fn rst_tx(cookie: u64) -> Ev {
    ev(cookie).kind(Kind::ResetSent)
}

impl Ev {
    pub fn from(mut self, s: TcpState) -> Ev {
        self.0.old_state = Some(s);
        self
    }
    pub fn to(mut self, s: TcpState) -> Ev {
        self.0.new_state = Some(s);
        self
    }
    pub fn at(mut self, ts: u64) -> Ev {
        self.0.ts_ns = ts;
        self
    }
    pub fn kind(mut self, k: Kind) -> Ev {
        self.0.kind = k;
        self
    }
    /// A close carrying `sk_err` = `err`.
    pub fn err(mut self, err: i32) -> Ev {
        self.0.err = err as u8;
        self
    }
    /// Ran in the context of `pid`/`comm`.
    pub fn by(mut self, pid: u32, comm: &str) -> Ev {
        self.0.pid = pid;
        self.0.comm = [0; 16];
        self.0.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        self
    }
    /// The socket's network namespace inode.
    pub fn netns(mut self, netns: u32) -> Ev {
        self.0.netns = netns;
        self
    }
    /// The other end of `cookie`'s connection: `ev(cookie)`'s tuple
    /// turned round.
    pub fn peer_of(mut self, cookie: u64) -> Ev {
        let of = ev(cookie).0;
        (self.0.saddr, self.0.sport) = (of.daddr, of.dport);
        (self.0.daddr, self.0.dport) = (of.saddr, of.sport);
        self
    }
    /// The same IPv4 tuple as an IPv6 socket has it: a dual-stack socket's
    /// IPv4-mapped addresses (`::ffff:a.b.c.d`).
    pub fn mapped(mut self) -> Ev {
        let map = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().into(),
            v6 => v6,
        };
        self.0.family = Some(Family::Ipv6);
        (self.0.saddr, self.0.daddr) = (map(self.0.saddr), map(self.0.daddr));
        self
    }
    /// On loopback: 127.0.0.1 at both ends.
    pub fn loopback(mut self) -> Ev {
        (self.0.saddr, self.0.daddr) = (LOOPBACK, LOOPBACK);
        self
    }
    /// Local and remote ports.
    pub fn ports(mut self, local: u16, remote: u16) -> Ev {
        self.0.sport = local;
        self.0.dport = remote;
        self
    }
}

/// A dump entry for `cookie`, with the same tuple `ev(cookie)` has.
pub use crate::testkit::snapshot as diag;

/// A timewait socket (`state` TimeWait or FinWait2) with `expires_ms` left.
pub fn tw(cookie: u64, state: TcpState, expires_ms: u32) -> SocketSnapshot {
    diag(cookie, state).timewait(expires_ms)
}

/// One observer call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Obs {
    Stay(u64, TcpState, u64, bool),
    Trans(u64, TcpState, TcpState),
    Closed(u64, Option<ClosedBy>),
    Retrans(u64),
    Synack(u64),
    Reset(u64, Direction),
    TwEnded(u64, TimeWaitEnd),
    TwNever(u64),
    Corr(u64, Correction),
    Evicted(u64, bool),
}

/// Records every call; fails on an implausible (wrapped) duration.
/// Handshake outcomes go to a list of their own, so the call sequences
/// of the other tests stay as they were.
#[derive(Default, Debug)]
pub struct Recorder(pub Vec<Obs>, pub Vec<(u64, Role, Handshake)>);

impl Observer for Recorder {
    fn stay(&mut self, cookie: u64, state: TcpState, duration_ns: u64, lower_bound: bool) {
        assert!(
            duration_ns < 1_000_000_000_000_000,
            "wrapped duration {duration_ns} for {state}"
        );
        self.0
            .push(Obs::Stay(cookie, state, duration_ns, lower_bound));
    }
    fn transition(&mut self, cookie: u64, from: TcpState, to: TcpState) {
        self.0.push(Obs::Trans(cookie, from, to));
    }
    fn closed(&mut self, cookie: u64, by: Option<ClosedBy>) {
        self.0.push(Obs::Closed(cookie, by));
    }
    fn retransmit(&mut self, cookie: u64, _state: Option<TcpState>) {
        self.0.push(Obs::Retrans(cookie));
    }
    fn synack_retransmit(&mut self, cookie: u64) {
        self.0.push(Obs::Synack(cookie));
    }
    fn reset(&mut self, cookie: u64, direction: Direction, _state: Option<TcpState>) {
        self.0.push(Obs::Reset(cookie, direction));
    }
    fn handshake(&mut self, cookie: u64, role: Role, outcome: Handshake) {
        if let Handshake::Established {
            latency_ns: Some(ns),
        } = outcome
        {
            assert!(ns < 1_000_000_000_000_000, "wrapped latency {ns}");
        }
        self.1.push((cookie, role, outcome));
    }
    fn time_wait_ended(&mut self, cookie: u64, how: TimeWaitEnd) {
        self.0.push(Obs::TwEnded(cookie, how));
    }
    fn time_wait_never_appeared(&mut self, cookie: u64) {
        self.0.push(Obs::TwNever(cookie));
    }
    fn correction(&mut self, cookie: u64, reason: Correction) {
        self.0.push(Obs::Corr(cookie, reason));
    }
    fn evicted(&mut self, cookie: u64, live: bool) {
        self.0.push(Obs::Evicted(cookie, live));
    }
}

/// An engine, a recorder, and invariant checks after every step.
pub struct H {
    pub e: Engine,
    pub o: Recorder,
}

impl H {
    pub fn new() -> H {
        H::with(Config::default())
    }

    pub fn with(cfg: Config) -> H {
        H {
            e: Engine::new(cfg),
            o: Recorder::default(),
        }
    }

    /// Apply events in order, each asked ahead for first as the pipeline
    /// does (`Engine::prefetch`, which must change nothing).
    pub fn run(&mut self, evs: impl IntoIterator<Item = Ev>) -> &mut H {
        for e in evs {
            self.e.prefetch(&e.0);
            self.e.apply(&e.0, &mut self.o);
            self.check();
        }
        self
    }

    /// Reconcile with a full dump (TIME_WAIT included).
    pub fn reconcile(&mut self, dump: &[SocketSnapshot], now: u64) -> ReconcileReport {
        self.reconcile_with(dump, now, true)
    }

    /// Reconcile with the same full dump twice, 1 ms before `now` and at
    /// `now`: a record is judged absent only by a second dump in a row
    /// that lacks it (a full one, for a timewait record). Returns both
    /// reports summed.
    pub fn reconcile_absent(&mut self, dump: &[SocketSnapshot], now: u64) -> ReconcileReport {
        let a = self.reconcile(dump, now - ms(1));
        let b = self.reconcile(dump, now);
        ReconcileReport {
            missed: a.missed + b.missed,
            vanished: a.vanished + b.vanished,
            absent_once: a.absent_once + b.absent_once,
            state_mismatch: a.state_mismatch + b.state_mismatch,
            time_wait_confirmed: a.time_wait_confirmed + b.time_wait_confirmed,
            orphan_fin_wait2: a.orphan_fin_wait2 + b.orphan_fin_wait2,
            orphan_moved_on: a.orphan_moved_on + b.orphan_moved_on,
            time_wait_expired: a.time_wait_expired + b.time_wait_expired,
            time_wait_unconfirmed_expired: a.time_wait_unconfirmed_expired
                + b.time_wait_unconfirmed_expired,
            time_wait_killed: a.time_wait_killed + b.time_wait_killed,
            orphan_fin_wait2_ended: a.orphan_fin_wait2_ended + b.orphan_fin_wait2_ended,
            time_wait_never_appeared: a.time_wait_never_appeared + b.time_wait_never_appeared,
            time_wait_at_limit: a.time_wait_at_limit + b.time_wait_at_limit,
            not_adopted: a.not_adopted + b.not_adopted,
            ignored: a.ignored + b.ignored,
            expired: a.expired + b.expired,
        }
    }

    /// Reconcile with a frequent dump (no timewait sockets in TIME_WAIT).
    pub fn frequent(&mut self, dump: &[SocketSnapshot], now: u64) -> ReconcileReport {
        assert!(
            !dump
                .iter()
                .any(|d| d.timewait && d.state != TcpState::FinWait2),
            "a frequent dump has no TIME_WAIT timewait sockets"
        );
        self.reconcile_with(dump, now, false)
    }

    pub fn reconcile_with(
        &mut self,
        dump: &[SocketSnapshot],
        now: u64,
        full: bool,
    ) -> ReconcileReport {
        let rep = self.e.reconcile(dump, now, full, &mut self.o);
        self.check();
        rep
    }

    /// `Engine::expire`, observed.
    pub fn expire(&mut self, now: u64) -> usize {
        let n = self.e.expire(now, &mut self.o);
        self.check();
        n
    }

    pub fn adopt(&mut self, dump: &[SocketSnapshot], now: u64) -> usize {
        let n = self.e.adopt(dump, now);
        self.check();
        n
    }

    /// Store invariants, and per-state counts against a naive recount.
    pub fn check(&self) {
        self.e.store.check();
        let mut naive = [0u64; TcpState::COUNT];
        for s in self.e.sockets().filter(|s| s.is_live()) {
            naive[s.state().index()] += 1;
        }
        assert_eq!(naive, self.e.counts_by_state());
        assert!(self.e.tracked() <= self.e.config().max_sockets);
    }

    /// Take the calls recorded so far.
    pub fn take(&mut self) -> Vec<Obs> {
        std::mem::take(&mut self.o.0)
    }

    /// The stays recorded so far, of any cookie.
    pub fn stays(&self) -> Vec<(TcpState, u64, bool)> {
        self.o
            .0
            .iter()
            .filter_map(|o| {
                if let Obs::Stay(_, s, d, lb) = *o {
                    Some((s, d, lb))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Every recorded call matching `f`.
    pub fn count(&self, f: impl Fn(&Obs) -> bool) -> usize {
        self.o.0.iter().filter(|o| f(o)).count()
    }

    pub fn view(&self, cookie: u64) -> SocketView<'_> {
        self.e
            .get(cookie)
            .unwrap_or_else(|| panic!("cookie {cookie} is not tracked"))
    }

    pub fn state(&self, cookie: u64) -> TcpState {
        self.view(cookie).state()
    }

    pub fn path(&self, cookie: u64) -> Vec<TcpState> {
        self.view(cookie).path().collect()
    }

    /// The live count of `state`.
    pub fn n(&self, state: TcpState) -> u64 {
        self.e.counts_by_state()[state.index()]
    }
}

/// The events of an active open of `c` starting at `t0`: close -> syn_sent
/// -> established (1 ms later).
pub fn active_open(c: u64, t0: u64) -> [Ev; 2] {
    use TcpState::*;
    [
        ev(c).from(Close).to(SynSent).at(t0),
        ev(c).from(SynSent).to(Established).at(t0 + ms(1)),
    ]
}

/// Active close of `c` starting at `t0`: fin_wait1, fin_wait2 (+10 ms),
/// close (+20 ms).
pub fn active_close(c: u64, t0: u64) -> [Ev; 3] {
    use TcpState::*;
    [
        ev(c).from(Established).to(FinWait1).at(t0),
        ev(c).from(FinWait1).to(FinWait2).at(t0 + ms(10)),
        ev(c).from(FinWait2).to(Close).at(t0 + ms(20)),
    ]
}
