//! A small internet in network namespaces: hosts, veth links, an "internet" that switches
//! and routes the documentation ranges, NAT routers, and UDP loss.
//!
//! ```text
//!   host a ──veth──┐                         ┌──veth── router (NAT) ──lan bridge── host c
//!   host b ──veth──┤ internet: bridge "br0"  │
//!                  └─ 198.51.100.254/24, 203.0.113.254/24, 192.0.2.254/24, forwarding on
//! ```
//! Hosts attached to the internet get their address on a veth whose other end is a port of
//! the bridge, and a default route via the `.254` gateway of their /24, so hosts in
//! different documentation ranges reach each other through the internet namespace.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};

use crate::netns::{self, Netns};
use crate::util;

/// The underlay ranges the internet namespace routes (RFC 5737), with its gateway in each.
/// The MAC address every lab bridge gets (each is its own L2 segment, so one value serves
/// all). Set explicitly because a bridge without one takes the lowest MAC among its ports:
/// a host attached later with a lower random MAC would change the gateway's MAC under
/// every host's ARP entry, and traffic through the gateway would stall for seconds until
/// the entries were probed again (seen as a 1.8 s netmap push in a propagation test).
const BRIDGE_MAC: &str = "02:00:5e:00:53:01";

/// The internet's IPv6 gateway on its bridge, in the documentation prefix 2001:db8::/64
/// ([`Lab::enable_ipv6`]).
pub const INTERNET_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

pub const INTERNET_GATEWAYS: [&str; 3] =
    ["198.51.100.254/24", "203.0.113.254/24", "192.0.2.254/24"];

/// What a NAT router does to traffic leaving through its WAN interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Plain routing; the internet gets a route to the LAN prefix.
    None,
    /// `masquerade`: endpoint-independent mapping that keeps the port (port-restricted cone).
    Cone,
    /// `masquerade random`: a new random port per destination (symmetric NAT).
    Symmetric,
}

/// A router between a private LAN (a bridge in the router namespace) and the internet.
#[derive(Debug)]
pub struct NatRouter {
    /// The router's namespace.
    pub ns: Arc<Netns>,
    /// Its NAT behaviour.
    pub kind: NatKind,
    /// The WAN interface inside the router namespace.
    pub wan_if: String,
    /// The WAN address (what peers on the internet see for a NATed host).
    pub wan_ip: Ipv4Addr,
    /// The LAN bridge inside the router namespace.
    pub lan_bridge: String,
    /// The router's LAN address, the hosts' default gateway.
    pub lan_ip: Ipv4Addr,
    /// The LAN prefix length.
    pub lan_prefix_len: u8,
}

/// Owns every namespace of one test. Dropping the lab drops its references; a namespace is
/// deleted when the last reference (the lab's, or a [`crate::Meshd`]'s) goes.
#[derive(Debug)]
pub struct Lab {
    internet: Arc<Netns>,
    bridge: String,
    nodes: Mutex<Vec<Arc<Netns>>>,
}

