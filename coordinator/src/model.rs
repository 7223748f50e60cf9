//! The coordinator's records (what the [`Store`](crate::store::Store) keeps) and the rules
//! for the names and settings admins and nodes hand in.
//!
//! Records serialise as JSON with kebab-case fields; fields are only ever added, with a
//! serde default, so a newer coordinator reads an older data directory.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use mesh_proto::admin::{MemberView, NetworkView, TokenView};
use mesh_proto::netmap::{NetworkInfo, PeerInfo};
use mesh_proto::Key;
use serde::{Deserialize, Serialize};

/// Member MTU when the admin gives none.
pub const DEFAULT_MTU: u16 = 1280;
/// Persistent keepalive seconds when the admin gives none.
pub const DEFAULT_KEEPALIVE: u16 = 25;
/// Smallest MTU a member may be told to use (the IPv4 minimum reassembly size).
pub const MIN_MTU: u16 = 576;
/// Most endpoint candidates kept per member (bounds netmap size per peer).
pub const MAX_ENDPOINTS: usize = 16;
/// Longest member name.
pub const MAX_NAME: usize = 63;
/// Longest meshd version string kept.
pub const MAX_VERSION: usize = 64;
/// Most advertised routes kept per member (bounds netmap size per peer).
pub const MAX_ROUTES: usize = 64;

/// The first netmap version of a network created at `now` (Unix seconds): `now · 2^20`.
/// A network deleted and created again under the same name starts above any version the
/// old one can have reached (unless it made a million changes a second), so a node's cache
/// of the old one never resumes into the new one ([`crate::control::state`]'s `resume_records`).
/// Below 2^53 until the year 2255, so JSON readers that hold numbers as doubles are exact.
pub fn initial_version(now: u64) -> u64 {
    now.saturating_mul(1 << 20).max(1)
}

/// A network: an overlay prefix and the settings its members share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Network {
    /// `[a-z0-9-]{1,32}`, see [`validate_network_name`].
    pub name: String,
    /// The overlay prefix, stored truncated to its network address.
    pub cidr: IpNet,
    /// Member interface MTU.
    pub mtu: u16,
    /// Persistent keepalive seconds (0 = off).
    pub keepalive: u16,
    /// Netmap version: bumped (and persisted) by every change any member's netmap shows.
    pub version: u64,
    /// The policy document (`mesh_proto::policy`), checked when it was set; `None`:
    /// everything allowed between members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The DNS domain members' names live under (`<name>.<network>.<domain>`), checked by
    /// `mesh_proto::dns::check_domain`; `None`: [`mesh_proto::dns::DEFAULT_DOMAIN`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
    /// The IPv6 prefix beside an IPv4 `cidr` (dual stack), checked by [`check_cidr6`];
    /// `None`: IPv4 only (networks created before dual stack, or created with `off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<IpNet>,
}

/// A random unique local IPv6 /64 (RFC 4193: `fd` and a 40-bit random global id, subnet 0).
pub fn random_ula() -> IpNet {
    let mut id = [0u8; 5];
    // A failing system RNG leaves zeros: still a valid (if less unique) ULA.
    if let Err(e) = getrandom::getrandom(&mut id) {
        tracing::warn!("no randomness for a ULA prefix: {e}");
    }
    let mut bytes = [0u8; 16];
    bytes[0] = 0xfd;
    bytes[1..6].copy_from_slice(&id);
    let prefix = IpAddr::V6(Ipv6Addr::from(bytes));
    IpNet::new(prefix, 64).unwrap_or_else(|_| IpNet::from(prefix))
}

/// Checks an IPv6 prefix for beside the IPv4 prefix `cidr`: IPv6, with at least as many
/// host bits as `cidr` (every member's IPv4 host part must fit), truncated to its network.
pub fn check_cidr6(cidr: &IpNet, cidr6: &IpNet) -> Result<IpNet, String> {
    let IpNet::V4(v4) = cidr else {
        return Err(format!(
            "cidr6 {cidr6}: the network's cidr {cidr} is IPv6 already"
        ));
    };
    let IpNet::V6(v6) = cidr6 else {
        return Err(format!("cidr6 {cidr6} is not an IPv6 prefix"));
    };
    let host_bits4 = 32 - v4.prefix_len();
    if 128 - v6.prefix_len() < host_bits4 {
        return Err(format!(
            "cidr6 {cidr6} is too small: /{} leaves fewer host bits than {cidr} (at most /{})",
            v6.prefix_len(),
            128 - host_bits4
        ));
    }
    Ok(IpNet::V6(v6.trunc()))
}

