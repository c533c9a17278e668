//! Byte-level fuzzing of [`SockEvent::decode`], in the normal test run and
//! bounded (a few thousand cases, well under a second): random bytes of
//! any length, and valid records mutated the ways a buggy or foreign
//! writer would: a byte flipped, truncated, extended, a header field set
//! to anything. The decoder must never panic, must refuse what it does not
//! know, and must read every field of what it accepts exactly once, in
//! place.
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::tests::bytes;
use super::*;

const SIZE: usize = size_of::<abi::Event>();
/// Offsets of the header fields the decoder branches on.
const OFF_KIND: usize = 0;
const OFF_VERSION: usize = 1;
const OFF_FAMILY: usize = 2;
const OFF_OLD: usize = 3;
const OFF_NEW: usize = 4;

/// Kernel TCP state numbers the decoder knows (1..=13, `include/net/tcp_states.h`).
fn known_state() -> impl Strategy<Value = u8> {
    1u8..=13
}

/// A record the kernel programs could write: any kind, a family it allows,
/// states it allows, anything in the other fields.
fn valid() -> impl Strategy<Value = abi::Event> {
    (
        prop::sample::select(vec![
            abi::KIND_STATE,
            abi::KIND_RETRANSMIT,
            abi::KIND_SYNACK_RETRANSMIT,
            abi::KIND_RESET_SENT,
            abi::KIND_RESET_RECEIVED,
        ]),
        prop::sample::select(vec![abi::FAMILY_INET, abi::FAMILY_INET6]),
        (known_state(), known_state()),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()),
        (any::<u16>(), any::<u16>(), any::<u32>()),
        (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<[u8; 16]>()),
    )
        .prop_map(
            |(
                kind,
                family,
                (old, new),
                (ts, cookie, pid, tid),
                (sport, dport, netns),
                (s, d, c),
            )| {
                let mut e = abi::Event::ZERO;
                e.kind = kind;
                e.version = abi::ABI_VERSION;
                e.family = family;
                e.old_state = if kind == abi::KIND_STATE { old } else { 0 };
                e.new_state = new;
                e.ts_ns = ts;
                e.cookie = cookie;
                e.pid = pid;
                e.tid = tid;
                e.sport = sport;
                e.dport = dport;
                e.netns = netns;
                e.saddr = s;
                e.daddr = d;
                e.comm = c;
                e
            },
        )
}

/// What any decoded event must satisfy, whatever bytes it came from.
fn check_accepted(buf: &[u8], ev: &SockEvent) -> Result<(), TestCaseError> {
    prop_assert!(buf.len() >= SIZE);
    prop_assert_eq!(buf[OFF_VERSION], abi::ABI_VERSION);
    prop_assert_eq!(Some(ev.kind), Kind::from_wire(buf[OFF_KIND]));
    match ev.kind {
        Kind::State => prop_assert!(ev.old_state.is_some() && ev.new_state.is_some()),
        _ => prop_assert!(ev.old_state.is_none()),
    }
    if ev.family.is_none() {
        prop_assert_eq!(ev.kind, Kind::ResetSent);
    }
    let _ = ev.comm_str();
    Ok(())
}