/// Parses `"a.b.c.d/len"`.
pub fn parse_cidr(cidr: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, len) = cidr
        .split_once('/')
        .with_context(|| format!("{cidr}: expected ADDRESS/LEN"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .with_context(|| format!("{cidr}: bad IPv4 address"))?;
    let len: u8 = len
        .parse()
        .with_context(|| format!("{cidr}: bad prefix length"))?;
    if len > 32 {
        bail!("{cidr}: prefix length above 32");
    }
    Ok((ip, len))
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    u32::from(a) & mask == u32::from(b) & mask
}

impl Lab {
    /// Checks for root, removes leftovers of dead test processes, and creates the internet
    /// namespace with its bridge and gateways.
    pub fn new() -> anyhow::Result<Lab> {
        util::require_root()?;
        netns::cleanup_stale();
        let internet = Arc::new(Netns::new("inet")?);
        let bridge = util::unique_ifname("br");
        internet.ip(&[
            "link", "add", &bridge, "address", BRIDGE_MAC, "type", "bridge",
        ])?;
        internet.ip(&["link", "set", &bridge, "up"])?;
        for gw in INTERNET_GATEWAYS {
            internet.ip(&["addr", "add", gw, "dev", &bridge])?;
        }
        internet.sysctl("net.ipv4.ip_forward=1")?;
        // Routed hosts ([`Lab::attach_routed`]) share a /24 with other hosts on the bridge;
        // the internet must forward between them without telling them to talk directly.
        internet.sysctl("net.ipv4.conf.all.send_redirects=0")?;
        internet.sysctl(&format!("net.ipv4.conf.{bridge}.send_redirects=0"))?;
        Ok(Lab {
            internet,
            bridge,
            nodes: Mutex::new(Vec::new()),
        })
    }

    /// The internet namespace (bridge + router for the documentation ranges).
    pub fn internet(&self) -> &Arc<Netns> {
        &self.internet
    }

    fn keep(&self, ns: Netns) -> Arc<Netns> {
        let ns = Arc::new(ns);
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ns.clone());
        ns
    }

    /// A new, unconnected host namespace.
    pub fn host(&self, tag: &str) -> anyhow::Result<Arc<Netns>> {
        Ok(self.keep(Netns::new(tag)?))
    }

    /// A veth pair between `a` and `b` with the given addresses (`"198.51.100.1/24"`), both
    /// ends up. Returns the interface names in `a` and in `b`.
    pub fn link(
        &self,
        a: &Netns,
        b: &Netns,
        addr_a: &str,
        addr_b: &str,
    ) -> anyhow::Result<(String, String)> {
        let (if_a, if_b) = veth(a, b)?;
        a.ip(&["addr", "add", addr_a, "dev", &if_a])?;
        b.ip(&["addr", "add", addr_b, "dev", &if_b])?;
        a.ip(&["link", "set", &if_a, "up"])?;
        b.ip(&["link", "set", &if_b, "up"])?;
        Ok((if_a, if_b))
    }

    /// Connects `host` to the internet bridge with address `addr` (in one of the
    /// documentation ranges) and a default route via that range's gateway. Returns the
    /// interface name inside `host`.
    pub fn attach(&self, host: &Netns, addr: &str) -> anyhow::Result<String> {
        let (ip, len) = parse_cidr(addr)?;
        let (if_host, if_inet) = veth(host, &self.internet)?;
        self.internet
            .ip(&["link", "set", &if_inet, "master", &self.bridge])?;
        self.internet.ip(&["link", "set", &if_inet, "up"])?;
        host.ip(&["addr", "add", addr, "dev", &if_host])?;
        host.ip(&["link", "set", &if_host, "up"])?;
        let gw = INTERNET_GATEWAYS
            .iter()
            .filter_map(|g| parse_cidr(g).ok())
            .find(|(g, glen)| *glen == len && same_subnet(*g, ip, len));
        if let Some((gw, _)) = gw {
            host.ip(&["route", "add", "default", "via", &gw.to_string()])?;
        }
        Ok(if_host)
    }

    /// The internet's bridge (inside [`Lab::internet`]), e.g. for capturing traffic.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Connects `host` to the internet bridge like [`Lab::attach`], but with `ip` as a /32
    /// and an on-link default route via the gateway of its documentation /24 (how many
    /// clouds attach instances). So every packet between two routed hosts is *routed* by
    /// the internet namespace, even within one /24, and passes its `forward` hook: where
    /// [`set_loss`] and path blocking act. Returns the interface name inside `host`.
    pub fn attach_routed(&self, host: &Netns, ip: Ipv4Addr) -> anyhow::Result<String> {
        let gw = INTERNET_GATEWAYS
            .iter()
            .filter_map(|g| parse_cidr(g).ok())
            .find(|(g, glen)| same_subnet(*g, ip, *glen))
            .map(|(g, _)| g)
            .with_context(|| format!("{ip} is in none of the internet's ranges"))?;
        let (if_host, if_inet) = veth(host, &self.internet)?;
        self.internet
            .ip(&["link", "set", &if_inet, "master", &self.bridge])?;
        self.internet.ip(&["link", "set", &if_inet, "up"])?;
        host.ip(&["addr", "add", &format!("{ip}/32"), "dev", &if_host])?;
        host.ip(&["link", "set", &if_host, "up"])?;
        host.ip(&[
            "route",
            "add",
            "default",
            "via",
            &gw.to_string(),
            "dev",
            &if_host,
            "onlink",
        ])?;
        Ok(if_host)
    }

    /// A host on the internet in one step: [`Lab::host`] + [`Lab::attach`].
    pub fn internet_host(&self, tag: &str, addr: &str) -> anyhow::Result<(Arc<Netns>, String)> {
        let h = self.host(tag)?;
        let ifname = self.attach(&h, addr)?;
        Ok((h, ifname))
    }

    /// A router with its WAN (`wan_addr`, e.g. `"203.0.113.10/24"`) on the internet and a LAN
    /// bridge with `lan_addr` (e.g. `"192.168.1.1/24"`), forwarding on, NAT per `kind`
    /// (rulesets as verified in LAB.md). Add hosts behind it with [`Lab::nat_host`].
    pub fn nat_router(
        &self,
        kind: NatKind,
        wan_addr: &str,
        lan_addr: &str,
    ) -> anyhow::Result<NatRouter> {
        self.nat_router_on(kind, wan_addr, lan_addr, false)
    }

    /// [`Lab::nat_router`] with its WAN attached by [`Lab::attach_routed`] (`wan_ip` without
    /// prefix), so its traffic to every other routed host crosses the internet's `forward`
    /// hook.
    pub fn routed_nat_router(
        &self,
        kind: NatKind,
        wan_ip: Ipv4Addr,
        lan_addr: &str,
    ) -> anyhow::Result<NatRouter> {
        self.nat_router_on(kind, &format!("{wan_ip}/32"), lan_addr, true)
    }

    fn nat_router_on(
        &self,
        kind: NatKind,
        wan_addr: &str,
        lan_addr: &str,
        routed: bool,
    ) -> anyhow::Result<NatRouter> {
        let (wan_ip, _) = parse_cidr(wan_addr)?;
        let (lan_ip, lan_prefix_len) = parse_cidr(lan_addr)?;
        let ns = self.host("nat")?;
        let wan_if = if routed {
            self.attach_routed(&ns, wan_ip)?
        } else {
            self.attach(&ns, wan_addr)?
        };
        let lan_bridge = util::unique_ifname("lan");
        ns.ip(&[
            "link",
            "add",
            &lan_bridge,
            "address",
            BRIDGE_MAC,
            "type",
            "bridge",
        ])?;
        ns.ip(&["addr", "add", lan_addr, "dev", &lan_bridge])?;
        ns.ip(&["link", "set", &lan_bridge, "up"])?;
        ns.sysctl("net.ipv4.ip_forward=1")?;
        let masquerade = match kind {
            NatKind::None => None,
            NatKind::Cone => Some("masquerade"),
            NatKind::Symmetric => Some("masquerade random"),
        };
        match masquerade {
            Some(action) => ns.nft(&format!(
                "table ip nat {{\n  chain post {{\n    type nat hook postrouting priority 100;\n    oifname \"{wan_if}\" {action}\n  }}\n}}\n"
            ))?,
            None => {
                let mask = u32::MAX.checked_shl(32 - u32::from(lan_prefix_len)).unwrap_or(0);
                let net = Ipv4Addr::from(u32::from(lan_ip) & mask);
                self.internet.ip(&[
                    "route",
                    "add",
                    &format!("{net}/{lan_prefix_len}"),
                    "via",
                    &wan_ip.to_string(),
                ])?;
            }
        }
        Ok(NatRouter {
            ns,
            kind,
            wan_if,
            wan_ip,
            lan_bridge,
            lan_ip,
            lan_prefix_len,
        })
    }

    /// A host behind `router` with address `addr` (in the router's LAN) and a default route
    /// via the router. Returns the host and its interface name.
    pub fn nat_host(
        &self,
        router: &NatRouter,
        tag: &str,
        addr: &str,
    ) -> anyhow::Result<(Arc<Netns>, String)> {
        let host = self.host(tag)?;
        let (if_host, if_router) = veth(&host, &router.ns)?;
        router
            .ns
            .ip(&["link", "set", &if_router, "master", &router.lan_bridge])?;
        router.ns.ip(&["link", "set", &if_router, "up"])?;
        host.ip(&["addr", "add", addr, "dev", &if_host])?;
        host.ip(&["link", "set", &if_host, "up"])?;
        host.ip(&["route", "add", "default", "via", &router.lan_ip.to_string()])?;
        Ok((host, if_host))
    }
}