impl Network {
    /// The DNS domain in force.
    pub fn domain(&self) -> &str {
        self.dns_domain
            .as_deref()
            .unwrap_or(mesh_proto::dns::DEFAULT_DOMAIN)
    }

    /// The settings part of a netmap.
    pub fn info(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            cidr: self.cidr,
            mtu: self.mtu,
            keepalive: self.keepalive,
            cidr6: self.cidr6,
        }
    }

    /// The IPv6 address a member with IPv4 `address` gets by default in a dual-stack
    /// network: the IPv6 prefix with the IPv4 address's host part (10.9.8.3 in 10.9.8.0/24
    /// → `<cidr6>::3`). `None` for an IPv4-only network.
    pub fn derived_address6(&self, address: IpAddr) -> Option<Ipv6Addr> {
        let (IpNet::V4(v4), Some(IpNet::V6(v6)), IpAddr::V4(a)) = (self.cidr, self.cidr6, address)
        else {
            return None;
        };
        let host = u32::from(a).wrapping_sub(u32::from(v4.network())) & !u32::from(v4.netmask());
        Some(Ipv6Addr::from(u128::from(v6.network()) | u128::from(host)))
    }

    /// The admin API's view, given the member count.
    pub fn view(&self, members: usize) -> NetworkView {
        NetworkView {
            name: self.name.clone(),
            cidr: self.cidr,
            mtu: self.mtu,
            keepalive: self.keepalive,
            members,
            version: self.version,
            dns_domain: self.domain().to_owned(),
            cidr6: self.cidr6,
        }
    }
}

/// A node in one network, keyed by its public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Member {
    /// Its WireGuard public key: its identity.
    pub public_key: Key,
    /// Its name (the hostname it reported unless an admin renamed it).
    pub name: String,
    /// Its overlay address; kept for the member's whole life.
    pub address: IpAddr,
    /// Its IPv6 overlay address when an admin set one; otherwise it has
    /// [`Network::derived_address6`] in a dual-stack network ([`Member::address6`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    /// Whether it may be in the network (peers see only authorised members).
    pub authorized: bool,
    /// Unix seconds it was first seen.
    pub created_at: u64,
    /// Unix seconds of its last control-connection activity.
    #[serde(default)]
    pub last_seen: Option<u64>,
    /// The meshd version it reported.
    #[serde(default)]
    pub version: String,
    /// Endpoints observed by the coordinator: the QUIC source IP with the WireGuard port.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// Endpoints the node reported on its own interfaces.
    #[serde(default)]
    pub local_endpoints: Vec<SocketAddr>,
    /// Addresses the coordinator's reflectors saw for the node's WireGuard socket (its NAT
    /// mappings), as the node reported them, best first.
    #[serde(default)]
    pub reflexive_endpoints: Vec<SocketAddr>,
    /// A public endpoint an admin set up for the node (port forwarding, a load balancer).
    #[serde(default)]
    pub public_endpoint: Option<SocketAddr>,
    /// Prefixes the node advertises (from its last hello), see [`clean_routes`].
    #[serde(default)]
    pub advertised_routes: Vec<IpNet>,
    /// Prefixes an admin approved for it, sorted; routed to it while also advertised.
    #[serde(default)]
    pub approved_routes: Vec<IpNet>,
    /// Its tags (DNS labels), which the network's policy names; set by an admin or by the
    /// join token it first joined with.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tags: BTreeSet<String>,
}

