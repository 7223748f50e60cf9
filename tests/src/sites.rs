//! NAT traversal scenarios (issue 4): a coordinator on the internet and N sites, each a
//! node behind its own NAT router (none, port-restricted cone, symmetric), optionally two
//! nodes behind one NAT; blocking the direct path between two sites; loss on the internet;
//! and reading what meshd says about its paths.
//!
//! ```text
//!                      coordinator 192.0.2.10: QUIC 7443, reflectors 7444 + 7445, relay 7446
//!                             │
//!   internet (routes everything: hosts attach as /32, see Lab::attach_routed)
//!     ├── site 0, none:       node a = 198.51.100.11 (public, no router)
//!     ├── site 1, cone:       router 203.0.113.12 ── LAN 192.168.2.0/24 ── node b .2
//!     ├── site 2, symmetric:  router 198.51.100.13 ── LAN 192.168.3.0/24 ── node c .2
//!     └── site 3, cone, 2 hosts: router 203.0.113.14 ── LAN 192.168.4.0/24 ── d .2, e .3
//! ```
//! Every packet between two sites, and between a site and the coordinator, is routed by the
//! internet namespace, so its `forward` hook sees it: [`crate::set_udp_loss`] on
//! `lab.internet()` makes the whole underlay lossy, and [`NatMesh::block_direct`] drops UDP
//! between two sites' public addresses there while both still reach the coordinator and
//! its relay.
//!
//! Node `i` is labelled [`crate::topo::label`]`(i)` (a, b, …) and registers under that name,
//! which is what peers' status shows as `name`.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::control::{CIDR, COORDINATOR_IP, NETWORK};
use crate::coordinator::Coordinator;
use crate::lab::{Lab, NatKind, NatRouter};
use crate::meshd::{Meshd, MeshdConfig};
use crate::netns::Netns;
use crate::topo::label;
use crate::util;

/// One site: its NAT and how many nodes sit behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteSpec {
    /// The site's NAT router (or none: the node has a public address).
    pub nat: NatKind,
    /// Nodes behind it (1, or 2 to have two nodes behind one NAT; a site without NAT has
    /// exactly one).
    pub hosts: usize,
}

impl SiteSpec {
    /// A site with one node behind `nat`.
    pub fn one(nat: NatKind) -> SiteSpec {
        SiteSpec { nat, hosts: 1 }
    }

    /// The three sites most scenarios use: behind a cone, a cone and a symmetric NAT (one
    /// direct pair, two relayed ones).
    pub fn cone_cone_symmetric() -> [SiteSpec; 3] {
        [
            SiteSpec::one(NatKind::Cone),
            SiteSpec::one(NatKind::Cone),
            SiteSpec::one(NatKind::Symmetric),
        ]
    }

    /// A site with `hosts` nodes behind one `nat` router (no hairpinning: Linux does not).
    pub fn shared(nat: NatKind, hosts: usize) -> SiteSpec {
        SiteSpec { nat, hosts }
    }
}

/// `none`, `cone`, `symmetric`: for messages and BENCH lines.
pub fn nat_name(kind: NatKind) -> &'static str {
    match kind {
        NatKind::None => "none",
        NatKind::Cone => "cone",
        NatKind::Symmetric => "symmetric",
    }
}