/// IPv6 underlays: hosts and routers on the internet's 2001:db8::/64 (no duplicate address
/// detection, so addresses work at once), sites' LANs on routed /64s of 2001:db8::/32
/// without NAT (IPv6 end to end, as clouds give it), IPv4 NAT unchanged beside it.
impl Lab {
    /// Gives the internet IPv6: [`INTERNET_GATEWAY6`]/64 on its bridge, forwarding on.
    pub fn enable_ipv6(&self) -> anyhow::Result<()> {
        self.internet.sysctl("net.ipv6.conf.all.forwarding=1")?;
        self.internet.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{INTERNET_GATEWAY6}/64"),
            "dev",
            &self.bridge,
            "nodad",
        ])?;
        Ok(())
    }

    /// Puts `addr` (in 2001:db8::/64) on `host`'s interface `ifname`, which faces the
    /// internet bridge, with a default IPv6 route via [`INTERNET_GATEWAY6`].
    pub fn add_ipv6(&self, host: &Netns, ifname: &str, addr: Ipv6Addr) -> anyhow::Result<()> {
        self.add_ipv6_behind(host, ifname, addr, INTERNET_GATEWAY6)
    }

    /// A host on the internet with IPv6 only (`addr` in 2001:db8::/64): no IPv4 address,
    /// no IPv4 route. Returns it and its interface.
    pub fn ipv6_only_host(
        &self,
        tag: &str,
        addr: Ipv6Addr,
    ) -> anyhow::Result<(Arc<Netns>, String)> {
        let host = self.host(tag)?;
        let (if_host, if_inet) = veth(&host, &self.internet)?;
        self.internet
            .ip(&["link", "set", &if_inet, "master", &self.bridge])?;
        self.internet.ip(&["link", "set", &if_inet, "up"])?;
        host.ip(&["link", "set", &if_host, "up"])?;
        self.add_ipv6(&host, &if_host, addr)?;
        Ok((host, if_host))
    }

    /// Gives `router`'s LAN the /64 `lan` (its first address on the LAN bridge, the hosts'
    /// gateway) routed, not translated: the router gets `wan` on its WAN and forwards
    /// IPv6, the internet routes `lan` via `wan`. Returns the LAN gateway; hosts take
    /// addresses with [`Lab::add_ipv6_behind`].
    pub fn route_ipv6_lan(
        &self,
        router: &NatRouter,
        wan: Ipv6Addr,
        lan: Ipv6Addr,
    ) -> anyhow::Result<Ipv6Addr> {
        self.add_ipv6(&router.ns, &router.wan_if, wan)?;
        router.ns.sysctl("net.ipv6.conf.all.forwarding=1")?;
        let gateway = Ipv6Addr::from(u128::from(lan) | 1);
        router.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{gateway}/64"),
            "dev",
            &router.lan_bridge,
            "nodad",
        ])?;
        self.internet.ip(&[
            "-6",
            "route",
            "add",
            &format!("{lan}/64"),
            "via",
            &wan.to_string(),
        ])?;
        Ok(gateway)
    }

    /// Puts `addr` (a /64) on `host`'s interface `ifname` with a default IPv6 route via
    /// `gateway` on that interface: behind a router of [`Lab::route_ipv6_lan`], or on the
    /// internet ([`Lab::add_ipv6`]).
    pub fn add_ipv6_behind(
        &self,
        host: &Netns,
        ifname: &str,
        addr: Ipv6Addr,
        gateway: Ipv6Addr,
    ) -> anyhow::Result<()> {
        host.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{addr}/64"),
            "dev",
            ifname,
            "nodad",
        ])?;
        host.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
            "dev",
            ifname,
        ])?;
        Ok(())
    }
}