impl Member {
    /// Endpoint candidates peers get, best first, without duplicates, at most
    /// [`MAX_ENDPOINTS`]:
    /// 1. the admin-set public endpoint;
    /// 2. the reflexive addresses (the NAT mappings of the WireGuard socket itself);
    /// 3. the observed QUIC source IP with the WireGuard port, only while no reflexive
    ///    address is known (behind NAT it names the control connection's mapping, whose
    ///    port is usually not the WireGuard socket's);
    /// 4. the local interface addresses.
    pub fn candidates(&self) -> Vec<SocketAddr> {
        let observed: &[SocketAddr] = if self.reflexive_endpoints.is_empty() {
            &self.endpoints
        } else {
            &[]
        };
        let mut out: Vec<SocketAddr> = Vec::new();
        let all = self
            .public_endpoint
            .iter()
            .chain(&self.reflexive_endpoints)
            .chain(observed)
            .chain(&self.local_endpoints);
        for ep in all {
            if out.len() == MAX_ENDPOINTS {
                break;
            }
            if !out.contains(ep) {
                out.push(*ep);
            }
        }
        out
    }

    /// Routes in effect: approved and advertised, in approval (sorted) order.
    pub fn active_routes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.approved_routes
            .iter()
            .filter(|r| self.advertised_routes.contains(r))
            .copied()
    }

    /// Its IPv6 overlay address in `network`: the admin's, else the derived one; `None`
    /// in an IPv4-only network.
    pub fn address6(&self, network: &Network) -> Option<Ipv6Addr> {
        network.cidr6?;
        self.address6
            .or_else(|| network.derived_address6(self.address))
    }

    /// The member as a peer in other members' netmaps of `network`: its allowed IPs are
    /// its address, its IPv6 address (dual stack) and its active routes. Its candidates
    /// leave out what the mesh itself carries (the network's prefixes, its own active
    /// routes, such as a pod bridge's address): peers would route a probe there into the
    /// tunnel. meshd refuses such paths itself; this also spares nodes of older versions.
    pub fn peer_info(&self, network: &Network) -> PeerInfo {
        let address6 = self.address6(network);
        let carried = |ip: IpAddr| {
            network.cidr.contains(&ip)
                || network.cidr6.is_some_and(|c| c.contains(&ip))
                || self.active_routes().any(|r| r.contains(&ip))
        };
        PeerInfo {
            public_key: self.public_key,
            name: self.name.clone(),
            address: self.address,
            address6,
            allowed_ips: std::iter::once(IpNet::from(self.address))
                .chain(address6.map(|a| IpNet::from(IpAddr::V6(a))))
                .chain(self.active_routes())
                .collect(),
            endpoints: self
                .candidates()
                .into_iter()
                .filter(|ep| !carried(ep.ip()))
                .collect(),
        }
    }

    /// The admin API's view in `network`, without reported paths.
    pub fn view(&self, network: &Network, online: bool) -> MemberView {
        MemberView {
            public_key: self.public_key,
            fingerprint: self.public_key.fingerprint(),
            name: self.name.clone(),
            address: self.address,
            address6: self.address6(network),
            authorized: self.authorized,
            online,
            last_seen: self.last_seen,
            version: self.version.clone(),
            endpoints: self.candidates(),
            public_endpoint: self.public_endpoint,
            advertised_routes: self.advertised_routes.clone(),
            approved_routes: self.approved_routes.clone(),
            // Not stored: the session registry has them ([`crate::control::state`]).
            paths: Vec::new(),
            tags: self.tags.iter().cloned().collect(),
            filter: None,
            dns_name: None,
        }
    }
}

/// A join token. Only the SHA-256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Token {
    /// Short public id (12 hex digits).
    pub id: String,
    /// The network it admits to.
    pub network: String,
    /// SHA-256 of the secret ([`mesh_proto::control::secret_hash`]).
    #[serde(with = "hex32")]
    pub secret_hash: [u8; 32],
    /// Usable more than once.
    pub reusable: bool,
    /// Unix seconds it expires at.
    pub expires_at: Option<u64>,
    /// Revoked by an admin.
    pub revoked: bool,
    /// Successful joins with it.
    pub uses: u64,
    /// Unix seconds it was made.
    pub created_at: u64,
    /// Tags a member joining with it gets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Token {
    /// The admin API's view (no secret, no hash).
    pub fn view(&self) -> TokenView {
        TokenView {
            id: self.id.clone(),
            network: self.network.clone(),
            reusable: self.reusable,
            expires_at: self.expires_at,
            revoked: self.revoked,
            uses: self.uses,
            created_at: self.created_at,
            tags: self.tags.clone(),
        }
    }
}

