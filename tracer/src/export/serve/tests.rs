//! The connection cap: who makes room, and when a burst ends.
use super::*;

#[test]
fn at_the_cap_the_oldest_idle_connection_makes_room() {
    let t = Mutex::new(Table::default());
    let (a, busy_a, _) = admit(&t, 2).unwrap();
    let (b, _, close_b) = admit(&t, 2).unwrap();
    busy_a.fetch_add(1, Ordering::Relaxed);
    // a is busy, so b (idle) goes.
    let (c, busy_c, _) = admit(&t, 2).unwrap();
    assert!(t.lock().unwrap().conns.contains_key(&a));
    assert!(!t.lock().unwrap().conns.contains_key(&b));
    assert!(t.lock().unwrap().in_burst);
    // close_b was notified: a permit is stored.
    let waker = futures_noop();
    let mut fut = Box::pin(close_b.notified());
    assert!(
        fut.as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
    );
    // Everyone busy: the newcomer is refused.
    busy_c.fetch_add(1, Ordering::Relaxed);
    assert!(admit(&t, 2).is_none());
    let closed = t.lock().unwrap().closed.clone();
    assert_eq!((closed.evicted.get(), closed.refused.get()), (1, 1));
    // Back to half the cap: the burst is over.
    leave(&t, c, 2);
    assert!(!t.lock().unwrap().in_burst);
    leave(&t, a, 2);
    assert!(t.lock().unwrap().conns.is_empty());
}

fn futures_noop() -> std::task::Waker {
    std::task::Waker::noop().clone()
}

use std::future::Future as _;