/// The path issue 4 expects between nodes behind NATs `a` and `b` at different sites.
///
/// Direct whenever one side has no NAT (the other side's packets reach it, and its answers
/// go back through the mapping they opened) and between two port-restricted cones
/// (simultaneous open: each side's probe opens the mapping the other side's probe comes in
/// through). Relay for cone × symmetric and symmetric × symmetric: Linux `masquerade` filters
/// inbound by address *and port*, and a symmetric NAT picks a new random port for every
/// destination, so the cone side never sends to the port the symmetric side's probes come
/// from (it cannot know it; its own mapping admits only the ports it sent to), and
/// symmetric × symmetric has the same problem twice. (A full-cone NAT would make cone ×
/// symmetric punchable; `masquerade` is not one.)
///
/// Cone × cone is punchable, but not by simply probing at once: in this lab (microsecond
/// latency) whichever probe leaves first reaches the other router before that router has
/// sent anything, conntrack records it as an unsolicited flow, and the other side's own
/// probe then clashes with it and leaves from another port, which the first NAT drops. A
/// first probe with a low TTL (it opens the sender's mapping, then expires on the
/// internet) avoids that; see the harness test `cone_nat_loses_its_port_when_the_peer_probes_first`.
pub fn expected_path(a: NatKind, b: NatKind) -> &'static str {
    use NatKind::{Cone, None, Symmetric};
    match (a, b) {
        (None, _) | (_, None) | (Cone, Cone) => "direct",
        (Cone, Symmetric) | (Symmetric, Cone) | (Symmetric, Symmetric) => "relay",
    }
}

/// A host of a site (where a node runs).
#[derive(Debug)]
pub struct SiteHost {
    /// Its namespace.
    pub ns: Arc<Netns>,
    /// The address of its own interface: public for a site without NAT, else on the LAN.
    pub ip: Ipv4Addr,
    /// Its label (also the meshd node's name).
    pub label: String,
}

/// A site: its NAT router, if any, and its hosts.
#[derive(Debug)]
pub struct Site {
    /// Index among the sites (0-based).
    pub index: usize,
    /// The NAT kind.
    pub nat: NatKind,
    /// The address the internet sees: the router's WAN, or the host's own address.
    pub public_ip: Ipv4Addr,
    /// The router (None for a site without NAT).
    pub router: Option<NatRouter>,
    /// The hosts, in order.
    pub hosts: Vec<SiteHost>,
}

/// The public address of site `i`: `198.51.100.<11+i>` for even `i`, `203.0.113.<11+i>`
/// for odd `i` (two ranges, so the lab mixes "providers"; all routed anyway).
pub fn site_public_ip(i: usize) -> Ipv4Addr {
    let host = u8::try_from(11 + i).unwrap_or(250);
    if i % 2 == 0 {
        Ipv4Addr::new(198, 51, 100, host)
    } else {
        Ipv4Addr::new(203, 0, 113, host)
    }
}

/// The LAN of site `i`: `192.168.<i+1>.0/24`, router `.1`, hosts `.2`, `.3`, …
pub fn site_lan_ip(i: usize, host: usize) -> Ipv4Addr {
    let net = u8::try_from(i + 1).unwrap_or(250);
    let h = u8::try_from(host + 2).unwrap_or(250);
    Ipv4Addr::new(192, 168, net, h)
}

/// The LAN address of site `i`'s router: `192.168.<i+1>.1`.
pub fn site_router_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, u8::try_from(i + 1).unwrap_or(250), 1)
}

/// Builds site `index` per `spec`; hosts are labelled by `labels` (one per host).
pub fn build_site(
    lab: &Lab,
    index: usize,
    spec: SiteSpec,
    labels: &[String],
) -> anyhow::Result<Site> {
    if spec.hosts == 0 || labels.len() != spec.hosts {
        bail!(
            "site {index}: {} hosts with {} labels",
            spec.hosts,
            labels.len()
        );
    }
    let public_ip = site_public_ip(index);
    if spec.nat == NatKind::None {
        if spec.hosts != 1 {
            bail!("site {index}: a site without NAT has exactly one host (its public address)");
        }
        let ns = lab.host(&labels[0])?;
        lab.attach_routed(&ns, public_ip)?;
        return Ok(Site {
            index,
            nat: spec.nat,
            public_ip,
            router: None,
            hosts: vec![SiteHost {
                ns,
                ip: public_ip,
                label: labels[0].clone(),
            }],
        });
    }
    let router = lab.routed_nat_router(
        spec.nat,
        public_ip,
        &format!("{}/24", site_router_ip(index)),
    )?;
    let mut hosts = Vec::new();
    for (j, l) in labels.iter().enumerate() {
        let ip = site_lan_ip(index, j);
        let (ns, _) = lab.nat_host(&router, l, &format!("{ip}/24"))?;
        hosts.push(SiteHost {
            ns,
            ip,
            label: l.clone(),
        });
    }
    Ok(Site {
        index,
        nat: spec.nat,
        public_ip,
        router: Some(router),
        hosts,
    })
}

