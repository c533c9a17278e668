//! Hashing for the engine's tables: a multiply-shift hasher for `u64` keys
//! and a 64-bit fingerprint of a connection's 4-tuple.
//!
//! Socket cookies come from one kernel counter, so they are already unique,
//! well-spread integers; SipHash (std's default) would only cost time. A
//! multiply by a 64-bit odd constant spreads them over the high bits that
//! hashbrown uses for its control byte, and folding the high half back in
//! spreads them over the low bits it uses for the bucket index.
use std::hash::{BuildHasherDefault, Hasher};

use crate::tcp::Family;

/// 2^64 / golden ratio, odd: Fibonacci hashing.
pub(super) const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// One round of multiply-shift mixing.
#[inline]
pub(super) fn mix(x: u64) -> u64 {
    let h = (x ^ (x >> 29)).wrapping_mul(K);
    h ^ (h >> 32)
}

/// A [`Hasher`] for integer keys. Byte slices (never used by the engine)
/// are folded eight bytes at a time, so it stays correct for any key.
#[derive(Clone, Copy, Debug, Default)]
pub struct CookieHasher(u64);

impl Hasher for CookieHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = mix(self.0 ^ u64::from_le_bytes(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0 ^ n);
    }

    // Derived `Hash` impls of small keys (a `u32` namespace inode, the
    // parts of a socket address) write integers one at a time; through
    // `write` each would be a chunk loop and a copy.
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
}

/// `BuildHasher` for engine maps keyed by cookie or tuple fingerprint.
pub type BuildCookieHasher = BuildHasherDefault<CookieHasher>;

/// A 64-bit fingerprint of (network namespace, family, local address:port,
/// remote address:port): the same 4-tuple in two namespaces is two
/// connections. An IPv6 socket's IPv4-mapped tuple (`::ffff:a.b.c.d` at
/// both ends) has the fingerprint of the IPv4 one: the kernel keeps both
/// in its IPv4 table, so a dual-stack server's socket and an IPv4 client's
/// are the two ends of one connection, and a TIME_WAIT of either family
/// holds the tuple against both.
/// Equal tuples give equal fingerprints; callers compare the full tuple on a
/// hit, so a collision costs a missed match, never a wrong one.
pub(super) fn tuple_hash(
    netns: u32,
    family: Family,
    local: &[u8; 16],
    lport: u16,
    remote: &[u8; 16],
    rport: u16,
) -> u64 {
    let mapped = match family {
        Family::Ipv6 => v4_mapped(local).zip(v4_mapped(remote)),
        Family::Ipv4 => None,
    };
    let (family, local, remote) = match mapped {
        Some((l, r)) => (Family::Ipv4, l, r),
        None => (family, *local, *remote),
    };
    let word = |b: &[u8; 16], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let ports = u64::from(lport) | u64::from(rport) << 16 | (family as u64) << 32;
    let mut h = mix(mix(ports) ^ u64::from(netns));
    for w in [
        word(&local, 0),
        word(&local, 8),
        word(&remote, 0),
        word(&remote, 8),
    ] {
        h = mix(h ^ w);
    }
    h
}

/// The IPv4 layout (`addr_bytes`) of an IPv4-mapped IPv6 address's bytes.
fn v4_mapped(b: &[u8; 16]) -> Option<[u8; 16]> {
    (b[..10] == [0; 10] && b[10..12] == [0xff; 2]).then(|| {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&b[12..]);
        v4
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn sequential_cookies_spread_over_low_and_high_bits() {
        let b = BuildCookieHasher::default();
        let low: HashSet<u64> = (1..=4096u64).map(|c| b.hash_one(c) & 0xfff).collect();
        let high: HashSet<u64> = (1..=4096u64).map(|c| b.hash_one(c) >> 57).collect();
        assert!(low.len() > 2500, "low bits collide too much: {}", low.len());
        assert_eq!(high.len(), 128, "every control-byte value is used");
    }

    #[test]
    fn byte_writes_are_deterministic() {
        let mut a = CookieHasher::default();
        let mut b = CookieHasher::default();
        a.write(b"hello world");
        b.write(b"hello world");
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn tuple_hash_depends_on_every_field() {
        let l = [1u8; 16];
        let r = [2u8; 16];
        let v4 = Family::Ipv4;
        let base = tuple_hash(0, v4, &l, 80, &r, 5000);
        assert_ne!(base, tuple_hash(0, Family::Ipv6, &l, 80, &r, 5000));
        assert_ne!(base, tuple_hash(0, v4, &r, 80, &l, 5000));
        assert_ne!(base, tuple_hash(0, v4, &l, 81, &r, 5000));
        assert_ne!(base, tuple_hash(0, v4, &l, 80, &r, 5001));
        assert_eq!(base, tuple_hash(0, v4, &l, 80, &r, 5000));
        assert_ne!(
            base,
            tuple_hash(7, v4, &l, 80, &r, 5000),
            "another namespace"
        );
    }

    #[test]
    fn a_v4_mapped_tuple_is_the_ipv4_one() {
        let bytes = |a: &str| crate::snapshot::addr_bytes(a.parse().unwrap());
        let four = tuple_hash(
            3,
            Family::Ipv4,
            &bytes("10.0.0.1"),
            80,
            &bytes("10.0.0.2"),
            5000,
        );
        let mapped = |l: &str, r: &str| tuple_hash(3, Family::Ipv6, &bytes(l), 80, &bytes(r), 5000);
        assert_eq!(four, mapped("::ffff:10.0.0.1", "::ffff:10.0.0.2"));
        assert_ne!(four, mapped("::ffff:10.0.0.1", "::ffff:10.0.0.3"));
        // Only a pair of mapped addresses is an IPv4 connection.
        assert_ne!(four, mapped("::ffff:10.0.0.1", "::10.0.0.2"));
        assert_ne!(four, mapped("::1", "::ffff:10.0.0.2"));
    }
}