/// What one netmap version changed, kept for a while so a reconnecting node can resume
/// from its version with changes instead of a full map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChangeRecord {
    /// The network's settings changed.
    #[serde(default)]
    pub network: bool,
    /// Members whose peer entry appeared, changed or disappeared.
    #[serde(default)]
    pub touched: Vec<Key>,
}

/// Why a name or setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Network names are short lowercase identifiers.
    #[error("invalid network name {0:?}: use 1 to 32 characters of a-z, 0-9 and '-', starting with a letter or digit")]
    NetworkName(String),
    /// Member names are hostname-like.
    #[error(
        "invalid member name {0:?}: use 1 to 63 characters of A-Z, a-z, 0-9, '-', '_' and '.'"
    )]
    MemberName(String),
    /// The prefix has no room for two members.
    #[error("cidr {0} is too small: it must hold at least two members (IPv4 /30 or shorter, IPv6 /126 or shorter)")]
    CidrTooSmall(IpNet),
    /// MTU out of range.
    #[error("mtu {0} is out of range ({MIN_MTU}..=65535)")]
    Mtu(u16),
    /// A route that is not a canonical prefix.
    #[error("invalid route {0:?}: {1}")]
    Route(String, String),
}

/// Checks a network name: 1..=32 characters of `[a-z0-9-]`, starting with a letter or digit.
pub fn validate_network_name(name: &str) -> Result<(), ModelError> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ModelError::NetworkName(name.to_owned()))
    }
}

/// Checks a member name an admin sets.
pub fn validate_member_name(name: &str) -> Result<(), ModelError> {
    if is_member_name(name) {
        Ok(())
    } else {
        Err(ModelError::MemberName(name.to_owned()))
    }
}

fn is_member_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The name a new member gets from the hostname it reported: kept if it is a valid member
/// name, otherwise reduced to its valid characters, or `node-<fingerprint>` when nothing
/// is left.
pub fn member_name_from_hello(reported: &str, key: &Key) -> String {
    if is_member_name(reported) {
        return reported.to_owned();
    }
    let cleaned: String = reported
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(MAX_NAME)
        .collect();
    if cleaned.is_empty() {
        let fp: String = key
            .fingerprint()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        format!("node-{fp}")
    } else {
        cleaned
    }
}

/// A version string reduced to printable ASCII and [`MAX_VERSION`] characters.
pub fn clean_version(reported: &str) -> String {
    reported
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_VERSION)
        .collect()
}

/// Checks network settings and truncates the prefix to its network address.
pub fn validate_network(cidr: IpNet, mtu: u16) -> Result<IpNet, ModelError> {
    let room = match cidr {
        IpNet::V4(n) => n.prefix_len() <= 30,
        IpNet::V6(n) => n.prefix_len() <= 126,
    };
    if !room {
        return Err(ModelError::CidrTooSmall(cidr));
    }
    if mtu < MIN_MTU {
        return Err(ModelError::Mtu(mtu));
    }
    Ok(cidr.trunc())
}