/// The coordinator's host, routed at [`COORDINATOR_IP`], with the coordinator running
/// (QUIC 7443; reflectors and relay on the following ports once it has them).
pub fn start_coordinator(lab: &Lab) -> anyhow::Result<Coordinator> {
    let ns = lab.host("coord")?;
    let ip: Ipv4Addr = COORDINATOR_IP.parse().context("COORDINATOR_IP")?;
    lab.attach_routed(&ns, ip)?;
    Coordinator::start(&ns, COORDINATOR_IP)
}

/// A node of a [`NatMesh`].
#[derive(Debug)]
pub struct SiteNode {
    /// Its daemon.
    pub meshd: Meshd,
    /// Its public key (base64).
    pub key: String,
    /// Index of its site.
    pub site: usize,
    /// Its site's NAT.
    pub nat: NatKind,
    /// Its interface address (LAN, or public without NAT).
    pub lan_ip: Ipv4Addr,
    /// Its site's public address.
    pub public_ip: Ipv4Addr,
}

impl SiteNode {
    /// Its label (a, b, …), also its name in the network.
    pub fn name(&self) -> &str {
        self.meshd.name()
    }

    /// Its namespace.
    pub fn ns(&self) -> &Arc<Netns> {
        self.meshd.ns()
    }

    /// `"a (cone)"`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name(), nat_name(self.nat))
    }
}

/// A coordinator with network [`NETWORK`] and a reusable token, and sites with an
/// unconfigured meshd on every host. Nodes join when the test says ([`NatMesh::join`]), so
/// it can time the join.
#[derive(Debug)]
pub struct NatMesh {
    /// The nodes, in site order (a, b, …); dropped first.
    pub nodes: Vec<SiteNode>,
    /// The sites.
    pub sites: Vec<Site>,
    /// The coordinator.
    pub coord: Coordinator,
    /// The reusable join token.
    pub token: String,
    /// Sites without meshd (attackers, outsiders): [`NatMesh::add_bystander`].
    pub bystanders: Vec<Site>,
    internet: Arc<Netns>,
    next_site: usize,
    /// `peer-idle-after` of the meshd started on later sites (None: meshd's default).
    pub peer_idle_after: Option<u64>,
}

impl NatMesh {
    /// Coordinator, network, token, then the sites with meshd started (not joined).
    pub fn new(lab: &Lab, specs: &[SiteSpec]) -> anyhow::Result<NatMesh> {
        NatMesh::with_coordinator(lab, start_coordinator(lab)?, specs)
    }

    /// [`NatMesh::new`] with a coordinator the caller started (one of several sharing a
    /// store, say): the network and token are made through it.
    pub fn with_coordinator(
        lab: &Lab,
        coord: Coordinator,
        specs: &[SiteSpec],
    ) -> anyhow::Result<NatMesh> {
        coord.create_network(NETWORK, CIDR)?;
        let token = coord.create_token(NETWORK, true, None)?;
        let mut mesh = NatMesh {
            nodes: Vec::new(),
            sites: Vec::new(),
            coord,
            token,
            bystanders: Vec::new(),
            internet: lab.internet().clone(),
            next_site: 0,
            peer_idle_after: None,
        };
        for spec in specs {
            mesh.add_site(lab, *spec)?;
        }
        Ok(mesh)
    }

