//! Several networks per node (issue 15, third part), end to end: one coordinator with
//! networks alpha and bravo; node n joins alpha, then bravo with bravo's token; a1 and a2
//! are in alpha, b1 in bravo. Every host is a plain site on the lab's internet.
//!
//! ```text
//!             coordinator (alpha 10.21.0.0/24, bravo 10.22.0.0/24)
//!                 │
//!   a1 ── a2 ── n (alpha on its interface, bravo on the next one, ip_forward=1) ── b1
//! ```
//!
//! - n reaches members of both networks over their overlays, on two TUN interfaces, and
//!   `meshctl status --json` shows both (the first network's fields where they always were,
//!   the second under `networks`); `--network` picks one.
//! - a1 cannot reach b1 through n: with forwarding on in n's namespace, a1 deliberately
//!   routes bravo's prefix at n (a static `[[peer]]` for n's alpha key whose allowed IPs
//!   cover bravo, and a kernel route); n drops those packets (`not-local`) and b1 sees
//!   nothing of them.
//! - meshd killed with SIGKILL (its bravo meshd follows) and started again while the
//!   coordinator is down: both networks come back from their caches and carry traffic.
//! - bravo's meshd killed alone: the status shows it as an error entry until the first
//!   meshd has started it again, on the same interface.
//! - `meshctl leave bravo`: bravo's interface and state directory go, while a ping from n
//!   to a1 runs across the leave without a loss and without a new handshake.
//!
//! Needs root.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use wiremesh_tests::control::{site_ip, start_coordinator};
use wiremesh_tests::lab::parse_ping_loss;
use wiremesh_tests::{ping_once, require_root, topo, wait_until, Lab, Meshd, MeshdConfig, Peer};

/// Generous: tests share two cores with other tests.
const CONVERGE: Duration = Duration::from_secs(30);
const ALPHA: &str = "alpha";
const ALPHA_CIDR: &str = "10.21.0.0/24";
const BRAVO: &str = "bravo";
const BRAVO_CIDR: &str = "10.22.0.0/24";

/// The address without its prefix length.
fn host(addr: &str) -> String {
    addr.split('/').next().unwrap_or(addr).to_owned()
}

/// The status of a further network of `status` (the node's first one's status), by name.
fn further<'a>(status: &'a Value, network: &str) -> Option<&'a Value> {
    status["networks"]
        .as_array()?
        .iter()
        .find(|n| n["network"] == network)
        .map(|n| &n["status"])
        .filter(|s| !s.is_null())
}

/// Whether interface `name` exists in `ns`.
fn has_link(ns: &wiremesh_tests::Netns, name: &str) -> bool {
    ns.ip(&["link", "show", name]).is_ok()
}

