use super::Store;
use crate::engine::NS_PER_SEC;
use crate::engine::record::Record;
use crate::engine::record::flag;
use crate::tcp::{Family, TcpState};

fn rec(cookie: u64) -> Record {
    Record::new(cookie, Family::Ipv4, TcpState::Established, cookie * 1_000)
}

/// Insert a record for each cookie; their slots, in order.
fn insert_all(s: &mut Store, cookies: impl Iterator<Item = u64>) -> Vec<u32> {
    cookies
        .map(|c| s.insert(rec(c), true, &mut ()).unwrap())
        .collect()
}

#[test]
fn a_removal_moves_no_other_record_and_its_slot_is_reused() {
    let mut s = Store::new(16, None);
    let slots = insert_all(&mut s, 1..=4);
    assert_eq!(s.remove(slots[1]), 2);
    assert_eq!(s.remove(slots[2]), 3);
    s.check();
    assert_eq!(s.len(), 2);
    assert!(s.get(slots[1]).is_none(), "a freed slot holds no record");
    for (c, i) in [(1u64, 0usize), (4, 3)] {
        assert_eq!(s.slot(c), Some(slots[i]), "cookie {c} kept its slot");
        assert_eq!(s.rec(slots[i]).cookie, c);
    }
    // The freed slots are reused, lowest first in their chunk; then the
    // slab grows.
    let reused = insert_all(&mut s, 5..=7);
    assert_eq!(reused, [slots[1], slots[2], 4]);
    s.check();
    let mut cookies: Vec<u64> = s.records().map(|r| r.cookie).collect();
    cookies.sort_unstable();
    assert_eq!(cookies, [1, 4, 5, 6, 7]);
    assert_eq!(s.slots(), 5);
}

#[test]
fn the_cap_counts_records_not_slots() {
    let mut s = Store::new(2, None);
    let a = s.insert(rec(1), true, &mut ()).unwrap();
    s.insert(rec(2), true, &mut ()).unwrap();
    s.remove(a);
    assert!(
        s.insert(rec(3), true, &mut ()).is_some(),
        "a free slot makes room"
    );
    assert!(
        s.insert(rec(4), false, &mut ()).is_none(),
        "two live records fill a cap of 2"
    );
    s.check();
}

/// Finish the record in `slot` at `at_s` seconds.
fn finish(s: &mut Store, slot: u32, at_s: u64) {
    s.update(slot, |r| {
        r.set(flag::FINISHED, true);
        r.state = TcpState::Close;
        r.since_ns = at_s * NS_PER_SEC;
    });
}

#[test]
fn finished_records_leave_in_the_order_they_finished_and_one_that_changes_goes_last() {
    let mut s = Store::new(16, None);
    let slots = insert_all(&mut s, 1..=4);
    for (i, &slot) in slots.iter().enumerate() {
        finish(&mut s, slot, 10 * (i as u64 + 1));
    }
    s.check();
    // Cookie 1 changes at 50 s: its entry at the front is blanked and it
    // is queued last.
    s.update(slots[0], |r| r.since_ns = 50 * NS_PER_SEC);
    s.check();
    assert_eq!(s.expire(30 * NS_PER_SEC), 2, "cookies 2 and 3");
    s.check();
    let left: Vec<bool> = (1..=4).map(|c| s.slot(c).is_some()).collect();
    assert_eq!(left, [true, false, false, true]);
    assert_eq!(s.expire(49 * NS_PER_SEC), 1, "cookie 4");
    assert_eq!(s.expire(50 * NS_PER_SEC), 1, "cookie 1");
    assert_eq!((s.len(), s.records().count()), (0, 0));
    s.check();
    // A record that starts again (a reconnect) leaves the queue: nothing
    // is dropped for it later.
    let a = s.insert(rec(5), true, &mut ()).unwrap();
    finish(&mut s, a, 60);
    s.update(a, |r| {
        r.set(flag::FINISHED, false);
        r.state = TcpState::SynSent;
        r.since_ns = 61 * NS_PER_SEC;
    });
    s.check();
    assert_eq!(s.expire(u64::MAX), 0);
    assert_eq!(s.slot(5), Some(a));
}

#[test]
fn eviction_takes_the_oldest_finished_record_past_blank_entries() {
    let mut s = Store::new(3, None);
    let slots = insert_all(&mut s, 1..=3);
    finish(&mut s, slots[0], 10);
    finish(&mut s, slots[1], 20);
    // Cookie 1 changes after cookie 2 finished: 2 is now the oldest.
    s.update(slots[0], |r| r.since_ns = 30 * NS_PER_SEC);
    assert!(
        s.insert(rec(4), false, &mut ()).is_some(),
        "a finished record makes room"
    );
    s.check();
    let left: Vec<bool> = (1..=4).map(|c| s.slot(c).is_some()).collect();
    assert_eq!(left, [true, false, true, true]);
    assert_eq!(s.evictions(), 1);
}
