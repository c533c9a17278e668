//! Handshake outcomes: successes by role with the client's latency, and
//! failures by the evidence seen in SYN_SENT or SYN_RECV (a reset, a
//! retransmit, neither), through reconnects, duplicates, disorder and
//! adoption from a dump.
use super::*;
use crate::engine::HandshakeFailure::{self, *};
use crate::tcp::TcpState::*;

/// A retransmission by `cookie` while in `state`.
fn rtx(cookie: u64, state: TcpState) -> Ev {
    ev(cookie).kind(Kind::Retransmit).to(state)
}

/// `connect()` by pid 10 at `t0`.
fn connect(c: u64, t0: u64) -> Ev {
    ev(c).from(Close).to(SynSent).at(t0).by(10, "client")
}

fn ok(latency_ns: Option<u64>) -> Handshake {
    Handshake::Established { latency_ns }
}

fn failed(why: HandshakeFailure) -> Handshake {
    Handshake::Failed(why)
}

/// The outcomes of the events, in order, for one fresh engine.
fn outcomes(evs: impl IntoIterator<Item = Ev>) -> Vec<(u64, Role, Handshake)> {
    let mut h = H::new();
    h.run(evs);
    h.o.1
}

#[test]
fn each_way_out_of_a_handshake_is_classified() {
    // (name, events, the one outcome of cookie 1)
    let table: Vec<(&str, Vec<Ev>, Role, Handshake)> = vec![
        (
            "client connects: latency is the SYN_SENT stay",
            vec![
                connect(1, secs(1)),
                ev(1).from(SynSent).to(Established).at(secs(1) + 85_000),
            ],
            Role::Client,
            ok(Some(85_000)),
        ),
        (
            "connect after a retransmitted SYN: still a success",
            vec![
                connect(1, 0),
                rtx(1, SynSent).at(secs(1)),
                ev(1).from(SynSent).to(Established).at(secs(1) + ms(2)),
            ],
            Role::Client,
            ok(Some(secs(1) + ms(2))),
        ),
        (
            "a RST answers the SYN: refused",
            vec![
                connect(1, 0),
                rst_rx(1).to(SynSent).at(50_000),
                ev(1).from(SynSent).to(Close).at(50_000),
            ],
            Role::Client,
            failed(Refused),
        ),
        (
            "a RST after SYN retransmits: refused (the strongest evidence)",
            vec![
                connect(1, 0),
                rtx(1, SynSent).at(secs(1)),
                rst_rx(1).to(SynSent).at(secs(2)),
                ev(1).from(SynSent).to(Close).at(secs(2)),
            ],
            Role::Client,
            failed(Refused),
        ),
        (
            "SYN retransmits, then the kernel gives up: timed out",
            vec![
                connect(1, 0),
                rtx(1, SynSent).at(secs(1)),
                rtx(1, SynSent).at(secs(3)),
                ev(1).from(SynSent).to(Close).at(secs(7)),
            ],
            Role::Client,
            failed(TimedOut),
        ),
        (
            "closed before any retransmit, no reset: aborted",
            vec![connect(1, 0), ev(1).from(SynSent).to(Close).at(ms(250))],
            Role::Client,
            failed(Aborted),
        ),
        (
            "connect() found no free local port: closed before any SYN, on port 0",
            vec![
                connect(1, 0).ports(0, 80),
                ev(1).from(SynSent).to(Close).ports(0, 80).at(4_000),
            ],
            Role::Client,
            failed(NoLocalPort),
        ),
        (
            "a reset sent is no evidence of refusal",
            vec![
                connect(1, 0),
                rst_tx(1).to(SynSent).at(ms(1)),
                ev(1).from(SynSent).to(Close).at(ms(250)),
            ],
            Role::Client,
            failed(Aborted),
        ),
        (
            "server (6.18: the child's listen -> syn_recv has its cookie)",
            vec![
                ev(1).from(Listen).to(SynRecv).at(secs(1)),
                ev(1).from(SynRecv).to(Established).at(secs(1) + 4_000),
            ],
            Role::Server,
            ok(None),
        ),
        (
            "server (up to 6.12: the child is first seen established)",
            vec![ev(1).from(SynRecv).to(Established).at(secs(1))],
            Role::Server,
            ok(None),
        ),
        (
            "server's half-open connection reset",
            vec![
                ev(1).from(Listen).to(SynRecv).at(0),
                rst_rx(1).to(SynRecv).at(ms(3)),
                ev(1).from(SynRecv).to(Close).at(ms(3)),
            ],
            Role::Server,
            failed(Reset),
        ),
        (
            "server's SYN-ACK retransmitted unanswered",
            vec![
                ev(1).from(Listen).to(SynRecv).at(0),
                rtx(1, SynRecv).at(secs(1)),
                ev(1).from(SynRecv).to(Close).at(secs(3)),
            ],
            Role::Server,
            failed(TimedOut),
        ),
        (
            "simultaneous open: a client, latency not a plain SYN_SENT stay",
            vec![
                connect(1, 0),
                ev(1).from(SynSent).to(SynRecv).at(ms(1)),
                ev(1).from(SynRecv).to(Established).at(ms(2)),
            ],
            Role::Client,
            ok(None),
        ),
    ];
    for (name, evs, role, want) in table {
        assert_eq!(outcomes(evs), [(1, role, want)], "{name}");
    }
}