    /// Adds a site with meshd started on each host (not joined); returns the new nodes'
    /// indices.
    pub fn add_site(&mut self, lab: &Lab, spec: SiteSpec) -> anyhow::Result<Vec<usize>> {
        let index = self.next_site;
        self.next_site += 1;
        let first = self.nodes.len();
        let labels: Vec<String> = (first..first + spec.hosts).map(label).collect();
        let site = build_site(lab, index, spec, &labels)?;
        let mut added = Vec::new();
        for h in &site.hosts {
            let mut config = MeshdConfig::unconfigured(crate::topo::PORT, None).named(&h.label);
            config.peer_idle_after = self.peer_idle_after;
            let meshd = Meshd::start(&h.ns, &h.label, config)?;
            let key = meshd.public_key()?;
            added.push(self.nodes.len());
            self.nodes.push(SiteNode {
                meshd,
                key,
                site: index,
                nat: site.nat,
                lan_ip: h.ip,
                public_ip: site.public_ip,
            });
        }
        eprintln!(
            "[sites] site {index}: {} at {}, nodes {}",
            nat_name(site.nat),
            site.public_ip,
            site.hosts
                .iter()
                .map(|h| format!("{} ({})", h.label, h.ip))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.sites.push(site);
        Ok(added)
    }

    /// A site with one host and no meshd (an attacker, an outsider), at the next site
    /// address; the host is labelled `tag`. Returns its index in [`NatMesh::bystanders`].
    pub fn add_bystander(&mut self, lab: &Lab, nat: NatKind, tag: &str) -> anyhow::Result<usize> {
        let index = self.next_site;
        self.next_site += 1;
        let site = build_site(lab, index, SiteSpec::one(nat), &[tag.to_owned()])?;
        eprintln!(
            "[sites] site {index}: {} at {}, bystander {tag} ({}), no meshd",
            nat_name(nat),
            site.public_ip,
            site.hosts[0].ip
        );
        self.bystanders.push(site);
        Ok(self.bystanders.len() - 1)
    }

    /// The node labelled `name`.
    pub fn node(&self, name: &str) -> &SiteNode {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("no node {name} in this mesh"))
    }

    /// `meshctl join lab --token …` on node `i` (meshctl waits until connected); returns
    /// how long the command took.
    pub fn join(&self, i: usize) -> anyhow::Result<Duration> {
        let n = &self.nodes[i];
        let start = Instant::now();
        let control = n.meshd.join_with_token(NETWORK, &self.token)?;
        if control["state"] != "connected" {
            bail!(
                "node {}: `meshctl join --token` returned with control status {control}",
                n.describe()
            );
        }
        Ok(start.elapsed())
    }