#[test]
fn a_node_in_two_networks_keeps_them_apart() -> anyhow::Result<()> {
    require_root()?;
    let lab = Lab::new()?;
    let mut coord = start_coordinator(&lab)?;
    for (net, cidr) in [(ALPHA, ALPHA_CIDR), (BRAVO, BRAVO_CIDR)] {
        coord.admin(&["network", "create", net, "--cidr", cidr, "--cidr6", "off"])?;
    }
    let token_a = coord.create_token(ALPHA, true, None)?;
    let token_b = coord.create_token(BRAVO, true, None)?;

    let mut nodes = Vec::new();
    for (i, label) in ["n", "a1", "a2", "b1"].iter().enumerate() {
        let (ns, _) = lab.internet_host(label, &format!("{}/24", site_ip(i)))?;
        let config = MeshdConfig::unconfigured(topo::PORT, None).named(label);
        nodes.push(Meshd::start(&ns, label, config)?);
    }
    let [mut n, mut a1, a2, b1]: [Meshd; 4] = nodes
        .try_into()
        .map_err(|_| anyhow::anyhow!("four nodes"))?;
    let n_ns = n.ns().clone();

    for (node, net, token) in [
        (&n, ALPHA, &token_a),
        (&a1, ALPHA, &token_a),
        (&a2, ALPHA, &token_a),
        (&b1, BRAVO, &token_b),
    ] {
        let control = node.join_with_token(net, token)?;
        anyhow::ensure!(
            control["state"] == "connected",
            "{}: {control}",
            node.name()
        );
    }
    // The second network: the same command, its own token.
    let control = n.join_with_token(BRAVO, &token_b)?;
    assert_eq!(control["network"], BRAVO, "{control}");
    assert_eq!(control["state"], "connected", "{control}");

    // Both networks in the status: the first where it always was, the second under
    // `networks`, with its own interface, address and key.
    let status = n.status()?;
    let primary_if = n.config().interface.clone();
    assert_eq!(status["interface"], primary_if.as_str(), "{status}");
    assert_eq!(status["control"]["network"], ALPHA, "{status}");
    let b_status = further(&status, BRAVO)
        .with_context(|| format!("no bravo in {status}"))?
        .clone();
    let bravo_if = b_status["interface"]
        .as_str()
        .context("bravo's interface")?
        .to_owned();
    assert_ne!(bravo_if, primary_if);
    assert_eq!(b_status["control"]["network"], BRAVO, "{b_status}");
    assert_ne!(
        b_status["public-key"], status["public-key"],
        "one key per network"
    );
    assert!(b_status.get("networks").is_none(), "{b_status}");
    assert!(has_link(&n_ns, &primary_if) && has_link(&n_ns, &bravo_if));
    let tuns = n_ns.ip(&["-d", "link", "show", "type", "tun"])?;
    assert!(
        tuns.contains(&primary_if) && tuns.contains(&bravo_if),
        "two TUN interfaces: {tuns}"
    );
    let n_a = host(status["address"].as_str().context("n's alpha address")?);
    let n_b = host(b_status["address"].as_str().context("n's bravo address")?);
    let (a1_ip, a2_ip, b1_ip) = (a1.address()?, a2.address()?, b1.address()?);
    assert!(n_a.starts_with("10.21.0.") && n_b.starts_with("10.22.0."));

    // meshctl: the JSON as meshd sends it; one network alone; a section per network.
    let json: Value = serde_json::from_str(&n.meshctl_ok(&["status", "--json"])?)?;
    assert_eq!(json["control"]["network"], ALPHA);
    assert_eq!(
        further(&json, BRAVO).map(|s| &s["interface"]),
        Some(&Value::from(bravo_if.as_str()))
    );
    let only_b: Value =
        serde_json::from_str(&n.meshctl_ok(&["status", "--network", BRAVO, "--json"])?)?;
    assert_eq!(only_b["interface"], bravo_if.as_str(), "{only_b}");
    assert_eq!(only_b["control"]["network"], BRAVO, "{only_b}");
    let text = n.meshctl_ok(&["status"])?;
    assert!(
        text.contains(&format!(
            "=== network {ALPHA} (interface {primary_if}, address "
        )) && text.contains(&format!(
            "=== network {BRAVO} (interface {bravo_if}, address "
        )),
        "{text}"
    );
    assert!(!n
        .meshctl(&["status", "--network", "charlie"])?
        .status
        .success());

    // n reaches both networks' members; each network's members only their own.
    for ip in [&a1_ip, &a2_ip, &b1_ip] {
        wait_until(CONVERGE, &format!("n pings {ip}"), || ping_once(&n_ns, ip))?;
    }
    wait_until(CONVERGE, "a1 pings a2", || ping_once(a1.ns(), &a2_ip))?;
    assert!(
        !ping_once(a1.ns(), &b1_ip),
        "a1 reached b1 without any route"
    );
    // `meshctl ping` finds a peer in whichever network knows it (the old request).
    for (peer, node) in [(&a1_ip, &a1), (&b1_ip, &b1)] {
        let ping = n.disco_ping(peer)?;
        assert_eq!(ping["public-key"], node.public_key()?.as_str(), "{ping}");
    }

    // a1 routes bravo at n on purpose, and n forwards IP: still nothing reaches b1.
    n_ns.sysctl("net.ipv4.ip_forward=1")?;
    let n_alpha_key = status["public-key"].as_str().context("n's key")?.to_owned();
    let config = a1.config().clone().peer(Peer {
        public_key: n_alpha_key,
        endpoint: Some(format!("{}:{}", site_ip(0), topo::PORT)),
        allowed_ips: vec![format!("{n_a}/32"), BRAVO_CIDR.to_owned()],
        persistent_keepalive: None,
    });
    a1.restart_with(config)?;
    let a1_if = a1.config().interface.clone();
    a1.ns().ip(&["route", "add", BRAVO_CIDR, "dev", &a1_if])?;
    wait_until(CONVERGE, "a1 pings n through its static peer", || {
        ping_once(a1.ns(), &n_a)
    })?;
    let route = a1.ns().ip(&["route", "get", &b1_ip])?;
    assert!(
        route.contains(&a1_if),
        "a1 does not route bravo at n: {route}"
    );
    let b1_before = b1.status()?["dropped"].clone();
    let b1_rx_before: u64 = b1.status()?["peers"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["rx-bytes"].as_u64()).sum())
        .unwrap_or(0);
    let dropped_before = n.dropped("not-local")?;
    for _ in 0..5 {
        assert!(!ping_once(a1.ns(), &b1_ip), "a1 reached b1 through n");
    }
    // Forwarded, they would reach b1's meshd from n's bravo key with an alpha source.
    let b1_after = b1.status()?["dropped"].clone();
    assert_eq!(
        b1_before["bad-source"], b1_after["bad-source"],
        "something of a1's reached b1's meshd"
    );
    let dropped = n.dropped("not-local")? - dropped_before;
    assert!(
        dropped >= 5,
        "n dropped {dropped} packets for bravo from alpha, not 5"
    );
    let b1_rx_after: u64 = b1.status()?["peers"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["rx-bytes"].as_u64()).sum())
        .unwrap_or(0);
    // b1 hears only n's keepalives and probes for bravo, never 5 pings' worth (5 × 84).
    assert!(
        b1_rx_after - b1_rx_before < 5 * 84,
        "b1 received {} bytes from its peers meanwhile",
        b1_rx_after - b1_rx_before
    );
    assert!(
        n.meshctl_ok(&["status"])?.contains("not local: "),
        "meshctl status shows the counter"
    );

    // Killed with SIGKILL while the coordinator is down: bravo's meshd follows its
    // parent, and both networks come back from their caches.
    coord.stop()?;
    n.kill9()?;
    wait_until(CONVERGE, "bravo's interface goes with its meshd", || {
        !has_link(&n_ns, &bravo_if)
    })?;
    n.restart()?;
    wait_until(CONVERGE, "n restores bravo", || {
        n.status().is_ok_and(|s| {
            further(&s, BRAVO).is_some_and(|b| {
                b["interface"] == bravo_if.as_str()
                    && b["address"].as_str().map(host) == Some(n_b.clone())
            }) && s["address"].as_str().map(host) == Some(n_a.clone())
        })
    })?;
    for ip in [&a2_ip, &b1_ip] {
        wait_until(CONVERGE, &format!("n pings {ip} from the cache"), || {
            ping_once(&n_ns, ip)
        })?;
    }
    let restored = n
        .log()
        .matches("restoring tunnels from the cached netmap")
        .count();
    assert!(
        restored >= 2,
        "{restored} cached netmaps restored:\n{}",
        n.log_tail(40)
    );
    coord.start_again()?;
    wait_until(CONVERGE, "both networks reconnect", || {
        n.status().is_ok_and(|s| {
            s["control"]["state"] == "connected"
                && further(&s, BRAVO).is_some_and(|b| b["control"]["state"] == "connected")
        })
    })?;

    // bravo's meshd crashing: the status says so (never hangs), the first meshd starts it
    // again, and bravo comes back on the same interface and address.
    let child_pid = n
        .log()
        .lines()
        .rev()
        .filter(|l| l.contains("started its meshd") && l.contains("network=bravo"))
        .find_map(|l| l.rsplit("pid=").next()?.trim().parse::<u32>().ok())
        .context("no pid of bravo's meshd in the log")?;
    n_ns.exec(&["kill", "-9", &child_pid.to_string()])?;
    wait_until(
        CONVERGE,
        "the status shows bravo's meshd as not answering",
        || {
            n.status().is_ok_and(|s| {
                s["networks"]
                    .as_array()
                    .and_then(|ns| ns.iter().find(|x| x["network"] == BRAVO))
                    .is_some_and(|b| b["status"].is_null() && b["error"].is_string())
            })
        },
    )?;
    wait_until(CONVERGE, "bravo's meshd is restarted", || {
        n.status().is_ok_and(|s| {
            further(&s, BRAVO).is_some_and(|b| {
                b["interface"] == bravo_if.as_str() && b["control"]["state"] == "connected"
            })
        })
    })?;
    wait_until(CONVERGE, "n pings b1 again", || ping_once(&n_ns, &b1_ip))?;
    assert!(
        n.log().contains("its meshd exited"),
        "the restart is logged"
    );

    // Leaving bravo leaves alpha's tunnels alone: a ping across the leave loses nothing
    // and the session with a2 is not re-made.
    wait_until(CONVERGE, "n pings a2", || ping_once(&n_ns, &a2_ip))?;
    let a2_key = a2.public_key()?;
    let handshakes = n.peer_status(&a2_key)?["handshakes"].clone();
    let ping = n_ns
        .command("ping")
        .args(["-n", "-q", "-c", "60", "-i", "0.05", "-W", "1", &a2_ip])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting ping")?;
    std::thread::sleep(Duration::from_millis(800));
    let left = n.leave(BRAVO)?;
    assert!(left.contains(BRAVO), "{left}");
    let out = ping.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        parse_ping_loss(&text),
        Some(0.0),
        "ping across the leave: {text}"
    );
    assert_eq!(
        n.peer_status(&a2_key)?["handshakes"],
        handshakes,
        "a2's session re-made"
    );
    assert!(
        !has_link(&n_ns, &bravo_if),
        "bravo's interface is still there"
    );
    assert!(
        !n.state_dir().join("networks").join(BRAVO).exists(),
        "bravo's state directory is still there"
    );
    let status = n.status()?;
    assert!(status.get("networks").is_none(), "{status}");
    assert_eq!(status["control"]["network"], ALPHA);
    assert!(ping_once(&n_ns, &a1_ip) || ping_once(&n_ns, &a2_ip));
    assert!(
        !ping_once(&n_ns, &b1_ip),
        "n still reaches bravo after leaving it"
    );
    let err = n.meshctl(&["leave", BRAVO])?;
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("member of \"alpha\""),
        "{err:?}"
    );
    drop((n, a1, a2, b1));
    Ok(())
}
