//! The coordinator's records (what the [`Store`](crate::store::Store) keeps) and the rules
//! for the names and settings admins and nodes hand in.
//!
//! Records serialise as JSON with kebab-case fields; fields are only ever added, with a
//! serde default, so a newer coordinator reads an older data directory.

use std::net::{IpAddr, SocketAddr};

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
}

impl Network {
    /// The settings part of a netmap.
    pub fn info(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            cidr: self.cidr,
            mtu: self.mtu,
            keepalive: self.keepalive,
        }
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

    /// The member as a peer in other members' netmaps.
    pub fn peer_info(&self) -> PeerInfo {
        PeerInfo {
            public_key: self.public_key,
            name: self.name.clone(),
            address: self.address,
            allowed_ips: vec![IpNet::from(self.address)],
            endpoints: self.candidates(),
        }
    }

    /// The admin API's view.
    pub fn view(&self, online: bool) -> MemberView {
        MemberView {
            public_key: self.public_key,
            fingerprint: self.public_key.fingerprint(),
            name: self.name.clone(),
            address: self.address,
            authorized: self.authorized,
            online,
            last_seen: self.last_seen,
            version: self.version.clone(),
            endpoints: self.candidates(),
            public_endpoint: self.public_endpoint,
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
        };
        assert_eq!(
            m.candidates(),
            vec![
                "203.0.113.1:51820".parse::<SocketAddr>().unwrap(),
                "192.168.1.2:51820".parse().unwrap()
            ]
        );
        assert_eq!(m.peer_info().allowed_ips[0].to_string(), "10.0.0.1/32");
    }

    #[test]
    fn candidates_order_public_reflexive_observed_local() {
        let ep = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mut m = Member {
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
        assert_eq!(m.view(false).public_endpoint, Some(ep("198.51.100.9:7000")));
        // Bounded.
        m.local_endpoints = (1..=40).map(|i| ep(&format!("10.1.0.{i}:1"))).collect();
        assert_eq!(m.candidates().len(), MAX_ENDPOINTS);
        assert_eq!(m.candidates()[0], ep("198.51.100.9:7000"));
    }

    #[test]
    fn older_member_records_still_load() {
        let json = r#"{"public-key":"m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs=","name":"a",
            "address":"10.0.0.1","authorized":true,"created-at":1}"#;
        let m: Member = serde_json::from_str(json).unwrap();
        assert!(m.reflexive_endpoints.is_empty() && m.public_endpoint.is_none());
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
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(&"a5".repeat(32)));
        assert_eq!(serde_json::from_str::<Token>(&json).unwrap(), t);
    }
}