    /// Joins every node, in order, then waits until all list each other as peers.
    pub fn join_all(&self, timeout: Duration) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.join(i)?;
        }
        self.wait_peers(timeout)
    }

    /// Waits until every node lists every other node as a peer.
    pub fn wait_peers(&self, timeout: Duration) -> anyhow::Result<()> {
        let all: Vec<&Meshd> = self.nodes.iter().map(|n| &n.meshd).collect();
        let keys: Vec<&str> = self.nodes.iter().map(|n| n.key.as_str()).collect();
        util::wait_until(
            timeout,
            "every node lists every other node as a peer",
            || {
                all.iter().enumerate().all(|(i, m)| {
                    m.status_via_socket().is_ok_and(|s| {
                        let have = crate::meshd::peer_keys_of(&s);
                        keys.iter()
                            .enumerate()
                            .all(|(j, k)| i == j || have.iter().any(|h| h == k))
                    })
                })
            },
        )
        .map(|_| ())
        .map_err(|e| {
            let mut report = String::new();
            for n in &self.nodes {
                let peers = n.meshd.peer_keys().map(|p| p.len()).unwrap_or(0);
                let control = n.meshd.control().map(|c| c.to_string()).unwrap_or_default();
                report.push_str(&format!(
                    "\n  node {}: {peers} peers, control {control}",
                    n.describe()
                ));
            }
            e.context(format!("peer lists at the time-out:{report}"))
        })
    }

    /// `"a (cone) and b (symmetric)"`.
    pub fn pair(&self, i: usize, j: usize) -> String {
        format!(
            "{} and {}",
            self.nodes[i].describe(),
            self.nodes[j].describe()
        )
    }

    /// The path issue 4 expects between nodes `i` and `j`: [`expected_path`], or `direct`
    /// for two nodes behind the same NAT (over the LAN).
    pub fn expected_path(&self, i: usize, j: usize) -> &'static str {
        let (a, b) = (&self.nodes[i], &self.nodes[j]);
        if a.site == b.site {
            "direct"
        } else {
            expected_path(a.nat, b.nat)
        }
    }

    /// What node `i` reports as its path to node `j` (via `meshctl status --json`).
    pub fn path(&self, i: usize, j: usize) -> Option<String> {
        path_of(&self.nodes[i].meshd, &self.nodes[j].key)
    }

    /// The same, straight from the socket (cheap: for polling).
    pub fn path_now(&self, i: usize, j: usize) -> Option<String> {
        let s = self.nodes[i].meshd.status_via_socket().ok()?;
        peer_in(&s, &self.nodes[j].key)?["path"]
            .as_str()
            .map(str::to_owned)
    }

    /// Node `i`'s status entry for peer `j` (Null when absent or unreadable).
    pub fn peer(&self, i: usize, j: usize) -> Value {
        self.nodes[i]
            .meshd
            .status_via_socket()
            .ok()
            .and_then(|s| peer_in(&s, &self.nodes[j].key).cloned())
            .unwrap_or(Value::Null)
    }

    /// Waits until nodes `i` and `j` both report `want` as their path to each other;
    /// returns how long it took, or an error naming the pair and what they report.
    pub fn wait_path(
        &self,
        i: usize,
        j: usize,
        want: &str,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let what = format!("path between {} is {want} on both sides", self.pair(i, j));
        util::wait_until(timeout, &what, || {
            self.path_now(i, j).as_deref() == Some(want)
                && self.path_now(j, i).as_deref() == Some(want)
        })
        .map_err(|e| {
            e.context(format!(
                "path between {} is {:?} (as {} sees it) / {:?} (as {} sees it), expected {want}",
                self.pair(i, j),
                self.path_now(i, j),
                self.nodes[i].name(),
                self.path_now(j, i),
                self.nodes[j].name(),
            ))
        })
    }

    /// Drops UDP between the public addresses of nodes `i` and `j`'s sites on the
    /// internet's forward hook; both still reach the coordinator and its relay.
    pub fn block_direct(&self, i: usize, j: usize) -> anyhow::Result<()> {
        let (a, b) = self.distinct_sites(i, j)?;
        block_udp_between(&self.internet, a, b)
    }

    /// Undoes [`NatMesh::block_direct`].
    pub fn unblock_direct(&self, i: usize, j: usize) -> anyhow::Result<()> {
        let (a, b) = self.distinct_sites(i, j)?;
        unblock_udp_between(&self.internet, a, b)
    }

    fn distinct_sites(&self, i: usize, j: usize) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
        let (a, b) = (&self.nodes[i], &self.nodes[j]);
        if a.site == b.site {
            bail!(
                "{} share a site: their direct path does not cross the internet",
                self.pair(i, j)
            );
        }
        Ok((a.public_ip, b.public_ip))
    }

    /// The internet namespace (for [`crate::set_udp_loss`], captures).
    pub fn internet(&self) -> &Arc<Netns> {
        &self.internet
    }

    /// The overlay address of node `i` (after it joined).
    pub fn overlay_ip(&self, i: usize) -> anyhow::Result<String> {
        self.nodes[i].meshd.address()
    }

    /// Prints every node's `meshctl status` and every NAT router's UDP conntrack entries
    /// (for failure reports: which ports each NAT really mapped, which flows it saw
    /// arrive unsolicited).
    pub fn dump_status(&self) {
        for n in &self.nodes {
            eprintln!(
                "---- node {} `meshctl status` ----\n{}",
                n.describe(),
                n.meshd
                    .meshctl_status_text()
                    .unwrap_or_else(|e| format!("(failed: {e:#})"))
            );
        }
        for site in &self.sites {
            if let Some(r) = &site.router {
                eprintln!(
                    "---- site {} ({} NAT at {}) UDP conntrack ----\n{}",
                    site.index,
                    nat_name(site.nat),
                    site.public_ip,
                    conntrack_udp(&r.ns)
                );
            }
        }
    }
}