/// Decode `buf`: never a panic; an accepted record satisfies [`check_accepted`].
fn decode_checked(buf: &[u8]) -> Result<Result<SockEvent, DecodeError>, TestCaseError> {
    let out = SockEvent::decode(buf);
    match &out {
        Ok(ev) => check_accepted(buf, ev)?,
        Err(DecodeError::Short(n)) => prop_assert!(*n == buf.len() && *n < SIZE),
        Err(e) => {
            prop_assert!(buf.len() >= SIZE);
            // Every refusal is one sentence.
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        // Keep regression seeds next to this file (event/fuzz.regressions).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..3 * SIZE)) {
        let _ = decode_checked(&buf)?;
    }

    /// Random bytes behind a valid header reach every later check.
    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        mut buf in prop::collection::vec(any::<u8>(), SIZE..SIZE + 16),
        kind in 1u8..=5,
    ) {
        buf[OFF_KIND] = kind;
        buf[OFF_VERSION] = abi::ABI_VERSION;
        let _ = decode_checked(&buf)?;
    }

    #[test]
    fn valid_records_decode_field_for_field(e in valid()) {
        let ev = decode_checked(&bytes(&e))?.expect("a valid record decodes");
        prop_assert_eq!(ev.ts_ns, e.ts_ns);
        prop_assert_eq!(ev.cookie, e.cookie);
        prop_assert_eq!((ev.sport, ev.dport), (e.sport, e.dport));
        prop_assert_eq!((ev.pid, ev.tid, ev.netns), (e.pid, e.tid, e.netns));
        prop_assert_eq!(ev.comm, e.comm);
        prop_assert_eq!(ev.new_state.map(|s| s as u8), Some(e.new_state));
        match ev.saddr {
            IpAddr::V4(a) => prop_assert_eq!(&a.octets()[..], &e.saddr[..4]),
            IpAddr::V6(a) => prop_assert_eq!(a.octets(), e.saddr),
        }
    }

    #[test]
    fn a_flipped_byte_is_refused_or_read_in_place(
        e in valid(),
        at in 0..SIZE,
        xor in 1u8..=255,
    ) {
        let mut buf = bytes(&e);
        buf[at] ^= xor;
        if let Ok(ev) = decode_checked(&buf)? {
            // Accepted: the flipped byte is data, and only its field moved.
            prop_assert!(at != OFF_VERSION);
            let orig = SockEvent::decode(&bytes(&e)).expect("valid");
            let moved = [
                ev.ts_ns != orig.ts_ns,
                ev.cookie != orig.cookie,
                ev.kind != orig.kind,
                // The family byte decides how both addresses read.
                (ev.family, ev.saddr, ev.daddr) != (orig.family, orig.saddr, orig.daddr),
                (ev.sport, ev.dport) != (orig.sport, orig.dport),
                ev.old_state != orig.old_state || ev.new_state != orig.new_state,
                (ev.pid, ev.tid, ev.netns) != (orig.pid, orig.tid, orig.netns),
                ev.comm != orig.comm,
            ];
            prop_assert!(moved.iter().filter(|&&m| m).count() <= 2, "{:?} -> {:?}", orig, ev);
        }
    }

    #[test]
    fn truncated_records_are_short(e in valid(), len in 0..SIZE) {
        let buf = bytes(&e);
        prop_assert_eq!(decode_checked(&buf[..len])?, Err(DecodeError::Short(len)));
    }

    /// Trailing bytes (a longer record) are not read: the event is the prefix's.
    #[test]
    fn extended_records_decode_as_their_prefix(
        e in valid(),
        tail in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let mut buf = bytes(&e);
        let want = SockEvent::decode(&buf);
        buf.extend(tail);
        prop_assert_eq!(decode_checked(&buf)?, want);
    }

    /// Header fields set to anything: each unknown value has its own refusal.
    #[test]
    fn header_fields_set_to_anything(
        e in valid(),
        field in prop::sample::select(vec![OFF_KIND, OFF_VERSION, OFF_FAMILY, OFF_OLD, OFF_NEW]),
        value in any::<u8>(),
    ) {
        let mut buf = bytes(&e);
        buf[field] = value;
        match decode_checked(&buf)? {
            Ok(_) => {}
            Err(DecodeError::Version(v)) => prop_assert_eq!((field, v), (OFF_VERSION, value)),
            Err(DecodeError::Kind(k)) => prop_assert_eq!((field, k), (OFF_KIND, value)),
            Err(DecodeError::Family(f)) => prop_assert!(f == buf[OFF_FAMILY]),
            Err(DecodeError::State(s)) => prop_assert!(s == 0 || s > 13),
            Err(DecodeError::Short(_)) => prop_assert!(false, "a full record is not short"),
        }
    }
}
