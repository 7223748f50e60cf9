//! Restart: meshd killed with SIGKILL and started again with the same config and state
//! directory keeps its generated key and address and is reachable again within 5 s; killed
//! in the middle of a netmap update, it comes back from a consistent cache with no stale
//! peer.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use wiremesh_tests::topo::PORT;
use wiremesh_tests::{ping, ping_once, Lab, Meshd, MeshdConfig, NodeKey, Peer};

/// The bound the spec sets from the restart to the first answered ping.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

#[test]
fn restart_after_kill_9_keeps_key_and_recovers() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (a_ns, _) = lab.internet_host("a", "198.51.100.1/24")?;
    let (b_ns, _) = lab.internet_host("b", "198.51.100.2/24")?;
    let ka = NodeKey::generate()?;

    // b has no key file: meshd generates <state-dir>/node.key on first start.
    let mut b = Meshd::start(
        &b_ns,
        "b",
        MeshdConfig::new("10.9.8.2/24", PORT, None).peer(Peer::new(
            &ka.public,
            Some(format!("198.51.100.1:{PORT}")),
            "10.9.8.1/32",
        )),
    )?;
    let b_key = b.public_key()?;
    let key_file = b.state_dir().join("node.key");
    let mode = std::fs::metadata(&key_file)
        .unwrap_or_else(|e| panic!("{} missing after first start: {e}", key_file.display()))
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "{} is readable by group/others (mode {mode:o})",
        key_file.display()
    );

    let a = Meshd::start(
        &a_ns,
        "a",
        MeshdConfig::new("10.9.8.1/24", PORT, Some(ka.clone())).peer(Peer::new(
            &b_key,
            Some(format!("198.51.100.2:{PORT}")),
            "10.9.8.2/32",
        )),
    )?;
    wiremesh_tests::wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(&a_ns, "10.9.8.2")
    })
    .expect("a cannot ping b over the overlay");
    let before = b.status()?;

    b.kill9()?;
    assert!(
        !ping_once(&a_ns, "10.9.8.2"),
        "b answered although its meshd was killed"
    );

    let restarted = Instant::now();
    b.restart()?;
    // The restarted node has no session: it initiates the handshake with its first packet.
    let mut recovered = None;
    while restarted.elapsed() < RECOVERY_BOUND + Duration::from_secs(5) {
        if ping_once(&b_ns, "10.9.8.1") {
            recovered = Some(restarted.elapsed());
            break;
        }
    }
    let recovered = recovered.unwrap_or_else(|| {
        panic!(
            "b -> a ping did not succeed within {:?} of the restart",
            RECOVERY_BOUND + Duration::from_secs(5)
        )
    });
    eprintln!(
        "b -> a ping answered {:.3} s after the restart began",
        recovered.as_secs_f64()
    );
    assert!(
        recovered <= RECOVERY_BOUND,
        "recovery took {recovered:?}, bound {RECOVERY_BOUND:?}"
    );

    let after = b.status()?;
    assert_eq!(
        after["public-key"], before["public-key"],
        "the public key changed across the restart"
    );
    assert_eq!(after["public-key"], b_key.as_str());
    assert_eq!(
        after["address"], before["address"],
        "the address changed across the restart"
    );
    assert_eq!(after["address"], "10.9.8.2/24");
    assert_eq!(
        ping(&a_ns, "10.9.8.2", 3),
        0.0,
        "a -> b lost packets after b's restart"
    );
    drop(a);
    Ok(())
}

/// `kill -9` of meshd while a membership change reaches it, at several points of the
/// update (before the push, while it is applied and cached, after): the restarted meshd,
/// cut off from the coordinator, comes up from its cache with a consistent state (its
/// address, and the peer set from before or from after the change, nothing else); once
/// it reaches the coordinator again its peers are exactly the coordinator's (no stale
/// peer), and they stay so.
#[test]
fn kill_9_during_a_netmap_update_leaves_a_consistent_cache_and_no_stale_peer() -> anyhow::Result<()>
{
    use std::collections::BTreeSet;

    use wiremesh_tests::control::{JoinedMesh, COORDINATOR_IP, NETWORK};
    use wiremesh_tests::coordinator::CONTROL_PORT;

    const CONVERGE: Duration = Duration::from_secs(60);
    let lab = Lab::new()?;
    let mut mesh = JoinedMesh::new(&lab, 3, CONVERGE)?;
    let keys: Vec<String> = mesh
        .nodes
        .iter()
        .map(Meshd::public_key)
        .collect::<anyhow::Result<_>>()?;
    let address = mesh.nodes[0].address()?;
    let with_c: BTreeSet<String> = [keys[1].clone(), keys[2].clone()].into();
    let without_c: BTreeSet<String> = [keys[1].clone()].into();
    let peers = |m: &Meshd| -> anyhow::Result<BTreeSet<String>> {
        Ok(m.peer_keys()?.into_iter().collect())
    };
    let block = format!(
        "table inet wmcrash {{\n  chain out {{\n    type filter hook output priority 0;\n    ip daddr {COORDINATOR_IP} udp dport {CONTROL_PORT} drop\n  }}\n}}\n"
    );

    // Offsets of the kill after the admin command starts: the change reaches a node a
    // few milliseconds after the command's answer, which itself takes a few.
    for (round, offset_ms) in [0u64, 2, 4, 7, 12, 40, 160].into_iter().enumerate() {
        let deauthorize = round % 2 == 0;
        let (before, after) = if deauthorize {
            (&with_c, &without_c)
        } else {
            (&without_c, &with_c)
        };
        let verb = if deauthorize {
            "deauthorize"
        } else {
            "authorize"
        };
        let admin = {
            let args = [verb.to_owned(), NETWORK.to_owned(), keys[2].clone()];
            let coord = &mesh.coord;
            std::thread::scope(|s| -> anyhow::Result<()> {
                let change = s.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    coord.admin(&args)
                });
                std::thread::sleep(Duration::from_millis(offset_ms));
                mesh.nodes[0].kill9()?;
                change
                    .join()
                    .map_err(|_| anyhow::anyhow!("the admin thread panicked"))??;
                Ok(())
            })
        };
        admin?;
        let a = &mut mesh.nodes[0];
        // Up again from the cache alone: the coordinator is out of reach.
        a.ns().nft(&block)?;
        a.restart()?;
        let cached = peers(a)?;
        eprintln!(
            "round {round} ({verb}, kill after {offset_ms} ms): cached peers {}",
            if &cached == after {
                "after the change"
            } else {
                "before it"
            }
        );
        assert_eq!(
            a.address()?,
            address,
            "round {round}: address from the cache"
        );
        assert!(
            &cached == before || &cached == after,
            "round {round}: the cache holds neither the peers before nor after the change: {cached:?}"
        );
        a.ns()
            .exec(&["nft", "delete", "table", "inet", "wmcrash"])?;
        wiremesh_tests::wait_until(
            CONVERGE,
            "the restarted node's peers match the coordinator's",
            || peers(a).is_ok_and(|p| &p == after),
        )
        .unwrap_or_else(|e| panic!("round {round}: {e}; peers {:?}", peers(a)));
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(&peers(a)?, after, "round {round}: a stale peer came back");
    }
    // And the tunnels work: a reaches b over the overlay.
    let b_ip = mesh.nodes[1].address()?;
    wiremesh_tests::wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(mesh.nodes[0].ns(), &b_ip)
    })
    .expect("a cannot ping b after the crashes");
    Ok(())
}