#[test]
fn other_transitions_are_no_handshake() {
    let got = outcomes([
        ev(1).from(Close).to(Listen).at(0).by(10, "server"),
        ev(1).from(Listen).to(Close).at(ms(1)).by(10, "server"),
        connect(2, 0),
        ev(2).from(SynSent).to(Established).at(ms(1)),
        ev(2)
            .from(Established)
            .to(FinWait1)
            .at(ms(2))
            .by(10, "client"),
        ev(2).from(FinWait1).to(FinWait2).at(ms(3)),
        ev(2).from(FinWait2).to(Close).at(ms(4)),
    ]);
    assert_eq!(got, [(2, Role::Client, ok(Some(ms(1))))]);
}

#[test]
fn a_duplicate_or_stale_event_counts_once() {
    let open = ev(1).from(SynSent).to(Established).at(ms(1));
    let got = outcomes([
        connect(1, 0),
        open,
        open,
        ev(1).from(Established).to(CloseWait).at(ms(5)),
        // Delivered late: the record is already past it.
        ev(1).from(SynSent).to(Established).at(ms(1)),
    ]);
    assert_eq!(got, [(1, Role::Client, ok(Some(ms(1))))]);
}

#[test]
fn a_reconnect_starts_with_no_evidence_from_the_last_attempt() {
    let got = outcomes([
        connect(1, 0),
        rtx(1, SynSent).at(secs(1)),
        ev(1).from(SynSent).to(Close).at(secs(3)),
        // The same socket connects again (after a failed connect, Linux
        // lets it): no retransmit this time.
        connect(1, secs(4)),
        ev(1).from(SynSent).to(Close).at(secs(4) + ms(100)),
        connect(1, secs(5)),
        rst_rx(1).to(SynSent).at(secs(5) + 30_000),
        ev(1).from(SynSent).to(Close).at(secs(5) + 30_000),
        connect(1, secs(6)),
        ev(1).from(SynSent).to(Established).at(secs(6) + 70_000),
    ]);
    let want = [
        failed(TimedOut),
        failed(Aborted),
        failed(Refused),
        ok(Some(70_000)),
    ];
    assert_eq!(
        got,
        want.map(|o| (1, Role::Client, o)),
        "each attempt judged on its own"
    );
}

#[test]
fn evidence_from_before_the_state_does_not_count() {
    // A retransmit the ring buffer delivered after the close (its time is
    // before the connect of the next attempt) says nothing about it.
    let got = outcomes([
        connect(1, 0),
        ev(1).from(SynSent).to(Close).at(ms(10)),
        connect(1, secs(1)),
        rtx(1, SynSent).at(ms(5)),
        ev(1).from(SynSent).to(Close).at(secs(1) + ms(10)),
    ]);
    assert_eq!(
        got,
        [
            (1, Role::Client, failed(Aborted)),
            (1, Role::Client, failed(Aborted))
        ]
    );
}

