//! The store's `cookie -> slot` index: dense blocks for runs of
//! neighbouring cookies, a hashed table for the rest.
//!
//! The kernel hands out socket cookies from one counter, each CPU taking
//! a batch of 4,096 at a time, in the order sockets are first asked for
//! one; the state program asks for every TCP socket's at its first state
//! change. So on a busy host the cookies the store holds are nearly every
//! number of a few sliding windows, and they leave in about the order they
//! came (a minute of TIME_WAIT, then retention). Each [`SPAN`] of cookies
//! gets a block of slots indexed by the cookie's low bits, 4 KiB, one page:
//! neighbouring cookies share a cache line (16 of them) and a page (1,024),
//! so the sockets born together, whose events, TIME_WAIT ends and drops
//! come together, find their entries already cached and translated. A
//! block costs 4 bytes a cookie where the hashed table costs 21 to 43, and
//! no probing. (Placing cookies by their own bits in one open-addressing
//! table was tried: the runs of different CPUs overlapped and linear
//! probing through dense runs cost thousands of steps.)
//!
//! Sparse spans go to the hashed table ([`Table`]) instead, so that a block
//! never holds a few long-lived sockets among thousands gone:
//! - a block whose span falls to fewer than [`DENSE`] cookies on a removal
//!   moves them to the table and is freed; the span's later cookies follow
//!   them there until none is left;
//! - a new span gets a block only while the blocks held average at least
//!   [`DENSE`] cookies each, so a host whose cookies mostly go to other
//!   sockets (UDP, other programs' asks) keeps the table for most.
//!
//! Either way the index holds at most about 32 bytes of blocks per cookie,
//! plus two blocks, plus up to [`SPARE`] freed blocks kept for the next
//! spans: under churn a block is freed about as often as one is needed,
//! and reusing it keeps the allocator off the event path.
use super::table::Table;
use crate::memory::prefetch;

/// Cookies per block: a block of `u32` slots is one 4 KiB page.
const SPAN_BITS: u32 = 10;
const SPAN: usize = 1 << SPAN_BITS;

/// Fewest cookies a block keeps on average: an eighth of its span, 32
/// bytes of block per cookie.
const DENSE: u32 = (SPAN / 8) as u32;

/// An empty entry of a block.
const NONE: u32 = u32::MAX;

/// Freed blocks kept for reuse, at most: 16 KiB.
const SPARE: usize = 4;

type Block = Box<[u32; SPAN]>;

/// The cookies of one span held in the index: in a block, or in the
/// hashed table, never both. (A span whose block is dissolved keeps the
/// table until it empties; a span that starts in the table stays there.)
#[derive(Debug, Default)]
struct Span {
    /// The slots of the span's cookies in a block, `NONE` where absent.
    block: Option<Block>,
    /// Cookies held in `block`.
    in_block: u32,
    /// Cookies of the span held in the hashed table.
    spilled: u32,
}

/// A `cookie -> u32` map. See the module docs.
#[derive(Debug)]
pub(super) struct Cookies {
    /// Span number (`cookie >> SPAN_BITS`) -> its index in `spans`.
    dir: Table<u32>,
    spans: Vec<Span>,
    /// Entries of `spans` not in use.
    free: Vec<u32>,
    /// Cookies of sparse spans.
    spill: Table<u32>,
    /// Blocks held, and cookies held in them.
    blocks: usize,
    in_blocks: usize,
    /// Freed blocks, for the next spans (contents stale).
    spare: Vec<Block>,
}

fn split(cookie: u64) -> (u64, usize) {
    (cookie >> SPAN_BITS, (cookie as usize) & (SPAN - 1))
}

