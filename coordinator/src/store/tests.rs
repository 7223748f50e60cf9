//! One contract, three stores: the same suite runs against memory, sled and etcd (a real
//! etcd on loopback), plus sled's survival across reopen and following on the shared ones.

use super::*;
use crate::testutil::{open_sled_store, EtcdServer};

fn network(name: &str, version: u64) -> Network {
    Network {
        cidr6: None,
        name: name.into(),
        cidr: "10.9.8.0/24".parse().unwrap(),
        mtu: 1280,
        keepalive: 25,
        version,
        // Documents round-trip through every store.
        policy: Some(format!("# the policy of {name}\n")),
        dns_domain: Some("corp.example".into()),
    }
}

fn member(b: u8) -> Member {
    Member {
        address6: None,
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
        tags: [format!("t{b}")].into(),
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
        tags: vec!["control".into()],
    }
}

fn record(keys: &[u8]) -> ChangeRecord {
    ChangeRecord {
        network: false,
        touched: keys.iter().map(|b| Key([*b; 32])).collect(),
    }
}

/// A network as [`Store::load`] shows it.
fn dumped<'a>(d: &'a Dump, name: &str) -> Option<&'a NetworkDump> {
    d.networks.iter().find(|n| n.network.name == name)
}

fn names(d: &Dump) -> Vec<Network> {
    d.networks.iter().map(|n| n.network.clone()).collect()
}

fn expect(net: &str, revision: Revision) -> Vec<Expect> {
    vec![Expect {
        network: net.into(),
        revision,
    }]
}

/// Fills a store the way the coordinator would; returns the two networks' revisions.
fn fill(s: &dyn Store) -> (Revision, Revision) {
    let mut ops = vec![
        Op::PutNetwork(network("lab", 3)),
        Op::PutToken(token("t1", "lab")),
    ];
    for b in 1..=4 {
        ops.push(Op::PutMember {
            network: "lab".into(),
            member: member(b),
        });
    }
    for v in 1..=3 {
        ops.push(Op::PutLog {
            network: "lab".into(),
            version: v,
            record: record(&[v as u8]),
        });
    }
    let lab = s.apply(&ops, &expect("lab", 0)).unwrap();
    let lab2 = s
        .apply(
            &[
                Op::PutNetwork(network("lab2", 1)),
                Op::PutToken(token("t2", "lab2")),
                Op::PutMember {
                    network: "lab2".into(),
                    member: member(9),
                },
            ],
            &expect("lab2", 0),
        )
        .unwrap();
    assert!(lab2 > lab, "revisions increase: {lab} then {lab2}");
    s.flush().unwrap();
    (lab, lab2)
}

