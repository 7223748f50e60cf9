//! The audit log: recorded with the change, bounded, durable (over HTTP:
//! `crate::admin::audit`'s tests).

use std::sync::Arc;

use mesh_proto::admin::AuditEntry;

use super::{AuditLog, ACTOR_ADMIN_TOKEN};
use crate::control::state::{Coordinator, ManualClock};
use crate::store::Store;
use crate::testutil::{create_network, join_info, open_sled_store};

fn entry(n: u64) -> AuditEntry {
    AuditEntry {
        time: n,
        actor: ACTOR_ADMIN_TOKEN.into(),
        action: "token.revoke".into(),
        network: "lab".into(),
        target: format!("t{n}"),
        detail: String::new(),
    }
}

#[test]
fn log_is_bounded_in_memory_and_in_the_store_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = open_sled_store(&path);
        let mut log = AuditLog::load(&store, 3).unwrap();
        assert!(log.is_empty());
        for n in 0..5 {
            let e = vec![entry(n)];
            store.apply(&log.ops(&e), &[]).unwrap();
            log.committed(e);
        }
        // Two at once, across the bound.
        let e = vec![entry(5), entry(6)];
        store.apply(&log.ops(&e), &[]).unwrap();
        log.committed(e);
        assert_eq!(log.len(), 3);
        let seqs: Vec<u64> = store
            .load()
            .unwrap()
            .audit
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seqs, vec![4, 5, 6]);
        assert_eq!(
            log.latest(2).iter().map(|e| e.time).collect::<Vec<_>>(),
            vec![6, 5]
        );
        store.flush().unwrap();
    }
    let store = open_sled_store(&path);
    let mut log = AuditLog::load(&store, 3).unwrap();
    assert_eq!(
        log.latest(10).iter().map(|e| e.time).collect::<Vec<_>>(),
        vec![6, 5, 4]
    );
    // Sequence numbers continue after a reopen.
    let e = vec![entry(7)];
    store.apply(&log.ops(&e), &[]).unwrap();
    log.committed(e);
    let seqs: Vec<u64> = store
        .load()
        .unwrap()
        .audit
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(seqs, vec![5, 6, 7]);
}

#[tokio::test]
async fn audit_survives_a_coordinator_restart_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let clock = Arc::new(ManualClock::new(5));
    {
        let coord = Coordinator::open(Arc::new(open_sled_store(&path)), clock.clone(), join_info())
            .unwrap();
        create_network(&coord, "lab").await;
        coord.delete_network("lab").await.unwrap();
    }
    let coord = Coordinator::open(Arc::new(open_sled_store(&path)), clock, join_info()).unwrap();
    let log = coord.audit(10).await;
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["network.delete", "network.create"]);
    assert_eq!(log[1].detail, "cidr 10.9.8.0/24, mtu 1280");
}
