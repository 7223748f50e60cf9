//! Checks the lab itself with wireguard-go on both ends, so that a failing meshd test
//! points at meshd and not at the namespaces, links, NAT or loss rules.

use std::process::Command;
use std::time::Duration;

use wiremesh_tests::{
    ping, ping_once, set_udp_loss, wait_until, Lab, NatKind, Netns, NodeKey, Peer, WgGo,
};

fn namespace_exists(name: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn netns_is_deleted_and_emptied_on_drop_even_on_panic() -> anyhow::Result<()> {
    wiremesh_tests::require_root()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let ns = Netns::new("drop").expect("creating a namespace");
        let child = ns.spawn_piped(&["sleep", "60"]).expect("starting sleep");
        // `ip netns exec` enters the namespace after spawn returns; wait until it has.
        wait_until(
            Duration::from_secs(5),
            "sleep to enter the namespace",
            || ns.pids().contains(&child.id()),
        )
        .expect("sleep never showed up in the namespace");
        tx.send((ns.name().to_owned(), child))
            .expect("handing over the child");
        panic!("deliberate panic: the namespace must still be cleaned up");
    })
    .join()
    .is_err();
    assert!(panicked, "the helper thread was supposed to panic");
    let (name, mut child) = rx.recv()?;
    assert!(
        !namespace_exists(&name),
        "namespace {name} still exists after drop during panic"
    );
    let status = child.try_wait()?;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        status.is_some(),
        "process {} started in {name} still ran after the namespace was dropped",
        child.id()
    );
    Ok(())
}

/// Two wireguard-go instances on a direct veth link handshake and ping.
#[test]
fn wireguard_go_pair_pings_over_a_link() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, &b, "198.51.100.1/24", "198.51.100.2/24")?;
    assert_eq!(
        ping(&a, "198.51.100.2", 3),
        0.0,
        "underlay ping over the veth link failed"
    );

    let (ka, kb) = (NodeKey::generate()?, NodeKey::generate()?);
    let wa = WgGo::start(&a, &ka, 51820, "10.9.8.1/24")?;
    let wb = WgGo::start(&b, &kb, 51820, "10.9.8.2/24")?;
    wa.set_peer(&Peer::new(
        &kb.public,
        Some("198.51.100.2:51820".into()),
        "10.9.8.2/32",
    ))?;
    wb.set_peer(&Peer::new(
        &ka.public,
        Some("198.51.100.1:51820".into()),
        "10.9.8.1/32",
    ))?;

    wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(&a, "10.9.8.2")
    })
    .expect("overlay ping");
    assert_eq!(
        ping(&b, "10.9.8.1", 5),
        0.0,
        "b -> a overlay ping lost packets"
    );
    assert!(
        wa.latest_handshake(&kb.public)? > 0,
        "a reports no handshake with b"
    );
    assert!(
        wb.latest_handshake(&ka.public)? > 0,
        "b reports no handshake with a"
    );
    Ok(())
}

/// Hosts on the internet bridge in different documentation ranges reach each other via
/// the internet namespace's gateways.
#[test]
fn internet_routes_between_documentation_ranges() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (a, _) = lab.internet_host("a", "198.51.100.1/24")?;
    let (b, _) = lab.internet_host("b", "203.0.113.7/24")?;
    let (c, _) = lab.internet_host("c", "192.0.2.9/24")?;
    assert_eq!(ping(&a, "203.0.113.7", 3), 0.0);
    assert_eq!(ping(&b, "192.0.2.9", 3), 0.0);
    assert_eq!(ping(&c, "198.51.100.1", 3), 0.0);
    Ok(())
}