/// Checks what [`fill`] wrote, then changes and deletes things, conditions included.
fn exercise(s: &dyn Store, (lab, lab2): (Revision, Revision)) {
    let d = s.load().unwrap();
    assert!(d.revision >= lab2);
    assert_eq!(names(&d), vec![network("lab", 3), network("lab2", 1)]);
    let l = dumped(&d, "lab").unwrap();
    assert_eq!(l.revision, lab);
    assert_eq!(l.members, (1..=4).map(member).collect::<Vec<_>>());
    assert_eq!(l.tokens, vec![token("t1", "lab")]);
    assert_eq!(dumped(&d, "lab2").unwrap().members, vec![member(9)]);
    assert_eq!(dumped(&d, "lab2").unwrap().revision, lab2);
    assert_eq!(
        s.log_after("lab", 1).unwrap(),
        vec![(2, record(&[2])), (3, record(&[3]))]
    );
    assert_eq!(s.log_after("lab", u64::MAX).unwrap(), vec![]);

    // A batch made from a stale view of the network is refused and writes nothing; a
    // batch on another network is not affected by it.
    let stale = s.apply(
        &[Op::PutMember {
            network: "lab".into(),
            member: member(7),
        }],
        &expect("lab", lab - 1),
    );
    assert!(
        matches!(&stale, Err(StoreError::Conflict { network, expected }) if network == "lab" && *expected == lab - 1),
        "{stale:?}"
    );
    let again = s.apply(&[Op::PutNetwork(network("lab", 9))], &expect("lab", 0));
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "creating twice: {again:?}"
    );
    assert_eq!(dumped(&s.load().unwrap(), "lab").unwrap().members.len(), 4);

    // Replace, delete a member, prune the log: the network moves to the batch's revision.
    let mut m1 = member(1);
    m1.authorized = true;
    let rev = s
        .apply(
            &[
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
            ],
            &expect("lab", lab),
        )
        .unwrap();
    let d = s.load().unwrap();
    let l = dumped(&d, "lab").unwrap();
    assert_eq!(l.revision, rev);
    assert_eq!(l.members, vec![m1, member(3), member(4)]);
    assert_eq!(dumped(&d, "lab2").unwrap().revision, lab2, "untouched");
    assert_eq!(s.log_after("lab", 0).unwrap(), vec![(3, record(&[3]))]);
    // The old revision no longer matches.
    assert!(s
        .apply(&[Op::PutToken(token("t3", "lab"))], &expect("lab", lab))
        .is_err());

    // Audit entries (global, no condition) and their pruning.
    for seq in 0..4 {
        s.apply(
            &[Op::PutAudit {
                seq,
                entry: audit_entry(seq),
            }],
            &[],
        )
        .unwrap();
    }
    s.apply(&[Op::PruneAudit { upto: 1 }], &[]).unwrap();
    let seqs: Vec<u64> = s.load().unwrap().audit.iter().map(|(q, _)| *q).collect();
    assert_eq!(seqs, vec![2, 3]);

    // Deleting a network takes everything under it and leaves the other alone; its name
    // can be created again from revision 0.
    let d = s.load().unwrap();
    let lab_rev = dumped(&d, "lab").unwrap().revision;
    s.apply(&[Op::DeleteNetwork("lab".into())], &expect("lab", lab_rev))
        .unwrap();
    s.flush().unwrap();
    let d = s.load().unwrap();
    assert_eq!(names(&d), vec![network("lab2", 1)]);
    assert_eq!(s.log_after("lab", 0).unwrap(), vec![]);
    assert_eq!(dumped(&d, "lab2").unwrap().members, vec![member(9)]);
    assert_eq!(
        dumped(&d, "lab2").unwrap().tokens,
        vec![token("t2", "lab2")]
    );
    s.apply(&[Op::PutNetwork(network("lab", 1))], &expect("lab", 0))
        .unwrap();
    let d = s.load().unwrap();
    assert!(dumped(&d, "lab").unwrap().members.is_empty());
    assert!(dumped(&d, "lab").unwrap().tokens.is_empty());
}

fn audit_entry(n: u64) -> mesh_proto::admin::AuditEntry {
    mesh_proto::admin::AuditEntry {
        time: n,
        actor: "admin-token".into(),
        action: "token.revoke".into(),
        network: "lab".into(),
        target: format!("t{n}"),
        detail: String::new(),
    }
}

#[test]
fn memory_store_behaves() {
    let s = MemoryStore::new();
    let revs = fill(&s);
    assert!(s.is_flushed());
    exercise(&s, revs);
}

#[test]
fn sled_store_behaves_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let revs = {
        let s = SledStore::open(&path).unwrap();
        fill(&s)
    };
    // Everything flushed is there after reopening, revisions included.
    let s = open_sled_store(&path);
    exercise(&s, revs);
    drop(s);
    let s = open_sled_store(&path);
    let d = s.load().unwrap();
    assert_eq!(names(&d), vec![network("lab", 1), network("lab2", 1)]);
    assert_eq!(dumped(&d, "lab2").unwrap().members, vec![member(9)]);
}

#[test]
fn etcd_store_behaves() {
    let etcd = EtcdServer::start();
    let s = etcd.store("/wm-suite/", "c1");
    let revs = fill(&s);
    exercise(&s, revs);
    // Another prefix on the same cluster is another store.
    let other = etcd.store("/wm-other/", "c2");
    assert!(other.load().unwrap().networks.is_empty());
}

#[test]
fn sled_reports_corrupt_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(&dir.path().join("db")).unwrap();
    s.db.insert(b"n/bad", b"{not json".to_vec()).unwrap();
    let err = s.load().unwrap_err().to_string();
    assert!(err.starts_with("corrupt record n/bad"), "{err}");
}

