//! Names for members (issue 14), end to end: a coordinator and three meshd sites in
//! namespaces, each node's namespace resolving through its own meshd (an
//! `/etc/netns/<ns>/resolv.conf` naming the node's overlay address, which `ip netns exec`
//! mounts over /etc/resolv.conf).
//!
//! - `getent hosts` and `dig` resolve every member from every node, PTR too, over UDP and
//!   TCP; a name in the zone that no member holds is NXDOMAIN; anything else is REFUSED,
//!   never recursed (no `ra` flag).
//! - The network's domain is set at creation (`meshctl admin network create --dns-domain`)
//!   and reaches the nodes over the control protocol (`ServerMsg::Names`).
//! - A rename through `meshctl admin` resolves within the 1 s (measured), so does a
//!   joining member (counted from the start of `meshctl join`), and a deleted member's
//!   name is NXDOMAIN within it.
//! - Node a writes a hosts block into a per-test hosts file (`dns-hosts = "on"`); node c
//!   too, by `auto`, since its resolvectl does not exist; node b calls a fake resolvectl
//!   (a script recording its arguments) with `dns-resolved = "on"`. Foreign lines stay
//!   byte for byte, and stopping meshd undoes each (`revert`, the block removed).
//!
//! Needs root.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wiremesh_tests::control::{site_ip, start_coordinator, wait_full_mesh, NETWORK};
use wiremesh_tests::{require_root, wait_until, Lab, Meshd, MeshdConfig, Netns};

/// Generous: tests share two cores with other tests.
const CONVERGE: Duration = Duration::from_secs(30);
/// The bound for a rename to resolve.
const BOUND: Duration = Duration::from_secs(1);
/// The network's DNS domain, set at creation (`--dns-domain`, in capitals: names are
/// case-insensitive and kept lowercase); nodes learn it from the coordinator.
const DOMAIN: &str = "Corp.Example";
const ZONE: &str = "lab.corp.example";
/// What the hosts files hold before meshd touches them, with odd spacing, a comment and a
/// CRLF line, which must all survive.
const FOREIGN: &str = "127.0.0.1\tlocalhost\n# keep me\r\n::1   ip6-localhost  ip6-loopback\n10.1.2.3 other.example\n";

/// `/etc/netns/<ns>/resolv.conf`, removed (with its directory) on drop, also on panic.
struct NetnsResolv(PathBuf);

impl NetnsResolv {
    fn new(ns: &Netns, nameserver: &str) -> anyhow::Result<NetnsResolv> {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let guard = NetnsResolv(dir);
        std::fs::write(
            guard.0.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:1 attempts:1\n"),
        )?;
        Ok(guard)
    }
}

