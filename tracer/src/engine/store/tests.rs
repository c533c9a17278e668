use super::Store;
use crate::engine::record::Record;
use crate::tcp::{Family, TcpState};

fn rec(cookie: u64) -> Record {
    Record::new(cookie, Family::Ipv4, TcpState::Established, cookie * 1_000)
}

#[test]
fn a_removal_moves_no_other_record_and_its_slot_is_reused_first() {
    let mut s = Store::new(16, None);
    let slots: Vec<u32> = (1..=4)
        .map(|c| s.insert(rec(c), true, &mut ()).unwrap())
        .collect();
    assert_eq!(s.remove(slots[1]).cookie, 2);
    assert_eq!(s.remove(slots[2]).cookie, 3);
    s.check();
    assert_eq!(s.len(), 2);
    assert!(s.get(slots[1]).is_none(), "a freed slot holds no record");
    for (c, i) in [(1u64, 0usize), (4, 3)] {
        assert_eq!(s.slot(c), Some(slots[i]), "cookie {c} kept its slot");
        assert_eq!(s.rec(slots[i]).cookie, c);
    }
    // The slot freed last is reused first, then the other; then the slab grows.
    let reused: Vec<u32> = (5..=7)
        .map(|c| s.insert(rec(c), true, &mut ()).unwrap())
        .collect();
    assert_eq!(reused, [slots[2], slots[1], 4]);
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