/// Two writers on one shared store: each follower sees every batch, in revision order,
/// its own included, as the ops that were written (minus the change log).
async fn follows(a: &dyn Store, b: &dyn Store) {
    let start = a.load().unwrap().revision;
    let mut rx = b.follow(start).expect("a shared store follows");
    let r1 = a
        .apply(
            &[
                Op::PutNetwork(network("lab", 1)),
                Op::PutLog {
                    network: "lab".into(),
                    version: 1,
                    record: record(&[1]),
                },
            ],
            &expect("lab", 0),
        )
        .unwrap();
    let r2 = b
        .apply(
            &[Op::PutMember {
                network: "lab".into(),
                member: member(1),
            }],
            &expect("lab", r1),
        )
        .unwrap();
    let r3 = a
        .apply(&[Op::DeleteNetwork("lab".into())], &expect("lab", r2))
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("batches arrive")
            .expect("the follower runs");
        if let Follow::Batch(ev) = msg {
            seen.push(ev);
        }
    }
    assert_eq!(seen[0].revision, r1);
    assert_eq!(seen[0].ops, vec![Op::PutNetwork(network("lab", 1))]);
    assert_eq!(seen[1].revision, r2);
    assert_eq!(
        seen[1].ops,
        vec![Op::PutMember {
            network: "lab".into(),
            member: member(1)
        }]
    );
    assert_eq!(seen[2].revision, r3);
    assert!(
        seen[2].ops.contains(&Op::DeleteNetwork("lab".into())),
        "{:?}",
        seen[2].ops
    );
}

#[tokio::test]
async fn shared_memory_store_reports_every_batch() {
    let s = std::sync::Arc::new(MemoryStore::shared());
    follows(&*s, &*s).await;
    assert!(
        MemoryStore::new().follow(0).is_none(),
        "an unshared store does not follow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_reports_every_batch_to_every_coordinator() {
    let etcd = EtcdServer::start();
    let (a, b) = tokio::task::block_in_place(|| {
        (
            etcd.store("/wm-follow/", "a"),
            etcd.store("/wm-follow/", "b"),
        )
    });
    follows(&a, &b).await;
    // Presence is per coordinator and leased: b sees a's member online.
    let mut rx = b.follow(b.load().unwrap().revision).unwrap();
    a.set_presence("lab2", &Key([5; 32]), true);
    let p = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("presence arrives")
            .unwrap()
        {
            Follow::Presence(p) => break p,
            _ => continue,
        }
    };
    assert_eq!(
        p,
        Presence {
            network: "lab2".into(),
            key: Key([5; 32]),
            coordinator: "a".into(),
            online: true
        }
    );
    drop(a);
}

/// etcd with TLS and client certificates (`--etcd-ca`, `--etcd-cert`/`--etcd-key`): the
/// store works through it, and without a client certificate it says why it cannot.
#[test]
fn etcd_store_over_tls_with_a_client_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let (c, k) = (
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "server");
    let (client_cert, client_key) = leaf(vec!["wiremesh".into()], "client");
    let etcd = EtcdServer::start_with(
        "https",
        &[
            "--cert-file".into(),
            server_cert.into_os_string(),
            "--key-file".into(),
            server_key.into_os_string(),
            "--trusted-ca-file".into(),
            ca_file.clone().into_os_string(),
            "--client-cert-auth".into(),
        ],
    );
    let url = etcd.url.clone();
    let mut opts = EtcdOptions::new(vec![url.clone()], "c1".into());
    opts.prefix = "/wm-tls/".into();
    opts.ca = Some(ca_file.clone());
    opts.cert = Some((client_cert, client_key));
    opts.timeout = std::time::Duration::from_secs(10);
    let s = EtcdStore::connect(opts.clone()).unwrap();
    let revs = fill(&s);
    exercise(&s, revs);
    // No client certificate: refused, and the error says where.
    let mut bare = opts;
    bare.cert = None;
    bare.timeout = std::time::Duration::from_secs(3);
    let e = EtcdStore::connect(bare).unwrap_err().to_string();
    assert!(e.contains(&url) || e.contains("etcd"), "{e}");
}

/// etcd with authentication (`--etcd-user`, `--etcd-password-file`): the right password
/// works, a wrong one is refused at start with etcd's reason.
#[test]
fn etcd_store_with_a_user_and_password() {
    let etcd = EtcdServer::start();
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &etcd.url])
            .args(args)
            .output()
            .expect("etcdctl (apt-get install etcd-client)");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ctl(&["user", "add", "root", "--new-user-password=s3cret"]);
    ctl(&["user", "grant-role", "root", "root"]);
    ctl(&["auth", "enable"]);
    let mut opts = EtcdOptions::new(vec![etcd.url.clone()], "c1".into());
    opts.prefix = "/wm-auth/".into();
    opts.user = Some(("root".into(), "s3cret".into()));
    let s = EtcdStore::connect(opts.clone()).unwrap();
    let revs = fill(&s);
    exercise(&s, revs);
    let mut wrong = opts;
    wrong.user = Some(("root".into(), "nope".into()));
    let e = EtcdStore::connect(wrong).unwrap_err().to_string();
    assert!(
        e.contains("authentication failed") || e.contains("invalid"),
        "{e}"
    );
}
