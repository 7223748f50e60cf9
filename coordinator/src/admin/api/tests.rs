//! The dashboard's session store.

use std::time::Duration;

use tokio::time::Instant;

use super::*;

#[test]
fn sessions_are_bounded_and_expire() {
    let now = Instant::now();
    let mut s = Sessions::new(3);
    let made: Vec<(String, String)> = (0..4).map(|_| s.create(now).unwrap()).collect();
    assert_eq!(s.len(), 3);
    // The oldest went.
    assert_eq!(s.lookup(&made[0].0, now), None);
    for (id, csrf) in &made[1..] {
        assert_eq!(s.lookup(id, now).as_ref(), Some(csrf));
        assert_ne!(id, csrf);
    }
    // Alive until the end of its lifetime, not after.
    let (id, csrf) = &made[3];
    let just_before = now + SESSION_TTL - Duration::from_secs(1);
    assert_eq!(s.lookup(id, just_before).as_ref(), Some(csrf));
    assert_eq!(s.lookup(id, now + SESSION_TTL), None);
    assert_eq!(s.len(), 2);
    // When full, expired sessions make room before a live one is evicted.
    let later = now + SESSION_TTL + Duration::from_secs(5);
    let first = s.create(later).unwrap();
    assert_eq!(s.len(), 3);
    let fresh = s.create(later).unwrap();
    assert_eq!(s.len(), 2);
    assert!(s.lookup(&first.0, later).is_some());
    assert!(s.lookup(&fresh.0, later).is_some());
    s.remove(&fresh.0);
    assert_eq!(s.lookup(&fresh.0, later), None);
    // Ids are unguessable and distinct.
    let ids: std::collections::BTreeSet<String> =
        (0..200).map(|_| s.create(later).unwrap().0).collect();
    assert_eq!(ids.len(), 200);
    assert_eq!(Sessions::new(0).max, 1);
    assert_eq!(MAX_SESSIONS, 1000);
}