/// Creates a veth pair with one end in `a` and the other in `b` (created directly inside
/// the namespaces, so nothing is ever left in the root namespace).
fn veth(a: &Netns, b: &Netns) -> anyhow::Result<(String, String)> {
    let if_a = util::unique_ifname("ve");
    let if_b = util::unique_ifname("ve");
    util::run(Command::new("ip").args([
        "-n",
        a.name(),
        "link",
        "add",
        &if_a,
        "type",
        "veth",
        "peer",
        "name",
        &if_b,
        "netns",
        b.name(),
    ]))?;
    Ok((if_a, if_b))
}

/// Drops `percent` % of UDP packets that `ns` receives, sends or forwards (nftables
/// `numgen random`, as LAB.md describes; the kernel here has no netem). Each packet passes
/// exactly one of the input, output and forward hooks of a namespace, so the rate applies
/// once per namespace. `0` removes the rules.
pub fn set_udp_loss(ns: &Netns, percent: u8) -> anyhow::Result<()> {
    set_loss(ns, percent, &["udp"])
}

/// Like [`set_udp_loss`], for the layer-4 protocols in `protocols` (nft names: `"udp"`,
/// `"icmp"`, `"tcp"`). Dropping ICMP at the same rate as UDP makes an underlay `ping` a
/// fair baseline for a ping through the tunnel (whose ICMP rides in UDP). Replaces any
/// earlier loss rules of the namespace; `0` removes them.
pub fn set_loss(ns: &Netns, percent: u8, protocols: &[&str]) -> anyhow::Result<()> {
    if percent > 100 {
        bail!("loss of {percent} % is not a percentage");
    }
    if protocols.is_empty()
        || protocols
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        bail!("bad protocol list {protocols:?}");
    }
    let l4 = if protocols.len() == 1 {
        protocols[0].to_owned()
    } else {
        format!("{{ {} }}", protocols.join(", "))
    };
    // Creating the table first makes the delete valid whether or not it existed.
    let mut rules = String::from("table inet wmloss\ndelete table inet wmloss\n");
    if percent > 0 {
        // nft rejects `< 100` after `mod 100` (out of range): 100 % is a plain drop.
        let matcher = if percent == 100 {
            format!("meta l4proto {l4}")
        } else {
            format!("meta l4proto {l4} numgen random mod 100 < {percent}")
        };
        rules.push_str("table inet wmloss {\n");
        for (chain, hook) in [
            ("drop_in", "input"),
            ("drop_out", "output"),
            ("drop_forward", "forward"),
        ] {
            rules.push_str(&format!(
                "  chain {chain} {{\n    type filter hook {hook} priority 0;\n    {matcher} drop\n  }}\n"
            ));
        }
        rules.push_str("}\n");
    }
    ns.nft(&rules)
}