/// A host behind each kind of router talks WireGuard to a server on the internet; the
/// server sees the mapping the NAT kind promises.
fn nat_case(kind: NatKind) -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (server, _) = lab.internet_host("srv", "198.51.100.2/24")?;
    let router = lab.nat_router(kind, "203.0.113.10/24", "192.168.1.1/24")?;
    let (client, _) = lab.nat_host(&router, "cli", "192.168.1.2/24")?;
    assert_eq!(
        ping(&client, "198.51.100.2", 3),
        0.0,
        "client cannot reach the server through the router"
    );
    // Inbound to the private address works only without NAT (the internet has a route).
    let inbound = ping(&server, "192.168.1.2", 2);
    match kind {
        NatKind::None => assert_eq!(
            inbound, 0.0,
            "plain router: server should reach 192.168.1.2"
        ),
        NatKind::Cone | NatKind::Symmetric => {
            assert_eq!(inbound, 100.0, "NAT: 192.168.1.2 must not be reachable")
        }
    }

    let (kc, ks) = (NodeKey::generate()?, NodeKey::generate()?);
    let wc = WgGo::start(&client, &kc, 40000, "10.9.8.1/24")?;
    let ws = WgGo::start(&server, &ks, 51820, "10.9.8.2/24")?;
    let mut to_server = Peer::new(&ks.public, Some("198.51.100.2:51820".into()), "10.9.8.2/32");
    to_server.persistent_keepalive = Some(1);
    // Server first: the keepalive makes the client initiate at once, and an initiation
    // the server cannot match would only be retried after 5 s (REKEY_TIMEOUT).
    ws.set_peer(&Peer::new(&kc.public, None, "10.9.8.1/32"))?;
    wc.set_peer(&to_server)?;

    wait_until(
        Duration::from_secs(10),
        "client -> server overlay ping",
        || ping_once(&client, "10.9.8.2"),
    )
    .expect("overlay ping through the router");
    assert_eq!(
        ping(&server, "10.9.8.1", 3),
        0.0,
        "server -> client over the learned endpoint"
    );
    let ep = ws
        .endpoint(&kc.public)?
        .expect("server learned no endpoint for the client");
    let (ip, port) = ep.rsplit_once(':').expect("endpoint is IP:PORT");
    match kind {
        NatKind::None => assert_eq!(
            ep, "192.168.1.2:40000",
            "plain routing keeps address and port"
        ),
        NatKind::Cone => assert_eq!(
            ep, "203.0.113.10:40000",
            "masquerade maps to the WAN address and keeps the port"
        ),
        NatKind::Symmetric => {
            assert_eq!(
                ip, "203.0.113.10",
                "masquerade random maps to the WAN address"
            );
            assert_ne!(port, "40000", "masquerade random should pick a random port");
        }
    }
    Ok(())
}

#[test]
fn wireguard_go_behind_plain_router() -> anyhow::Result<()> {
    nat_case(NatKind::None)
}

#[test]
fn wireguard_go_behind_cone_nat() -> anyhow::Result<()> {
    nat_case(NatKind::Cone)
}

#[test]
fn wireguard_go_behind_symmetric_nat() -> anyhow::Result<()> {
    nat_case(NatKind::Symmetric)
}

/// 100 % UDP loss on a host stops WireGuard but not ICMP on the underlay; removing it
/// restores the tunnel.
#[test]
fn udp_loss_stops_wireguard_but_not_icmp() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (a, _) = lab.internet_host("a", "198.51.100.1/24")?;
    let (b, _) = lab.internet_host("b", "198.51.100.2/24")?;
    let (ka, kb) = (NodeKey::generate()?, NodeKey::generate()?);
    let wa = WgGo::start(&a, &ka, 51820, "10.9.8.1/24")?;
    let wb = WgGo::start(&b, &kb, 51820, "10.9.8.2/24")?;
    wa.set_peer(&Peer::new(
        &kb.public,
        Some("198.51.100.2:51820".into()),
        "10.9.8.2/32",
    ))?;
    wb.set_peer(&Peer::new(
        &ka.public,
        Some("198.51.100.1:51820".into()),
        "10.9.8.1/32",
    ))?;
    wait_until(Duration::from_secs(10), "overlay ping", || {
        ping_once(&a, "10.9.8.2")
    })
    .expect("overlay ping");

    set_udp_loss(&a, 100)?;
    assert_eq!(
        ping(&a, "10.9.8.2", 3),
        100.0,
        "overlay ping must fail with 100 % UDP loss"
    );
    assert_eq!(
        ping(&a, "198.51.100.2", 3),
        0.0,
        "ICMP on the underlay must not be affected"
    );
    set_udp_loss(&a, 0)?;
    wait_until(
        Duration::from_secs(10),
        "overlay ping after removing the loss",
        || ping_once(&a, "10.9.8.2"),
    )
    .expect("overlay ping after loss removed");
    Ok(())
}