#[test]
fn a_socket_adopted_mid_handshake_has_no_latency() {
    let mut h = H::new();
    h.adopt(
        &[diag(1, SynSent), diag(2, SynSent), diag(3, SynRecv)],
        secs(10),
    );
    h.run([
        ev(1).from(SynSent).to(Established).at(secs(10) + ms(1)),
        rst_rx(2).to(SynSent).at(secs(11)),
        ev(2).from(SynSent).to(Close).at(secs(11)),
        ev(3).from(SynRecv).to(Established).at(secs(12)),
    ]);
    assert_eq!(
        h.o.1,
        [
            (1, Role::Client, ok(None)),
            (2, Role::Client, failed(Refused)),
            (3, Role::Server, ok(None)),
        ]
    );
}

#[test]
fn a_dump_that_moves_the_state_clears_the_evidence() {
    let mut h = H::new();
    h.run([
        connect(1, 0),
        ev(1).from(SynSent).to(Established).at(ms(1)),
        rtx(1, Established).at(secs(1)),
    ]);
    // Events lost: the connection closed and the socket connects again
    // unseen; a dump finds it in SYN_SENT. The data retransmit of the old
    // connection is no evidence about this handshake.
    h.reconcile(&[diag(1, SynSent)], secs(5));
    h.run([ev(1).from(SynSent).to(Close).at(secs(6))]);
    assert_eq!(
        h.o.1,
        [
            (1, Role::Client, ok(Some(ms(1)))),
            (1, Role::Client, failed(Aborted))
        ]
    );
}

#[test]
fn latency_is_never_negative_under_disorder() {
    // The established event carries an earlier time than the connect.
    let got = outcomes([
        connect(1, ms(5)),
        ev(1).from(SynSent).to(Established).at(ms(4)),
    ]);
    assert_eq!(got, [(1, Role::Client, ok(Some(0)))]);
}

#[test]
fn every_reason_has_a_role_it_applies_to() {
    for why in HandshakeFailure::ALL {
        let roles: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|&r| why.applies_to(r))
            .collect();
        assert!(!roles.is_empty(), "{why:?}");
    }
    assert!(!Refused.applies_to(Role::Server));
    assert!(!Reset.applies_to(Role::Client));
}

/// The error the kernel set before closing a connecting socket names the
/// reason, whatever else was seen: ICMP unreachable is its own reason.
#[test]
fn the_sockets_error_names_the_reason() {
    let close_with = |err: i32| {
        let mut e = ev(1).from(SynSent).to(Close).at(secs(3));
        e.0.err = err as u8;
        e
    };
    for (err, evidence, want) in [
        (libc::EHOSTUNREACH, vec![], Unreachable),
        // The first ICMP came while connect() held the socket: the kernel
        // retried, then closed with the error it kept.
        (
            libc::EHOSTUNREACH,
            vec![rtx(1, SynSent).at(secs(1))],
            Unreachable,
        ),
        (libc::ENETUNREACH, vec![], Unreachable),
        (libc::ECONNREFUSED, vec![], Refused),
        (libc::ETIMEDOUT, vec![rtx(1, SynSent).at(secs(1))], TimedOut),
        // No error: the application closed it, even after a retransmit
        // only the evidence speaks.
        (0, vec![], Aborted),
        (0, vec![rtx(1, SynSent).at(secs(1))], TimedOut),
    ] {
        let mut evs = vec![connect(1, 0)];
        evs.extend(evidence);
        evs.push(close_with(err));
        assert_eq!(
            outcomes(evs),
            [(1, Role::Client, failed(want))],
            "errno {err}"
        );
    }
    // A server's half-open connection reset (ECONNRESET in SYN_RECV).
    let mut reset = ev(2).from(SynRecv).to(Close).at(ms(5));
    reset.0.err = libc::ECONNRESET as u8;
    let got = outcomes([ev(2).from(Listen).to(SynRecv).at(0), reset]);
    assert_eq!(got, [(2, Role::Server, failed(Reset))]);
    assert!(!Unreachable.applies_to(Role::Server) && Unreachable.applies_to(Role::Client));
}
