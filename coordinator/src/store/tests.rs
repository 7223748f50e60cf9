//! The same behaviour checked against both stores, plus sled's survival across reopen.

use super::*;
use crate::testutil::open_sled_store;

fn network(name: &str, version: u64) -> Network {
    Network {
        name: name.into(),
        cidr: "10.9.8.0/24".parse().unwrap(),
        mtu: 1280,
        keepalive: 25,
        version,
    }
}

fn member(b: u8) -> Member {
    Member {
        public_key: Key([b; 32]),
        name: format!("n{b}"),
        address: format!("10.9.8.{b}").parse().unwrap(),
        authorized: b % 2 == 0,
        created_at: 1,
        last_seen: Some(2),
        version: "0.1.0".into(),
        endpoints: vec!["203.0.113.9:51820".parse().unwrap()],
        local_endpoints: vec![],
        reflexive_endpoints: vec![],
        public_endpoint: None,
        advertised_routes: vec![],
        approved_routes: vec![],
    }
}

fn token(id: &str, net: &str) -> Token {
    Token {
        id: id.into(),
        network: net.into(),
        secret_hash: [7; 32],
        reusable: false,
        expires_at: Some(100),
        revoked: false,
        uses: 0,
        created_at: 1,
    }
}

fn record(keys: &[u8]) -> ChangeRecord {
    ChangeRecord {
        network: false,
        touched: keys.iter().map(|b| Key([*b; 32])).collect(),
    }
}

/// Fills a store the way the coordinator would.
fn fill(s: &dyn Store) {
    let mut ops = vec![
        Op::PutNetwork(network("lab", 3)),
        Op::PutNetwork(network("lab2", 1)),
        Op::PutToken(token("t1", "lab")),
        Op::PutToken(token("t2", "lab2")),
    ];
    for b in 1..=4 {
        ops.push(Op::PutMember {
            network: "lab".into(),
            member: member(b),
        });
    }
    ops.push(Op::PutMember {
        network: "lab2".into(),
        member: member(9),
    });
    for v in 1..=3 {
        ops.push(Op::PutLog {
            network: "lab".into(),
            version: v,
            record: record(&[v as u8]),
        });
    }
    ops.push(Op::PutSent {
        network: "lab".into(),
        key: Key([2; 32]),
        version: 3,
    });
    s.apply(&ops).unwrap();
    s.flush().unwrap();
}

/// Checks what [`fill`] wrote, then changes and deletes things.
fn exercise(s: &dyn Store) {
    let nets = s.networks().unwrap();
    assert_eq!(nets, vec![network("lab", 3), network("lab2", 1)]);
    let members = s.members("lab").unwrap();
    assert_eq!(members, (1..=4).map(member).collect::<Vec<_>>());
    assert_eq!(s.members("lab2").unwrap(), vec![member(9)]);
    assert_eq!(s.members("la").unwrap(), vec![]);
    assert_eq!(s.tokens("lab").unwrap(), vec![token("t1", "lab")]);
    assert_eq!(s.last_sent("lab", &Key([2; 32])).unwrap(), Some(3));
    assert_eq!(s.last_sent("lab", &Key([3; 32])).unwrap(), None);
    assert_eq!(
        s.log_after("lab", 1).unwrap(),
        vec![(2, record(&[2])), (3, record(&[3]))]
    );
    assert_eq!(s.log_after("lab", u64::MAX).unwrap(), vec![]);

    // Replace, delete a member (its last-sent goes too), prune the log.
    let mut m1 = member(1);
    m1.authorized = true;
    s.apply(&[
        Op::PutMember {
            network: "lab".into(),
            member: m1.clone(),
        },
        Op::DeleteMember {
            network: "lab".into(),
            key: Key([2; 32]),
        },
        Op::PruneLog {
            network: "lab".into(),
            upto: 2,
        },
    ])
    .unwrap();
    let members = s.members("lab").unwrap();
    assert_eq!(members, vec![m1, member(3), member(4)]);
    assert_eq!(s.last_sent("lab", &Key([2; 32])).unwrap(), None);
    assert_eq!(s.log_after("lab", 0).unwrap(), vec![(3, record(&[3]))]);

    // Sent versions come and go.
    s.apply(&[Op::PutSent {
        network: "lab".into(),
        key: Key([3; 32]),
        version: 7,
    }])
    .unwrap();
    assert_eq!(s.last_sent("lab", &Key([3; 32])).unwrap(), Some(7));
    s.apply(&[Op::DeleteSent {
        network: "lab".into(),
        key: Key([3; 32]),
    }])
    .unwrap();
    assert_eq!(s.last_sent("lab", &Key([3; 32])).unwrap(), None);

    // Deleting a network takes everything under it, also puts earlier in the same batch,
    // and leaves the other network alone.
    s.apply(&[
        Op::PutMember {
            network: "lab".into(),
            member: member(5),
        },
        Op::DeleteNetwork("lab".into()),
    ])
    .unwrap();
    s.flush().unwrap();
    assert_eq!(s.networks().unwrap(), vec![network("lab2", 1)]);
    assert_eq!(s.members("lab").unwrap(), vec![]);
    assert_eq!(s.tokens("lab").unwrap(), vec![]);
    assert_eq!(s.log_after("lab", 0).unwrap(), vec![]);
    assert_eq!(s.members("lab2").unwrap(), vec![member(9)]);
    assert_eq!(s.tokens("lab2").unwrap(), vec![token("t2", "lab2")]);
}

#[test]
fn memory_store_behaves() {
    let s = MemoryStore::new();
    fill(&s);
    assert!(s.is_flushed());
    exercise(&s);
}

#[test]
fn sled_store_behaves_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = SledStore::open(&path).unwrap();
        fill(&s);
    }
    // Everything flushed is there after reopening.
    let s = open_sled_store(&path);
    exercise(&s);
    drop(s);
    let s = open_sled_store(&path);
    assert_eq!(s.networks().unwrap(), vec![network("lab2", 1)]);
    assert_eq!(s.members("lab2").unwrap(), vec![member(9)]);
}

#[test]
fn sled_reports_corrupt_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(&dir.path().join("db")).unwrap();
    s.db.insert(b"n/bad", b"{not json".to_vec()).unwrap();
    let err = s.networks().unwrap_err().to_string();
    assert!(err.starts_with("corrupt record n/bad"), "{err}");
}