impl Cookies {
    /// An empty index; allocates nothing until the first insert.
    pub fn new() -> Cookies {
        Cookies {
            dir: Table::new(),
            spans: Vec::new(),
            free: Vec::new(),
            spill: Table::new(),
            blocks: 0,
            in_blocks: 0,
            spare: Vec::new(),
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.dir.heap_bytes()
            + self.spans.capacity() * size_of::<Span>()
            + self.free.capacity() * size_of::<u32>()
            + self.spill.heap_bytes()
            + (self.blocks + self.spare.len()) * size_of::<[u32; SPAN]>()
            + self.spare.capacity() * size_of::<Block>()
    }

    fn span(&self, span: u64) -> Option<&Span> {
        self.dir.get(span).map(|i| &self.spans[i as usize])
    }

    /// The value of `cookie`.
    pub fn get(&self, cookie: u64) -> Option<u32> {
        let (span, off) = split(cookie);
        match &self.span(span)?.block {
            Some(b) => Some(b[off]).filter(|&v| v != NONE),
            None => self.spill.get(cookie),
        }
    }

    /// Ask the CPU to bring `cookie`'s entry into the cache: a lookup
    /// soon after finds it there. Changes nothing.
    pub fn prefetch(&self, cookie: u64) {
        let (span, off) = split(cookie);
        match self.span(span) {
            Some(Span { block: Some(b), .. }) => prefetch(&b[off]),
            Some(_) => self.spill.prefetch(cookie),
            // Not held: a lookup reads the span directory only.
            None => {}
        }
    }

    /// Set `cookie` to `val` (not `u32::MAX`); returns the value it
    /// replaced.
    pub fn insert(&mut self, cookie: u64, val: u32) -> Option<u32> {
        debug_assert_ne!(val, NONE);
        let (span, off) = split(cookie);
        let i = match self.dir.get(span) {
            Some(i) => i,
            None => {
                let i = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        self.spans.push(Span::default());
                        (self.spans.len() - 1) as u32
                    }
                };
                self.dir.insert(span, i);
                i
            }
        };
        let roomy = self.blocks < 2 || self.in_blocks >= self.blocks * DENSE as usize;
        let s = &mut self.spans[i as usize];
        if s.block.is_none() && s.spilled == 0 && roomy {
            let block = match self.spare.pop() {
                Some(mut b) => {
                    b.fill(NONE);
                    b
                }
                None => vec![NONE; SPAN]
                    .into_boxed_slice()
                    .try_into()
                    .expect("a span's block"),
            };
            s.block = Some(block);
            self.blocks += 1;
        }
        let old = match &mut s.block {
            Some(b) => {
                let old = std::mem::replace(&mut b[off], val);
                Some(old).filter(|&v| v != NONE)
            }
            None => self.spill.insert(cookie, val),
        };
        if old.is_none() {
            match s.block {
                Some(_) => {
                    s.in_block += 1;
                    self.in_blocks += 1;
                }
                None => s.spilled += 1,
            }
        }
        old
    }

    /// Remove `cookie`; returns its value.
    pub fn remove(&mut self, cookie: u64) -> Option<u32> {
        let (span, off) = split(cookie);
        let i = self.dir.get(span)?;
        let s = &mut self.spans[i as usize];
        let val = match &mut s.block {
            Some(b) => {
                let val = Some(std::mem::replace(&mut b[off], NONE)).filter(|&v| v != NONE)?;
                s.in_block -= 1;
                self.in_blocks -= 1;
                val
            }
            None => {
                let val = self.spill.remove(cookie)?;
                s.spilled -= 1;
                val
            }
        };
        if s.in_block < DENSE
            && let Some(b) = s.block.take()
        {
            // Too few left to keep a page for: move them to the table (none
            // when the last one just left).
            for (o, &v) in b.iter().enumerate().filter(|&(_, &v)| v != NONE) {
                self.spill.insert((span << SPAN_BITS) | o as u64, v);
            }
            s.spilled += s.in_block;
            self.in_blocks -= s.in_block as usize;
            s.in_block = 0;
            self.blocks -= 1;
            if self.spare.len() < SPARE {
                self.spare.push(b);
            }
        }
        if s.spilled == 0 && s.block.is_none() {
            self.dir.remove(span);
            self.free.push(i);
        }
        Some(val)
    }

    /// Every `(cookie, value)`, in no particular order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let blocks = self.dir.iter().flat_map(move |(span, i)| {
            self.spans[i as usize]
                .block
                .iter()
                .flat_map(|b| b.iter().enumerate())
                .filter(|&(_, &v)| v != NONE)
                .map(move |(o, &v)| ((span << SPAN_BITS) | o as u64, v))
        });
        blocks.chain(self.spill.iter())
    }

    /// Cookies held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.in_blocks + self.spill.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// The counts kept beside the entries agree with the entries.
    fn check(c: &Cookies) {
        let mut blocks = 0;
        let mut in_blocks = 0;
        let mut spills = HashMap::<u64, usize>::new();
        for (k, _) in c.spill.iter() {
            *spills.entry(k >> SPAN_BITS).or_default() += 1;
        }
        for (span, i) in c.dir.iter() {
            let s = &c.spans[i as usize];
            let held = s.block.as_ref().map_or(0, |b| {
                blocks += 1;
                b.iter().filter(|&&v| v != NONE).count()
            });
            assert_eq!(held, s.in_block as usize, "span {span}");
            in_blocks += held;
            let spilled = spills.remove(&span).unwrap_or(0);
            assert_eq!(spilled, s.spilled as usize, "span {span}");
            assert!(held + spilled > 0, "an empty span {span} kept");
            assert!(
                held == 0 || spilled == 0,
                "span {span} in a block and the table"
            );
        }
        assert!(spills.is_empty(), "spilled cookies of spans not held");
        assert!(c.spare.len() <= SPARE, "{} spare blocks", c.spare.len());
        assert_eq!((blocks, in_blocks), (c.blocks, c.in_blocks));
        assert_eq!(c.dir.len() + c.free.len(), c.spans.len());
    }

    #[test]
    fn holds_what_a_hash_map_holds_under_cookie_churn() {
        // Two interleaved runs of cookies (two CPUs' batches), with gaps,
        // most dropped in about the order they came, some kept long; and
        // cookies at random among them (sockets adopted from a dump).
        let mut c = Cookies::new();
        let mut m = HashMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut live = std::collections::VecDeque::new();
        let (mut a, mut b) = (1u64 << 20, 1u64 << 40);
        for round in 0..300_000u32 {
            let r = xorshift(&mut x);
            let key = match r % 16 {
                0 => r >> 20,
                1..=5 => {
                    b += 1;
                    b
                }
                _ => {
                    a += 1 + r % 3 / 2;
                    a
                }
            };
            assert_eq!(c.insert(key, round), m.insert(key, round), "insert {key}");
            live.push_back(key);
            while live.len() > 30_000 || (live.len() > 1000 && r.is_multiple_of(7)) {
                let old = live.pop_front().expect("live");
                if !xorshift(&mut x).is_multiple_of(20) {
                    assert_eq!(c.remove(old), m.remove(&old), "remove {old}");
                }
            }
            if round % 1000 == 0 {
                assert_eq!(c.remove(r), m.remove(&r), "remove absent {r}");
            }
            if round % 30_000 == 0 {
                check(&c);
                for (k, v) in &m {
                    assert_eq!(c.get(*k), Some(*v), "get {k}");
                }
            }
        }
        check(&c);
        assert_eq!(c.len(), m.len());
        let mut listed: Vec<_> = c.iter().collect();
        listed.sort_unstable();
        let mut want: Vec<_> = m.into_iter().collect();
        want.sort_unstable();
        assert_eq!(listed, want);
        for (k, _) in listed {
            c.remove(k);
        }
        check(&c);
        assert_eq!((c.blocks, c.len(), c.dir.len()), (0, 0, 0));
    }

    #[test]
    fn runs_of_cookies_share_blocks_and_cost_four_bytes_each() {
        let mut c = Cookies::new();
        for k in 1..=100_000u64 {
            c.insert(k, k as u32);
        }
        check(&c);
        assert_eq!(c.spill.len(), 0, "a dense run spills nothing");
        assert!(c.heap_bytes() < 100_000 * 5, "{} bytes", c.heap_bytes());
        // Neighbours' entries are neighbours.
        let at = |k: u64| {
            let (span, off) = split(k);
            &c.span(span)
                .and_then(|s| s.block.as_ref())
                .expect("in a block")[off] as *const u32
        };
        assert_eq!(at(40_001) as usize - at(40_000) as usize, 4);
    }

    #[test]
    fn churn_reuses_freed_blocks() {
        // Sockets leave a minute after they came: each span's block is
        // freed as a later span needs one, and that one is reused, wiped.
        let mut c = Cookies::new();
        let mut fresh = 0;
        for k in 1..=200_000u64 {
            let (blocks, spare) = (c.blocks, c.spare.len());
            c.insert(k, k as u32);
            if c.blocks > blocks && c.spare.len() == spare {
                fresh += 1;
            }
            if k > 60_000 {
                assert_eq!(c.remove(k - 60_000), Some((k - 60_000) as u32));
            }
        }
        check(&c);
        // Blocks for the first minute's spans, and one or two more: the
        // rest came from the spare ones.
        assert!(fresh <= 60_000 / SPAN + 3, "{fresh} blocks allocated");
        for k in 140_001..=200_000u64 {
            assert_eq!(c.get(k), Some(k as u32));
        }
        assert_eq!(c.get(140_000), None);
    }

    #[test]
    fn long_lived_cookies_left_among_churn_move_to_the_table() {
        // One socket in a hundred lives on; the others leave a minute
        // later. What stays must not keep a page for each span.
        let mut c = Cookies::new();
        let n = 2_000_000u64;
        for k in 1..=n {
            c.insert(k, 0);
            if k > 60_000 && (k - 60_000) % 100 != 0 {
                c.remove(k - 60_000);
            }
        }
        check(&c);
        let kept = c.len();
        assert!(kept > (n as usize - 60_000) / 100, "{kept}");
        let per = c.heap_bytes() as f64 / kept as f64;
        assert!(
            per < 100.0,
            "{per:.0} bytes per cookie, {} blocks",
            c.blocks
        );
        assert!(c.blocks <= 60_000 / SPAN + 2, "{} blocks", c.blocks);
    }

    #[test]
    fn sparse_cookies_go_to_the_table() {
        // One cookie in 100 is a TCP socket's: blocks would hold 10 each.
        let mut c = Cookies::new();
        for k in 0..100_000u64 {
            c.insert(k * 100 + 7, 1);
        }
        check(&c);
        assert!(c.blocks <= 2, "{} blocks", c.blocks);
        let per = c.heap_bytes() as f64 / c.len() as f64;
        assert!(per < 50.0, "{per:.0} bytes per cookie");
        for k in 0..100_000u64 {
            assert_eq!(c.get(k * 100 + 7), Some(1));
            assert_eq!(c.get(k * 100 + 8), None);
        }
    }

    #[test]
    fn a_span_once_spilled_keeps_its_new_cookies_in_the_table() {
        let mut c = Cookies::new();
        for k in 0..200u64 {
            c.insert(k, 1);
        }
        for k in 0..100u64 {
            c.remove(k);
        }
        // 100 left, fewer than an eighth of the span: moved.
        assert_eq!((c.blocks, c.spill.len()), (0, 100));
        c.insert(500, 2);
        assert_eq!((c.blocks, c.spill.len()), (0, 101));
        assert_eq!(c.insert(500, 3), Some(2));
        check(&c);
        for k in 100..200u64 {
            assert_eq!(c.remove(k), Some(1));
        }
        assert_eq!(c.remove(500), Some(3));
        check(&c);
        assert_eq!((c.len(), c.dir.len(), c.free.len()), (0, 0, 1));
        // Empty again: the span's next cookie gets a block.
        c.insert(7, 4);
        assert_eq!((c.blocks, c.get(7)), (1, Some(4)));
        c.prefetch(7);
        c.prefetch(1 << 40);
    }
}