/// The routes a node's hello advertises, as kept: canonical prefixes (host bits
/// cleared; IPv4-mapped IPv6 not special), without duplicates or default routes, order
/// kept, at most [`MAX_ROUTES`]. A node validates its own config; this only bounds what a
/// misbehaving one can make the coordinator store.
pub fn clean_routes(reported: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for r in reported {
        let r = r.trunc();
        if out.len() == MAX_ROUTES {
            break;
        }
        if r.prefix_len() > 0 && !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Parses a route an admin names: a CIDR with no host bits.
pub fn parse_route(text: &str) -> Result<IpNet, ModelError> {
    let net: IpNet = text
        .parse()
        .map_err(|_| ModelError::Route(text.to_owned(), "not a CIDR prefix".into()))?;
    if net.trunc() != net {
        return Err(ModelError::Route(
            text.to_owned(),
            format!("host bits set; did you mean {}?", net.trunc()),
        ));
    }
    Ok(net)
}

/// Whether two prefixes share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// Why `route` cannot be approved for `member` in `network` with these other members: it
/// overlaps the overlay prefix, or another member's approved route. `None` if it can.
pub fn route_conflict<'a>(
    network: &Network,
    member: &Key,
    route: &IpNet,
    members: impl IntoIterator<Item = &'a Member>,
) -> Option<String> {
    for prefix in std::iter::once(&network.cidr).chain(&network.cidr6) {
        if overlaps(route, prefix) {
            return Some(format!(
                "route {route} overlaps the network's prefix {prefix}"
            ));
        }
    }
    for m in members {
        if m.public_key == *member {
            continue;
        }
        if let Some(other) = m.approved_routes.iter().find(|r| overlaps(r, route)) {
            return Some(format!(
                "route {route} overlaps {other}, approved for member {} ({})",
                m.name,
                m.public_key.fingerprint()
            ));
        }
    }
    None
}

/// Checks an admin-set IPv6 address for `member` in the dual-stack `network`: inside its
/// IPv6 prefix, outside the addresses derived from IPv4 ones (the prefix's first
/// 2^(IPv4 host bits), so it can never meet a derived address), not another member's.
pub fn check_address6<'a>(
    network: &Network,
    addr: Ipv6Addr,
    member: &Key,
    members: impl IntoIterator<Item = &'a Member>,
) -> Result<(), String> {
    let (Some(IpNet::V6(prefix)), IpNet::V4(v4)) = (network.cidr6, network.cidr) else {
        return Err(format!("network {} has no IPv6 prefix", network.name));
    };
    if !prefix.contains(&addr) {
        return Err(format!(
            "address {addr} is outside the network's IPv6 prefix {prefix}"
        ));
    }
    let host = u128::from(addr) - u128::from(prefix.network());
    let derived = 1u128 << (32 - v4.prefix_len());
    if host < derived {
        return Err(format!(
            "address {addr} is among the IPv6 addresses members get from their IPv4 ones \
             ({}/{}): pick one above, e.g. {}",
            prefix.network(),
            128 - (32 - v4.prefix_len()),
            Ipv6Addr::from(u128::from(prefix.network()) + derived + 1)
        ));
    }
    for m in members {
        if m.public_key != *member && m.address6 == Some(addr) {
            return Err(format!(
                "address {addr} is already used by member {} ({})",
                m.name,
                m.public_key.fingerprint()
            ));
        }
    }
    Ok(())
}