/// The UDP entries of a namespace's conntrack table, one per line
/// (`/proc/net/nf_conntrack`; `[UNREPLIED]` entries from a peer's address are flows that
/// arrived before the host behind the NAT sent anything there).
pub fn conntrack_udp(ns: &Netns) -> String {
    match ns.exec(&["cat", "/proc/net/nf_conntrack"]) {
        Ok(t) => t
            .lines()
            .filter(|l| l.contains(" udp "))
            .map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(cannot read conntrack: {e:#})"),
    }
}

/// The status entry for `peer_key` in a status object.
pub fn peer_in<'a>(status: &'a Value, peer_key: &str) -> Option<&'a Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["public-key"] == peer_key)
}

/// The path (`"direct"`/`"relay"`) `node` reports for the peer with `peer_key`, from
/// `meshctl status --json`; None when the peer is unknown or has no path field.
pub fn path_of(node: &Meshd, peer_key: &str) -> Option<String> {
    let s = node.status().ok()?;
    peer_in(&s, peer_key)?["path"].as_str().map(str::to_owned)
}

/// The endpoint `node` reports for the peer with `peer_key` (`"IP:PORT"`).
pub fn endpoint_of(node: &Meshd, peer_key: &str) -> Option<String> {
    let s = node.status_via_socket().ok()?;
    peer_in(&s, peer_key)?["endpoint"]
        .as_str()
        .map(str::to_owned)
}

fn block_table(a: Ipv4Addr, b: Ipv4Addr) -> (String, Ipv4Addr, Ipv4Addr) {
    let (lo, hi) = if u32::from(a) <= u32::from(b) {
        (a, b)
    } else {
        (b, a)
    };
    (format!("wmblk_{}_{}", u32::from(lo), u32::from(hi)), lo, hi)
}

/// Drops UDP between `a` and `b` (both directions) on `internet`'s forward hook, in a
/// table of its own (so several blocks, and [`crate::set_udp_loss`], coexist).
pub fn block_udp_between(internet: &Netns, a: Ipv4Addr, b: Ipv4Addr) -> anyhow::Result<()> {
    let (table, lo, hi) = block_table(a, b);
    internet.nft(&format!(
        "table inet {table}\ndelete table inet {table}\n\
         table inet {table} {{\n  chain drop_direct {{\n    type filter hook forward priority -10;\n    \
         ip saddr {lo} ip daddr {hi} meta l4proto udp drop\n    \
         ip saddr {hi} ip daddr {lo} meta l4proto udp drop\n  }}\n}}\n"
    ))?;
    eprintln!("[sites] blocked UDP between {a} and {b} on the internet");
    Ok(())
}

/// Removes the block [`block_udp_between`] made (no error when there is none).
pub fn unblock_udp_between(internet: &Netns, a: Ipv4Addr, b: Ipv4Addr) -> anyhow::Result<()> {
    let (table, _, _) = block_table(a, b);
    internet.nft(&format!("table inet {table}\ndelete table inet {table}\n"))?;
    eprintln!("[sites] unblocked UDP between {a} and {b} on the internet");
    Ok(())
}