/// Pings `to_ip` from inside `from` `count` times (0.2 s apart, 1 s timeout each) and
/// returns the loss in percent (100.0 when nothing came back or ping could not run).
pub fn ping(from: &Netns, to_ip: &str, count: u32) -> f64 {
    ping_with(from, to_ip, count, &[])
}

/// [`ping`] with extra ping(8) options, e.g. `["-I", "10.9.8.99"]`.
pub fn ping_with(from: &Netns, to_ip: &str, count: u32, extra: &[&str]) -> f64 {
    let count_s = count.to_string();
    let mut cmd = from.command("ping");
    cmd.args(["-n", "-q", "-c", &count_s, "-i", "0.2", "-W", "1"])
        .args(extra)
        .arg(to_ip);
    match util::output(&mut cmd) {
        Ok(o) => parse_ping_loss(&String::from_utf8_lossy(&o.stdout)).unwrap_or(100.0),
        Err(e) => {
            eprintln!("[harness] {e:#}");
            100.0
        }
    }
}

/// True when one ping to `to_ip` from `from` is answered within a second.
pub fn ping_once(from: &Netns, to_ip: &str) -> bool {
    let mut cmd = from.command("ping");
    cmd.args(["-n", "-q", "-c", "1", "-W", "1", to_ip]);
    util::output(&mut cmd)
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Reads "N packets transmitted, M received" from ping's summary.
pub fn parse_ping_loss(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line.split(',').map(|part| {
        part.split_whitespace()
            .next()
            .and_then(|n| n.parse::<u32>().ok())
    });
    let tx = nums.next()??;
    let rx = nums.next()??;
    if tx == 0 {
        return None;
    }
    Some(100.0 * f64::from(tx.saturating_sub(rx)) / f64::from(tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary() {
        let out = "--- 10.9.8.2 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 402ms\n";
        assert_eq!(parse_ping_loss(out), Some(0.0));
        let out = "4 packets transmitted, 1 received, +3 errors, 75% packet loss, time 3ms\n";
        assert_eq!(parse_ping_loss(out), Some(75.0));
        assert_eq!(
            parse_ping_loss("ping: connect: Network is unreachable\n"),
            None
        );
    }

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr("198.51.100.1/24").ok(),
            Some((Ipv4Addr::new(198, 51, 100, 1), 24))
        );
        assert!(parse_cidr("198.51.100.1").is_err());
        assert!(same_subnet(
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 254),
            24
        ));
        assert!(!same_subnet(
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(203, 0, 113, 254),
            24
        ));
    }
}