/// serde for `[u8; 32]` as 64 hex digits.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(64);
        for b in bytes {
            text.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("expected 64 hex digits");
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names() {
        for ok in ["lab", "a", "0net", "prod-eu-1", &"x".repeat(32)] {
            assert!(validate_network_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-lab",
            "Lab",
            "la b",
            "lab/x",
            "lab_1",
            &"x".repeat(33),
            "é",
        ] {
            assert!(validate_network_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn member_names_from_hello() {
        let key = Key([0xfb; 32]);
        assert_eq!(member_name_from_hello("web-1.lab", &key), "web-1.lab");
        assert_eq!(member_name_from_hello("we b!", &key), "web");
        let fallback = member_name_from_hello("ü", &key);
        assert!(
            fallback.starts_with("node-") && fallback.len() > 5,
            "{fallback}"
        );
        assert!(validate_member_name(&fallback).is_ok());
        assert_eq!(
            member_name_from_hello(&"a".repeat(100), &key).len(),
            MAX_NAME
        );
        assert_eq!(clean_version("0.1\n\u{1b}[0m"), "0.1[0m");
    }

    fn v4_network() -> Network {
        Network {
            name: "lab".into(),
            cidr: "10.0.0.0/24".parse().unwrap(),
            mtu: 1280,
            keepalive: 25,
            version: 1,
            policy: None,
            dns_domain: None,
            cidr6: None,
        }
    }

    #[test]
    fn dual_stack_addresses() {
        let mut net = v4_network();
        net.cidr = "10.9.8.0/24".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(net.derived_address6(ip("10.9.8.3")), None, "IPv4 only");
        net.cidr6 = Some("fd5e:1f2a:9c00::/64".parse().unwrap());
        assert_eq!(
            net.derived_address6(ip("10.9.8.3")),
            Some("fd5e:1f2a:9c00::3".parse().unwrap())
        );
        assert_eq!(
            net.derived_address6(ip("10.9.8.254")),
            Some("fd5e:1f2a:9c00::fe".parse().unwrap())
        );

        // Prefixes: IPv6, room for every IPv4 host part, truncated.
        let v4: IpNet = "10.9.0.0/16".parse().unwrap();
        let p = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            check_cidr6(&v4, &p("fd00:1::5/64")).unwrap(),
            p("fd00:1::/64")
        );
        assert!(check_cidr6(&v4, &p("fd00::/112")).is_ok());
        assert!(check_cidr6(&v4, &p("fd00::/113"))
            .unwrap_err()
            .contains("too small"));
        assert!(check_cidr6(&v4, &p("10.0.0.0/8"))
            .unwrap_err()
            .contains("not an IPv6"));
        assert!(check_cidr6(&p("fd00::/64"), &p("fd01::/64")).is_err());
        let ula = random_ula();
        assert_eq!(ula.prefix_len(), 64);
        assert!(
            matches!(ula.addr(), IpAddr::V6(a) if a.octets()[0] == 0xfd && a.segments()[3] == 0)
        );

        // A member: derived unless set; its /128 among its allowed IPs.
        let mut m = member(1, "10.9.8.7");
        let info = m.peer_info(&net);
        assert_eq!(info.address6, Some("fd5e:1f2a:9c00::7".parse().unwrap()));
        assert_eq!(
            info.allowed_ips,
            vec![p("10.9.8.7/32"), p("fd5e:1f2a:9c00::7/128")]
        );
        assert_eq!(m.view(&net, true).address6, info.address6);
        assert_eq!(m.peer_info(&v4_network()).address6, None);

        // Admin-set addresses: inside, above the derived range, unused.
        let other_key = Key([2; 32]);
        let a6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let check = |a: &str, members: &[Member]| check_address6(&net, a6(a), &other_key, members);
        assert_eq!(check("fd5e:1f2a:9c00::1:7", &[]), Ok(()));
        assert!(check("fd5e:1f2a:9c00::ff", &[])
            .unwrap_err()
            .contains("pick one above, e.g. fd5e:1f2a:9c00::101"));
        assert!(check("fd5e:1f2a:9c01::1:7", &[])
            .unwrap_err()
            .contains("outside"));
        m.address6 = Some(a6("fd5e:1f2a:9c00::1:7"));
        assert!(check("fd5e:1f2a:9c00::1:7", &[m.clone()])
            .unwrap_err()
            .contains("already used by member n1"));
        assert_eq!(m.peer_info(&net).address6, m.address6);

        // Routes may not overlap the IPv6 prefix either.
        assert!(
            route_conflict(&net, &other_key, &p("fd5e:1f2a:9c00:0:1::/80"), [&m])
                .is_some_and(|w| w.contains("fd5e:1f2a:9c00::/64"))
        );
        assert!(route_conflict(&net, &other_key, &p("fd99::/64"), [&m]).is_none());
    }

    #[test]
    fn network_settings() {
        let cidr: IpNet = "10.9.8.77/24".parse().unwrap();
        assert_eq!(
            validate_network(cidr, 1280).unwrap().to_string(),
            "10.9.8.0/24"
        );
        assert!(validate_network("10.0.0.0/31".parse().unwrap(), 1280).is_err());
        assert!(validate_network("fd00::/127".parse().unwrap(), 1280).is_err());
        assert!(validate_network("fd00::/64".parse().unwrap(), 1280).is_ok());
        assert_eq!(validate_network(cidr, 100), Err(ModelError::Mtu(100)));
    }

    #[test]
    fn candidates_dedup_observed_first() {
        let m = Member {
            address6: None,
            public_key: Key([1; 32]),
            name: "a".into(),
            address: "10.0.0.1".parse().unwrap(),
            authorized: true,
            created_at: 0,
            last_seen: None,
            version: String::new(),
            endpoints: vec!["203.0.113.1:51820".parse().unwrap()],
            local_endpoints: vec![
                "192.168.1.2:51820".parse().unwrap(),
                "203.0.113.1:51820".parse().unwrap(),
            ],
            reflexive_endpoints: vec![],
            public_endpoint: None,
            advertised_routes: vec![],
            approved_routes: vec![],
            tags: BTreeSet::new(),
        };
        assert_eq!(
            m.candidates(),
            vec![
                "203.0.113.1:51820".parse::<SocketAddr>().unwrap(),
                "192.168.1.2:51820".parse().unwrap()
            ]
        );
        assert_eq!(
            m.peer_info(&v4_network()).allowed_ips[0].to_string(),
            "10.0.0.1/32"
        );
    }

    #[test]
    fn candidates_order_public_reflexive_observed_local() {
        let ep = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mut m = Member {
            address6: None,
            public_key: Key([1; 32]),
            name: "a".into(),
            address: "10.0.0.1".parse().unwrap(),
            authorized: true,
            created_at: 0,
            last_seen: None,
            version: String::new(),
            endpoints: vec![ep("203.0.113.1:51820")],
            local_endpoints: vec![ep("192.168.1.2:51820"), ep("198.51.100.9:7000")],
            reflexive_endpoints: vec![],
            public_endpoint: Some(ep("198.51.100.9:7000")),
            advertised_routes: vec![],
            approved_routes: vec![],
            tags: BTreeSet::new(),
        };
        // No reflexive address yet: the observed one stands in.
        assert_eq!(
            m.candidates(),
            vec![
                ep("198.51.100.9:7000"),
                ep("203.0.113.1:51820"),
                ep("192.168.1.2:51820")
            ]
        );
        // With reflexive addresses the observed guess is dropped.
        m.reflexive_endpoints = vec![ep("203.0.113.1:40001"), ep("[2001:db8::1]:51820")];
        assert_eq!(
            m.candidates(),
            vec![
                ep("198.51.100.9:7000"),
                ep("203.0.113.1:40001"),
                ep("[2001:db8::1]:51820"),
                ep("192.168.1.2:51820")
            ]
        );
        assert_eq!(
            m.view(&v4_network(), false).public_endpoint,
            Some(ep("198.51.100.9:7000"))
        );
        // Bounded.
        m.local_endpoints = (1..=40).map(|i| ep(&format!("10.1.0.{i}:1"))).collect();
        assert_eq!(m.candidates().len(), MAX_ENDPOINTS);
        assert_eq!(m.candidates()[0], ep("198.51.100.9:7000"));
    }

    #[test]
    fn candidates_the_mesh_carries_are_not_offered_to_peers() {
        let p = |s: &str| s.parse::<IpNet>().unwrap();
        let mut net = v4_network();
        net.cidr = p("10.9.8.0/24");
        net.cidr6 = Some(p("fd5e:1f2a:9c00::/64"));
        let mut m = member(1, "10.9.8.2");
        m.advertised_routes = vec![p("10.244.3.0/24")];
        m.approved_routes = vec![p("10.244.3.0/24")];
        m.local_endpoints = [
            "192.168.3.2:51820",
            "10.244.3.1:51820",
            "10.9.8.2:51820",
            "[fd5e:1f2a:9c00::2]:51820",
            "[2001:db8::3]:51820",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let offered = |m: &Member| -> Vec<String> {
            m.peer_info(&net)
                .endpoints
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(offered(&m), ["192.168.3.2:51820", "[2001:db8::3]:51820"]);
        // A route only advertised is not routed through the mesh: its address stays.
        m.approved_routes.clear();
        assert_eq!(
            offered(&m),
            [
                "192.168.3.2:51820",
                "10.244.3.1:51820",
                "[2001:db8::3]:51820"
            ]
        );
        // The admin still sees everything the node reported.
        assert_eq!(m.view(&net, true).endpoints.len(), 5);
    }

    #[test]
    fn older_member_records_still_load() {
        let json = r#"{"public-key":"m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs=","name":"a",
            "address":"10.0.0.1","authorized":true,"created-at":1}"#;
        let m: Member = serde_json::from_str(json).unwrap();
        assert!(m.reflexive_endpoints.is_empty() && m.public_endpoint.is_none());
    }

    fn member(b: u8, address: &str) -> Member {
        Member {
            address6: None,
            public_key: Key([b; 32]),
            name: format!("n{b}"),
            address: address.parse().unwrap(),
            authorized: true,
            created_at: 0,
            last_seen: None,
            version: String::new(),
            endpoints: vec![],
            local_endpoints: vec![],
            reflexive_endpoints: vec![],
            public_endpoint: None,
            advertised_routes: vec![],
            approved_routes: vec![],
            tags: BTreeSet::new(),
        }
    }

    #[test]
    fn allowed_ips_are_address_and_approved_advertised_routes() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let mut m = member(1, "10.9.8.2");
        let ips = |m: &Member| -> Vec<String> {
            m.peer_info(&v4_network())
                .allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(ips(&m), ["10.9.8.2/32"]);
        // Advertised only: not routed.
        m.advertised_routes = vec![net("10.244.3.0/24"), net("10.244.4.0/24")];
        assert_eq!(ips(&m), ["10.9.8.2/32"]);
        // Approved only: not routed either.
        m.approved_routes = vec![net("10.244.3.0/24"), net("10.250.0.0/16")];
        assert_eq!(ips(&m), ["10.9.8.2/32", "10.244.3.0/24"]);
        // Both: routed; withdrawn by the node: gone again.
        m.advertised_routes.push(net("10.250.0.0/16"));
        assert_eq!(ips(&m), ["10.9.8.2/32", "10.244.3.0/24", "10.250.0.0/16"]);
        m.advertised_routes.clear();
        assert_eq!(ips(&m), ["10.9.8.2/32"]);
        let view = m.view(&v4_network(), false);
        assert_eq!(view.approved_routes.len(), 2);
        assert!(view.advertised_routes.is_empty());
    }

    #[test]
    fn routes_cleaned_and_parsed() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            clean_routes(&[
                net("10.244.3.7/24"),
                net("10.244.3.0/24"),
                net("0.0.0.0/0"),
                net("fd00::/64")
            ]),
            vec![net("10.244.3.0/24"), net("fd00::/64")]
        );
        let many: Vec<IpNet> = (0..=255).map(|i| net(&format!("10.{i}.0.0/16"))).collect();
        assert_eq!(clean_routes(&many).len(), MAX_ROUTES);
        assert_eq!(parse_route("10.244.3.0/24").unwrap(), net("10.244.3.0/24"));
        for bad in ["10.244.3.1/24", "10.244.3.0", "x", "10.244.3.0/33"] {
            assert!(
                matches!(parse_route(bad), Err(ModelError::Route(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn route_conflicts() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let network = Network {
            cidr6: None,
            name: "lab".into(),
            cidr: net("10.9.8.0/24"),
            mtu: 1280,
            keepalive: 25,
            version: 1,
            policy: None,
            dns_domain: None,
        };
        let a = member(1, "10.9.8.2");
        let mut b = member(2, "10.9.8.3");
        b.approved_routes = vec![net("10.244.2.0/24")];
        let members = [a.clone(), b.clone()];
        let conflict = |key: &Key, r: &str| route_conflict(&network, key, &net(r), &members);
        assert_eq!(conflict(&a.public_key, "10.244.1.0/24"), None);
        // The member's own approved routes are no conflict (re-approving is idempotent).
        assert_eq!(conflict(&b.public_key, "10.244.2.0/24"), None);
        for bad in [
            "10.244.2.0/24",
            "10.244.2.128/25",
            "10.244.0.0/16",
            "0.0.0.0/0",
        ] {
            let why = conflict(&a.public_key, bad).unwrap_or_else(|| panic!("{bad}"));
            assert!(why.contains("n2") || why.contains("network"), "{why}");
        }
        for bad in ["10.9.8.0/24", "10.9.8.128/25", "10.0.0.0/8"] {
            let why = conflict(&a.public_key, bad).unwrap_or_else(|| panic!("{bad}"));
            assert!(why.contains("network's prefix"), "{bad}: {why}");
        }
        assert_eq!(conflict(&a.public_key, "fd00::/64"), None);
    }

    #[test]
    fn token_hash_round_trips() {
        let t = Token {
            id: "abc".into(),
            network: "lab".into(),
            secret_hash: [0xa5; 32],
            reusable: false,
            expires_at: None,
            revoked: false,
            uses: 0,
            created_at: 1,
            tags: vec!["worker".into()],
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(&"a5".repeat(32)));
        assert_eq!(serde_json::from_str::<Token>(&json).unwrap(), t);
    }
}
