//! The dashboard's session store.

use std::time::Duration;

use tokio::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

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

#[test]
fn a_session_from_another_coordinator_of_the_set_is_good_here() {
    let now = Instant::now();
    let unix = 1_800_000_000;
    let key = [9u8; 32];
    let mut a = Sessions::with_key(10, key, "c0");
    let mut b = Sessions::with_key(10, key, "c1");
    let (id, csrf) = a.create_at(now, unix).unwrap();
    assert_eq!(id.len(), 64);
    // b never saw it, yet accepts it with the same CSRF token, until it expires.
    assert_eq!(b.lookup_at(&id, now, unix + 10).as_ref(), Some(&csrf));
    assert_eq!(b.lookup_at(&id, now, unix + SESSION_TTL.as_secs()), None);
    // Another key (another set, or a rotated admin token) does not.
    let mut other = Sessions::with_key(10, [8u8; 32], "c1");
    assert_eq!(other.lookup_at(&id, now, unix + 10), None);
    // A tampered id (expiry pushed out) does not.
    let mut raw = URL_SAFE_NO_PAD.decode(&id).unwrap();
    raw[0] ^= 1;
    assert_eq!(
        b.lookup_at(&URL_SAFE_NO_PAD.encode(&raw), now, unix + 10),
        None
    );
    // A's own sessions must be in its table: evicted or logged out there, they are gone
    // there, whatever the signature says.
    a.remove(&id);
    assert_eq!(a.lookup_at(&id, now, unix + 10), None);
    // Logging out on b ends it on b.
    let (id2, _) = a.create_at(now, unix).unwrap();
    b.remove(&id2);
    assert_eq!(b.lookup_at(&id2, now, unix + 10), None);
    assert!(a.lookup_at(&id2, now, unix + 10).is_some());
}