/// Pings `ip` from `ns` until the first reply (a new echo request every 0.1 s, each ping
/// process running until a reply or the deadline); returns the time from `start` to that
/// reply, or None when none came within `bound` of `start`. While the node has no route to
/// `ip` yet (not joined), retries every 50 ms.
pub fn first_reply(ns: &Netns, ip: &str, start: Instant, bound: Duration) -> Option<Duration> {
    let deadline = start + bound;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let secs = left.as_secs().max(1).to_string();
        let mut cmd = ns.command("ping");
        cmd.args(["-n", "-q", "-c", "1", "-i", "0.1", "-w", &secs, ip]);
        if util::output(&mut cmd).is_ok_and(|o| o.status.success()) {
            let took = start.elapsed();
            return (took <= bound + Duration::from_millis(200)).then_some(took);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A key in WireGuard's base64 form as its 32 bytes.
pub fn key_bytes(b64: &str) -> anyhow::Result<[u8; 32]> {
    let k: mesh_proto::Key = b64
        .parse()
        .map_err(|e| anyhow::anyhow!("bad key {b64:?}: {e}"))?;
    Ok(k.0)
}

/// A relay datagram built by hand from the wire format (`mesh_proto::relay`'s module doc),
/// not with its encoder, so an encoder bug cannot hide here:
/// `"wmL1" | kind | key (32) | rest`. Kind 1 REGISTER (rest = cookie, proof), 2 SEND
/// (key = destination, rest = payload).
pub fn relay_datagram(kind: u8, key: &[u8; 32], rest: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(37 + rest.len());
    d.extend_from_slice(b"wmL1");
    d.push(kind);
    d.extend_from_slice(key);
    d.extend_from_slice(rest);
    d
}

/// One `BENCH join_to_ping` line.
pub fn bench_join_to_ping(a: NatKind, b: NatKind, loss: u8, took: Option<Duration>) -> String {
    format!(
        "BENCH join_to_ping nat={}x{} loss={loss} ms={}",
        nat_name(a),
        nat_name(b),
        took.map_or_else(
            || "timeout".to_owned(),
            |d| format!("{:.0}", d.as_secs_f64() * 1e3)
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_paths_are_symmetric_and_follow_the_issue() {
        use NatKind::{Cone, None, Symmetric};
        let kinds = [None, Cone, Symmetric];
        for a in kinds {
            for b in kinds {
                assert_eq!(expected_path(a, b), expected_path(b, a));
            }
        }
        assert_eq!(expected_path(None, Symmetric), "direct");
        assert_eq!(expected_path(Cone, Cone), "direct");
        assert_eq!(expected_path(Cone, Symmetric), "relay");
        assert_eq!(expected_path(Symmetric, Symmetric), "relay");
    }

    #[test]
    fn addresses() {
        assert_eq!(site_public_ip(0), Ipv4Addr::new(198, 51, 100, 11));
        assert_eq!(site_public_ip(1), Ipv4Addr::new(203, 0, 113, 12));
        assert_eq!(site_lan_ip(2, 1), Ipv4Addr::new(192, 168, 3, 3));
        assert_eq!(site_router_ip(1), Ipv4Addr::new(192, 168, 2, 1));
        let (t1, lo, hi) = block_table(site_public_ip(1), site_public_ip(0));
        let (t2, _, _) = block_table(site_public_ip(0), site_public_ip(1));
        assert_eq!(t1, t2);
        assert!(u32::from(lo) < u32::from(hi));
    }

    #[test]
    fn relay_frames_follow_the_wire_format() {
        let d = relay_datagram(2, &[7u8; 32], b"xyz");
        assert_eq!(&d[..5], b"wmL1\x02");
        assert_eq!(d.len(), 4 + 1 + 32 + 3);
        assert_eq!(&d[37..], b"xyz");
        // The project's own parser agrees.
        assert!(matches!(
            mesh_proto::relay::parse(&d),
            Some(mesh_proto::relay::Frame::Send {
                payload: b"xyz",
                ..
            })
        ));
    }

    #[test]
    fn bench_line_form() {
        assert_eq!(
            bench_join_to_ping(
                NatKind::Cone,
                NatKind::Symmetric,
                10,
                Some(Duration::from_millis(1234))
            ),
            "BENCH join_to_ping nat=conexsymmetric loss=10 ms=1234"
        );
    }
}