impl Drop for NetnsResolv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How long after `since` `dig +short fqdn A` in `ns` against `server` first answered
/// `want` (`""`: no address); fails after [`CONVERGE`].
fn answered_since(
    since: Instant,
    ns: &Netns,
    server: &str,
    fqdn: &str,
    want: &str,
) -> anyhow::Result<Duration> {
    loop {
        let out = dig(ns, server, &["+short", fqdn, "A"])?;
        if out.trim() == want {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            since.elapsed() < CONVERGE,
            "{fqdn} did not answer {want:?} within {CONVERGE:?} (last: {out:?})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `dig` in `ns` against `server` with `args`; its whole output.
fn dig(ns: &Netns, server: &str, args: &[&str]) -> anyhow::Result<String> {
    let at = format!("@{server}");
    let mut argv = vec!["dig", at.as_str(), "+time=1", "+tries=1"];
    argv.extend_from_slice(args);
    ns.exec(&argv)
}

/// The `status:` of a dig answer and whether its flags carry `ra`.
fn status(out: &str) -> (String, bool) {
    let status = out
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_owned();
    let ra = out
        .lines()
        .find(|l| l.contains(";; flags:"))
        .is_some_and(|l| {
            l.split(';')
                .nth(2)
                .unwrap_or("")
                .split_whitespace()
                .any(|f| f == "ra")
        });
    (status, ra)
}

#[test]
fn members_resolve_by_name() -> anyhow::Result<()> {
    require_root()?;
    let lab = Lab::new()?;
    let coord = start_coordinator(&lab)?;
    // IPv4 only: the answers and hosts blocks below are the IPv4 ones (with dual stack,
    // `getent hosts` prefers the AAAA answer; tests/dual_stack.rs checks AAAA).
    coord.admin(&[
        "network",
        "create",
        NETWORK,
        "--cidr",
        "10.9.8.0/24",
        "--cidr6",
        "off",
        "--dns-domain",
        DOMAIN,
    ])?;
    let shown: serde_json::Value =
        serde_json::from_str(&coord.admin(&["network", "show", NETWORK, "--json"])?)?;
    assert_eq!(shown["dns-domain"], "corp.example", "{shown}");
    let token = coord.create_token(NETWORK, true, None)?;
    let dir = wiremesh_tests::TempDir::new("names")?;
    let hosts_a = dir.path().join("hosts-a");
    let hosts_c = dir.path().join("hosts-c");
    std::fs::write(&hosts_a, FOREIGN)?;
    std::fs::write(&hosts_c, FOREIGN)?;
    let fake = dir.path().join("resolvectl");
    let calls = dir.path().join("resolvectl.log");
    wiremesh_tests::util::write_file_mode(
        &fake,
        &format!("#!/bin/sh\necho \"$*\" >> '{}'\n", calls.display()),
        0o755,
    )?;
    let q = |p: &Path| format!("{:?}", p.to_string_lossy());
    let dns = [
        vec![
            "dns-hosts = \"on\"".to_owned(),
            format!("dns-hosts-file = {}", q(&hosts_a)),
            "dns-resolved = \"off\"".to_owned(),
        ],
        vec![
            "dns-hosts = \"auto\"".to_owned(),
            "dns-resolved = \"on\"".to_owned(),
            format!("resolvectl = {}", q(&fake)),
            format!("dns-hosts-file = {}", q(&dir.path().join("hosts-b"))),
        ],
        vec![
            "dns-resolved = \"auto\"".to_owned(),
            format!("resolvectl = {}", q(&dir.path().join("no-such-resolvectl"))),
            format!("dns-hosts-file = {}", q(&hosts_c)),
        ],
    ];
    let names = ["alpha", "Bravo_Node", "charlie"];
    let labels = ["alpha", "bravo-node", "charlie"];
    let mut nodes = Vec::new();
    let mut namespaces: Vec<Arc<Netns>> = Vec::new();
    for (i, (name, dns)) in names.iter().zip(&dns).enumerate() {
        let (ns, _) = lab.internet_host(&format!("n{i}"), &format!("{}/24", site_ip(i)))?;
        let config = MeshdConfig::unconfigured(wiremesh_tests::topo::PORT, None)
            .named(name)
            .with_dns(dns);
        nodes.push(Meshd::start(&ns, name, config)?);
        namespaces.push(ns);
    }
    for n in &nodes {
        let control = n.join_with_token(NETWORK, &token)?;
        anyhow::ensure!(control["state"] == "connected", "{}: {control}", n.name());
    }
    wait_full_mesh(&nodes, CONVERGE)?;
    let ips = nodes
        .iter()
        .map(Meshd::address)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let _resolv: Vec<NetnsResolv> = namespaces
        .iter()
        .zip(&ips)
        .map(|(ns, ip)| NetnsResolv::new(ns, ip))
        .collect::<anyhow::Result<_>>()?;

    // Status shows the server, the zone and the integrations.
    wait_until(
        CONVERGE,
        "every node serves DNS on its overlay address",
        || {
            nodes.iter().zip(&ips).all(|(n, ip)| {
                n.status().is_ok_and(|s| {
                    s["dns"]["zone"] == ZONE
                        && s["dns"]["listen"]
                            .as_array()
                            .is_some_and(|l| l.iter().any(|a| a == &format!("{ip}:53")))
                })
            })
        },
    )?;
    let s: Vec<serde_json::Value> = nodes
        .iter()
        .map(Meshd::status)
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(
        s[0]["dns"]["hosts-file"],
        hosts_a.to_string_lossy().as_ref()
    );
    assert!(s[0]["dns"]["resolved"].is_null());
    assert_eq!(
        s[1]["dns"]["resolved"],
        nodes[1].config().interface.as_str()
    );
    assert!(
        s[1]["dns"]["hosts-file"].is_null(),
        "auto: no hosts block with resolved"
    );
    assert_eq!(
        s[2]["dns"]["hosts-file"],
        hosts_c.to_string_lossy().as_ref()
    );

    // Every member from every node: getent (the system resolver) and dig, A and PTR.
    for (i, ns) in namespaces.iter().enumerate() {
        for (j, label) in labels.iter().enumerate() {
            let fqdn = format!("{label}.{ZONE}");
            let got = ns.exec(&["getent", "hosts", &fqdn])?;
            assert_eq!(
                got.split_whitespace().next(),
                Some(ips[j].as_str()),
                "getent on {i} for {fqdn}: {got}"
            );
            let a = dig(ns, &ips[i], &["+short", &fqdn, "A"])?;
            assert_eq!(a.trim(), ips[j], "dig on {i} for {fqdn}");
            let upper = dig(ns, &ips[i], &["+short", "+tcp", &fqdn.to_uppercase(), "A"])?;
            assert_eq!(
                upper.trim(),
                ips[j],
                "dig +tcp on {i} for {fqdn} in capitals"
            );
            let ptr = dig(ns, &ips[i], &["+short", "-x", &ips[j]])?;
            assert_eq!(ptr.trim(), format!("{fqdn}."), "PTR on {i} for {}", ips[j]);
        }
        let full = dig(ns, &ips[i], &[&format!("alpha.{ZONE}"), "A"])?;
        assert_eq!(status(&full), ("NOERROR".to_owned(), false), "{full}");
        assert!(full.contains(" aa "), "authoritative: {full}");
        let none = dig(ns, &ips[i], &[&format!("nobody.{ZONE}"), "A"])?;
        assert_eq!(status(&none), ("NXDOMAIN".to_owned(), false), "{none}");
        let outside = dig(ns, &ips[i], &["example.com", "A"])?;
        assert_eq!(status(&outside), ("REFUSED".to_owned(), false), "{outside}");
        let other_zone = dig(ns, &ips[i], &["alpha.lab.mesh.internal", "A"])?;
        assert_eq!(status(&other_zone).0, "REFUSED", "{other_zone}");
        let missing = ns
            .command("getent")
            .args(["hosts", &format!("nobody.{ZONE}")])
            .output()?;
        assert_eq!(missing.status.code(), Some(2), "getent: not found");
    }

    // The hosts blocks: foreign bytes first and untouched, then the block.
    let block = |zone_labels: &[&str]| {
        let mut rows: Vec<(String, &str)> = zone_labels
            .iter()
            .zip(&ips)
            .map(|(l, ip)| (format!("{l}.{ZONE}"), ip.as_str()))
            .collect();
        rows.sort();
        let mut b = "# BEGIN wiremesh lab\n".to_owned();
        for (name, ip) in rows {
            b.push_str(&format!("{ip} {name}\n"));
        }
        b + "# END wiremesh lab\n"
    };
    for path in [&hosts_a, &hosts_c] {
        let text = std::fs::read_to_string(path)?;
        assert_eq!(
            text,
            format!("{FOREIGN}{}", block(&labels)),
            "{}",
            path.display()
        );
    }
    assert!(
        !dir.path().join("hosts-b").exists(),
        "b uses resolved: no hosts file"
    );

    // A rename resolves within the bound, from another node.
    coord.admin(&["rename", NETWORK, "charlie", "delta"])?;
    let renamed = Instant::now();
    let fqdn = format!("delta.{ZONE}");
    let took = answered_since(renamed, &namespaces[0], &ips[0], &fqdn, &ips[2])?;
    eprintln!("names: rename resolvable after {} ms", took.as_millis());
    assert!(took <= BOUND, "rename took {took:?}, more than {BOUND:?}");
    let old = dig(&namespaces[0], &ips[0], &[&format!("charlie.{ZONE}"), "A"])?;
    assert_eq!(status(&old).0, "NXDOMAIN", "the old name is gone: {old}");
    let got = namespaces[1].exec(&["getent", "hosts", &fqdn])?;
    assert!(got.starts_with(&ips[2]), "getent after the rename: {got}");
    wait_until(CONVERGE, "the hosts block follows the rename", || {
        std::fs::read_to_string(&hosts_a)
            .is_ok_and(|t| t == format!("{FOREIGN}{}", block(&["alpha", "bravo-node", "delta"])))
    })?;

    // A join resolves within the bound, counted from the start of `meshctl join` (which
    // includes the join itself); a removal is NXDOMAIN within the bound.
    let (ns_e, _) = lab.internet_host("n3", &format!("{}/24", site_ip(3)))?;
    let config = MeshdConfig::unconfigured(wiremesh_tests::topo::PORT, None).named("echo");
    let echo = Meshd::start(&ns_e, "echo", config)?;
    let joining = Instant::now();
    echo.join_with_token(NETWORK, &token)?;
    let echo_ip = echo.address()?;
    let fqdn = format!("echo.{ZONE}");
    let took = answered_since(joining, &namespaces[0], &ips[0], &fqdn, &echo_ip)?;
    eprintln!(
        "names: a joining member resolvable {} ms after `meshctl join` started",
        took.as_millis()
    );
    assert!(took <= BOUND, "join took {took:?}, more than {BOUND:?}");
    coord.admin(&["delete-member", NETWORK, "echo"])?;
    let deleted = Instant::now();
    let took = answered_since(deleted, &namespaces[0], &ips[0], &fqdn, "")?;
    eprintln!(
        "names: a deleted member's name gone after {} ms",
        took.as_millis()
    );
    assert!(took <= BOUND, "removal took {took:?}, more than {BOUND:?}");
    let gone = dig(&namespaces[1], &ips[1], &[&fqdn, "A"])?;
    assert_eq!(status(&gone).0, "NXDOMAIN", "{gone}");
    drop(echo);

    // The fake resolvectl saw exactly the per-link server and the routing-only domain.
    let iface_b = nodes[1].config().interface.clone();
    assert_eq!(
        std::fs::read_to_string(&calls)?,
        format!("dns {iface_b} {}\ndomain {iface_b} ~{ZONE}\n", ips[1])
    );

    // Stopping undoes it: revert, blocks removed, foreign bytes as they were.
    drop(nodes);
    assert_eq!(
        std::fs::read_to_string(&calls)?,
        format!(
            "dns {iface_b} {}\ndomain {iface_b} ~{ZONE}\nrevert {iface_b}\n",
            ips[1]
        )
    );
    assert_eq!(std::fs::read_to_string(&hosts_a)?, FOREIGN);
    assert_eq!(std::fs::read_to_string(&hosts_c)?, FOREIGN);
    drop(coord);
    Ok(())
}
