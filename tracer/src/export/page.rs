//! Paging of `/api/v1/sockets`: sockets in cookie order, a page at a time.
//!
//! A cookie cursor (`after`) rather than an offset: the kernel hands out
//! cookies in increasing order and records come and go between requests,
//! so an offset would skip or repeat sockets under churn while a cursor
//! never does. [`Picker`] finds one page in a single walk of the records,
//! keeping only `limit` cookies, so whoever walks under a lock copies a
//! page and not the table.
use std::collections::BinaryHeap;

/// Sockets per page unless `?limit=` says otherwise.
pub const DEFAULT_LIMIT: usize = 1000;
/// The most `?limit=` may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// One page of sockets.
#[derive(Debug)]
pub struct Page<T> {
    /// The sockets, in increasing cookie order.
    pub items: Vec<T>,
    /// Sockets that matched the filters, on every page.
    pub total: usize,
    /// The cursor for the next page (`?after=`), when there is one.
    pub next_after: Option<u64>,
}

/// Picks the `limit` smallest cookies above `after` from a walk in any order.
pub struct Picker {
    limit: usize,
    after: Option<u64>,
    /// A max-heap of the smallest cookies seen so far.
    page: BinaryHeap<u64>,
    total: usize,
    beyond: usize,
}

impl Picker {
    /// A picker for `limit` cookies (at least one) after `after`.
    pub fn new(limit: usize, after: Option<u64>) -> Picker {
        let limit = limit.max(1);
        Picker {
            limit,
            after,
            page: BinaryHeap::with_capacity(limit.min(MAX_LIMIT) + 1),
            total: 0,
            beyond: 0,
        }
    }

    /// A socket that matched the filters.
    pub fn offer(&mut self, cookie: u64) {
        self.total += 1;
        if self.after.is_some_and(|a| cookie <= a) {
            return;
        }
        if self.page.len() < self.limit {
            self.page.push(cookie);
        } else if self.page.peek().is_some_and(|&top| cookie < top) {
            self.page.pop();
            self.page.push(cookie);
            self.beyond += 1;
        } else {
            self.beyond += 1;
        }
    }

    /// The page's cookies in order, the total, and the next cursor.
    pub fn finish(self) -> (Vec<u64>, usize, Option<u64>) {
        let cookies = self.page.into_sorted_vec();
        let next = if self.beyond > 0 {
            cookies.last().copied()
        } else {
            None
        };
        (cookies, self.total, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(all: &[u64], limit: usize, after: Option<u64>) -> (Vec<u64>, usize, Option<u64>) {
        let mut p = Picker::new(limit, after);
        all.iter().for_each(|&c| p.offer(c));
        p.finish()
    }

    #[test]
    fn pages_walk_every_cookie_once_in_order() {
        let all = [9, 3, 7, 1, 5, 2, 8, 6, 4];
        assert_eq!(pick(&all, 4, None), (vec![1, 2, 3, 4], 9, Some(4)));
        assert_eq!(pick(&all, 4, Some(4)), (vec![5, 6, 7, 8], 9, Some(8)));
        assert_eq!(pick(&all, 4, Some(8)), (vec![9], 9, None));
        assert_eq!(pick(&all, 9, None).2, None);
        assert_eq!(pick(&all, 4, Some(9)), (vec![], 9, None));
        assert_eq!(pick(&[], 4, None), (vec![], 0, None));
    }

    #[test]
    fn a_cursor_survives_churn() {
        // Page one, then 2 goes and 10 comes: page two starts after 3.
        let (first, _, next) = pick(&[1, 2, 3, 4, 5], 3, None);
        assert_eq!((first, next), (vec![1, 2, 3], Some(3)));
        assert_eq!(pick(&[1, 3, 4, 5, 10], 3, next), (vec![4, 5, 10], 5, None));
    }

    proptest::proptest! {
        #[test]
        fn a_page_is_the_sorted_prefix(
            mut all in proptest::collection::hash_set(0u64..1000, 0..200),
            limit in 1usize..50,
            after in proptest::option::of(0u64..1000),
        ) {
            let list: Vec<u64> = all.drain().collect();
            let (page, total, next) = pick(&list, limit, after);
            let mut want: Vec<u64> = list.iter().copied().filter(|&c| after.is_none_or(|a| c > a)).collect();
            want.sort_unstable();
            let more = want.len() > limit;
            want.truncate(limit);
            proptest::prop_assert_eq!(&page, &want);
            proptest::prop_assert_eq!(total, list.len());
            proptest::prop_assert_eq!(next, if more { want.last().copied() } else { None });
        }
    }
}
