//! Membership changes reach every node within a second (issue 3's acceptance), measured.
//!
//! In its own test binary on purpose: cargo runs test binaries one after the other, so this
//! measurement does not share the two cores with the other control-plane scenarios.

use std::time::Duration;

use wiremesh_tests::control::{
    self, addresses, lacks_peer, lists_peer, measure_propagation, start_site, summary, JoinedMesh,
    NETWORK,
};
use wiremesh_tests::topo::PORT;
use wiremesh_tests::{ping, ping_once, wait_until, Lab, Meshd, NodeKey, Peer, WgGo};

/// Generous: tests share two cores with other tests.
const CONVERGE: Duration = Duration::from_secs(30);
/// The bound for a membership change to reach every other node.
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);

/// A node that joins without a token is pending until authorised; authorising,
/// deauthorising and deleting it reaches every other node within a second; a deauthorised
/// key's packets are refused.
#[test]
fn membership_changes_reach_every_node_within_a_second() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mesh = JoinedMesh::new(&lab, 3, CONVERGE)?;
    let ips = addresses(&mesh.nodes)?;
    let others: Vec<&Meshd> = mesh.nodes.iter().collect();

    // Node d knows its private key, so that wireguard-go can impersonate it later.
    let d_key = NodeKey::generate()?;
    let d = start_site(&lab, 3, "d", Some(d_key.clone()))?;
    let pin = mesh.coord.pin()?;
    let out = d.join_with_pin(NETWORK, mesh.coord.control_addr(), &pin)?;
    eprintln!("meshctl join (no token):\n{out}");
    d.wait_control_state("pending", CONVERGE)?;
    let lower = out.to_lowercase();
    assert!(
        lower.contains("pending") || lower.contains("authoriz") || lower.contains("authoris"),
        "meshctl join does not say the node waits for an admin: {out:?}"
    );
    let text = d.meshctl_status_text()?;
    assert!(
        text.contains("state: pending"),
        "`meshctl status` does not say pending:\n{text}"
    );
    let d_pub = d.public_key()?;
    assert_eq!(d_pub, d_key.public);
    assert!(d.peer_keys()?.is_empty(), "pending node d has peers");
    let member = mesh
        .coord
        .member(NETWORK, &d_pub)?
        .expect("the coordinator does not list pending node d");
    assert_eq!(member["authorized"], false, "{member}");
    for n in &others {
        assert!(
            !n.peer_keys()?.contains(&d_pub),
            "node {} lists pending node d",
            n.name()
        );
    }

    let mut authorize = Vec::new();
    let mut deauthorize = Vec::new();
    let mut delete = Vec::new();
    // Every sample must be within the bound. An earlier version tolerated one outlier: once
    // every node, the pending one included, got its netmap 1.7 s late in a run whose other
    // samples took 10 ms. The cause was on the push path: before each netmap push, every
    // session recorded the version it sent durably (a store write and a group-commit
    // flush, i.e. an fsync), so one slow fsync on a shared disk delayed every node's push
    // at once. Pushes no longer wait for the disk (issue 10: resume needs only the change
    // log), so a stalled flush can delay only the admin command's own answer, which
    // `after_command` does not count.
    let mut over = Vec::new();
    let mut check = |p: &control::Propagation, into: &mut Vec<Duration>| {
        into.push(p.after_command());
        if p.after_command() >= PROPAGATION_BOUND {
            eprintln!(
                "WARNING {}: slowest node after {:?} (bound {PROPAGATION_BOUND:?}): {}",
                p.label,
                p.after_command(),
                p.bench_line()
            );
            over.push(p.bench_line());
        }
    };

    for round in 0..3 {
        // Authorise: every other node lists d.
        let (_, p) =
            measure_propagation("authorize", &others, lists_peer(&d_pub), CONVERGE, || {
                mesh.coord.admin(&["authorize", NETWORK, &d_pub])
            })?;
        check(&p, &mut authorize);
        d.wait_control_state("connected", CONVERGE)?;
        let d_ip = d.address()?;
        assert!(control::in_cidr(&d_ip), "d got {d_ip}");
        wait_until(CONVERGE, "d -> a overlay ping after authorisation", || {
            ping_once(d.ns(), &ips[0])
        })?;
        wait_until(CONVERGE, "b -> d overlay ping after authorisation", || {
            ping_once(mesh.nodes[1].ns(), &d_ip)
        })?;

        if round == 2 {
            break;
        }
        // Deauthorise: every other node drops d.
        let (_, p) =
            measure_propagation("deauthorize", &others, lacks_peer(&d_pub), CONVERGE, || {
                mesh.coord.admin(&["deauthorize", NETWORK, &d_pub])
            })?;
        check(&p, &mut deauthorize);
        d.wait_control_state("pending", CONVERGE)?;
        assert_eq!(
            ping(d.ns(), &ips[0], 3),
            100.0,
            "deauthorised d still reaches a over the overlay"
        );

        if round == 0 {
            // Someone holding d's private key, ignoring its netmap, sends to a from another
            // site: a refuses the handshake as coming from an unknown key.
            let (e_ns, _) = lab.internet_host("e", &format!("{}/24", control::site_ip(4)))?;
            let unknown_before = mesh.nodes[0].dropped("unknown-peer")?;
            let rogue = WgGo::start(&e_ns, &d_key, PORT, &format!("{d_ip}/24"))?;
            let mut to_a = Peer::new(
                &mesh.nodes[0].public_key()?,
                Some(format!("{}:{PORT}", control::site_ip(0))),
                &format!("{}/32", ips[0]),
            );
            to_a.persistent_keepalive = Some(1);
            rogue.set_peer(&to_a)?;
            assert_eq!(
                ping(&e_ns, &ips[0], 5),
                100.0,
                "a accepted packets from deauthorised d's key"
            );
            wait_until(
                CONVERGE,
                "a counts handshakes from deauthorised d's key as unknown-peer",
                || {
                    mesh.nodes[0]
                        .dropped("unknown-peer")
                        .is_ok_and(|n| n > unknown_before)
                },
            )?;
            assert_eq!(
                rogue.latest_handshake(&mesh.nodes[0].public_key()?)?,
                0,
                "the impersonator completed a handshake with a"
            );
            drop(rogue);
        }
    }

    // Delete: every other node drops d, and d is refused.
    let (_, p) = measure_propagation("delete", &others, lacks_peer(&d_pub), CONVERGE, || {
        mesh.coord.admin(&["delete-member", NETWORK, &d_pub])
    })?;
    check(&p, &mut delete);
    d.wait_control_state("denied", CONVERGE)?;
    assert!(
        mesh.coord.member(NETWORK, &d_pub)?.is_none(),
        "the coordinator still lists deleted d"
    );
    assert_eq!(
        ping(d.ns(), &ips[0], 3),
        100.0,
        "deleted d still reaches a over the overlay"
    );

    eprintln!("{}", summary("authorize", &authorize));
    eprintln!("{}", summary("deauthorize", &deauthorize));
    eprintln!("{}", summary("delete", &delete));
    let mut all: Vec<Duration> = [&authorize[..], &deauthorize[..], &delete[..]].concat();
    all.sort();
    let median = all[all.len() / 2];
    assert!(
        median < PROPAGATION_BOUND,
        "median propagation {median:?} over the {PROPAGATION_BOUND:?} bound"
    );
    assert!(
        over.is_empty(),
        "{} of {} changes took longer than {PROPAGATION_BOUND:?}:\n{}",
        over.len(),
        all.len(),
        over.join("\n")
    );
    drop(d);
    Ok(())
}
