//! The netmap: what a member of a network needs to know to reach the others, and its
//! changes as data.
//!
//! The coordinator computes a member's [`Netmap`]; it sends the whole map on first contact
//! and [`PeerChange`]s afterwards, each batch tagged with the network's version. Nodes
//! apply changes with [`Netmap::apply`]; [`diff`] computes the changes between two maps
//! (the coordinator uses it for resuming nodes, meshd to touch only the peers that changed).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Key;

/// Network-wide settings every member applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NetworkInfo {
    /// The network's name, e.g. `lab`.
    pub name: String,
    /// The overlay prefix addresses come from, e.g. `10.9.8.0/24`.
    pub cidr: IpNet,
    /// Interface MTU for members.
    pub mtu: u16,
    /// Persistent keepalive in seconds (0 = off).
    pub keepalive: u16,
    /// The network's IPv6 prefix beside an IPv4 [`NetworkInfo::cidr`] (a ULA /64 unless an
    /// admin chose one); absent from coordinators before dual stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<IpNet>,
}

/// One other member, as a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PeerInfo {
    /// Its WireGuard public key (the member's identity).
    pub public_key: Key,
    /// Its name (hostname unless an admin renamed it).
    pub name: String,
    /// Its overlay address.
    pub address: IpAddr,
    /// Its IPv6 overlay address in a dual-stack network ([`NetworkInfo::cidr6`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    /// Prefixes routed to it: its address as /32 (or /128), its IPv6 address as /128, then
    /// the routes it advertises that an admin approved.
    pub allowed_ips: Vec<IpNet>,
    /// Where it may be reached, best first.
    pub endpoints: Vec<SocketAddr>,
}

/// A member's whole view of its network at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Netmap {
    /// The network version this map reflects; it only grows.
    pub version: u64,
    /// The network's settings.
    pub network: NetworkInfo,
    /// This member's own overlay address with the network's prefix length.
    pub address: IpNet,
    /// This member's IPv6 overlay address with [`NetworkInfo::cidr6`]'s prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<IpNet>,
    /// This member's name.
    pub name: String,
    /// Every other authorised member, by public key. Decoding refuses a peer filed under
    /// another key than its own: [`diff`] and [`Netmap::apply`] go by these keys.
    #[serde(deserialize_with = "peers_by_key")]
    pub peers: BTreeMap<Key, PeerInfo>,
}

/// The `peers` map of a [`Netmap`], each peer under its own public key.
fn peers_by_key<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<Key, PeerInfo>, D::Error> {
    let peers = BTreeMap::<Key, PeerInfo>::deserialize(d)?;
    match peers.iter().find(|(key, peer)| **key != peer.public_key) {
        Some((key, peer)) => Err(serde::de::Error::custom(format!(
            "peer {} is listed under the key {}",
            peer.public_key.fingerprint(),
            key.fingerprint()
        ))),
        None => Ok(peers),
    }
}

/// One change to a netmap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum PeerChange {
    /// A peer appeared, or some of its fields changed.
    Upsert {
        /// Its full new description.
        peer: PeerInfo,
    },
    /// A peer left, was deauthorised or deleted.
    Remove {
        /// Which one.
        public_key: Key,
    },
    /// This member's own address or name changed.
    SelfUpdate {
        /// The new address (with the network prefix length).
        address: IpNet,
        /// The new IPv6 address (with the IPv6 prefix length), in a dual-stack network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address6: Option<IpNet>,
        /// The new name.
        name: String,
    },
    /// The network's settings changed.
    Network {
        /// The new settings.
        network: NetworkInfo,
    },
}

impl Netmap {
    /// Applies `changes` in order and moves to `version`. Changes are idempotent, so
    /// replaying a batch the node already has is harmless.
    pub fn apply(&mut self, version: u64, changes: &[PeerChange]) {
        for change in changes {
            match change {
                PeerChange::Upsert { peer } => {
                    self.peers.insert(peer.public_key, peer.clone());
                }
                PeerChange::Remove { public_key } => {
                    self.peers.remove(public_key);
                }
                PeerChange::SelfUpdate {
                    address,
                    address6,
                    name,
                } => {
                    self.address = *address;
                    self.address6 = *address6;
                    self.name.clone_from(name);
                }
                PeerChange::Network { network } => self.network = network.clone(),
            }
        }
        self.version = self.version.max(version);
    }
}

/// The changes that turn `old` into `new`: network settings first, then this member,
/// then removed peers, then added or changed peers (in key order, so output is stable).
pub fn diff(old: &Netmap, new: &Netmap) -> Vec<PeerChange> {
    let mut changes = Vec::new();
    if old.network != new.network {
        changes.push(PeerChange::Network {
            network: new.network.clone(),
        });
    }
    if old.address != new.address || old.address6 != new.address6 || old.name != new.name {
        changes.push(PeerChange::SelfUpdate {
            address: new.address,
            address6: new.address6,
            name: new.name.clone(),
        });
    }
    for key in old.peers.keys() {
        if !new.peers.contains_key(key) {
            changes.push(PeerChange::Remove { public_key: *key });
        }
    }
    for (key, peer) in &new.peers {
        if old.peers.get(key) != Some(peer) {
            changes.push(PeerChange::Upsert { peer: peer.clone() });
        }
    }
    changes
}

#[cfg(test)]
#[allow(clippy::cloned_ref_to_slice_refs)] // the tables read better with clones
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key([b; 32])
    }

    fn peer(b: u8, addr: &str) -> PeerInfo {
        let address: IpAddr = addr.parse().unwrap();
        PeerInfo {
            address6: None,
            public_key: key(b),
            name: format!("n{b}"),
            address,
            allowed_ips: vec![IpNet::from(address)],
            endpoints: vec![format!("198.51.100.{b}:51820").parse().unwrap()],
        }
    }

    fn map(version: u64, peers: &[PeerInfo]) -> Netmap {
        Netmap {
            address6: None,
            version,
            network: NetworkInfo {
                cidr6: None,
                name: "lab".into(),
                cidr: "10.9.8.0/24".parse().unwrap(),
                mtu: 1280,
                keepalive: 25,
            },
            address: "10.9.8.1/24".parse().unwrap(),
            name: "self".into(),
            peers: peers.iter().map(|p| (p.public_key, p.clone())).collect(),
        }
    }

    #[test]
    fn diff_table() {
        let a = peer(2, "10.9.8.2");
        let b = peer(3, "10.9.8.3");
        let mut b_moved = b.clone();
        b_moved.endpoints = vec!["203.0.113.3:4000".parse().unwrap()];
        let c = peer(4, "10.9.8.4");
        let cases: Vec<(&str, Netmap, Netmap, Vec<PeerChange>)> = vec![
            (
                "nothing",
                map(1, &[a.clone()]),
                map(2, &[a.clone()]),
                vec![],
            ),
            (
                "add",
                map(1, &[a.clone()]),
                map(2, &[a.clone(), c.clone()]),
                vec![PeerChange::Upsert { peer: c.clone() }],
            ),
            (
                "remove",
                map(1, &[a.clone(), b.clone()]),
                map(2, &[b.clone()]),
                vec![PeerChange::Remove {
                    public_key: a.public_key,
                }],
            ),
            (
                "update",
                map(1, &[a.clone(), b.clone()]),
                map(2, &[a.clone(), b_moved.clone()]),
                vec![PeerChange::Upsert {
                    peer: b_moved.clone(),
                }],
            ),
            (
                "all at once",
                map(1, &[a.clone(), b.clone()]),
                map(2, &[b_moved.clone(), c.clone()]),
                vec![
                    PeerChange::Remove {
                        public_key: a.public_key,
                    },
                    PeerChange::Upsert {
                        peer: b_moved.clone(),
                    },
                    PeerChange::Upsert { peer: c.clone() },
                ],
            ),
        ];
        for (name, old, new, want) in cases {
            let got = diff(&old, &new);
            assert_eq!(got, want, "{name}");
            // Applying the diff reproduces the new map.
            let mut applied = old.clone();
            applied.apply(new.version, &got);
            assert_eq!(applied, new, "{name}: apply(diff) != new");
        }
    }

    #[test]
    fn self_and_network_changes() {
        let old = map(1, &[]);
        let mut new = map(5, &[]);
        new.address = "10.9.8.77/24".parse().unwrap();
        new.network.mtu = 1380;
        let changes = diff(&old, &new);
        assert!(matches!(changes[0], PeerChange::Network { .. }));
        assert!(matches!(changes[1], PeerChange::SelfUpdate { .. }));
        let mut applied = old.clone();
        applied.apply(5, &changes);
        assert_eq!(applied, new);
    }

    #[test]
    fn peers_are_listed_under_their_own_key() {
        // Found by fuzz/fuzz_targets/control_stream_meshd.rs: a JSON netmap filing node-2's
        // entry under another key decoded, and `diff` against the next map then upserted
        // the entry under its own key and kept the stale one (apply(diff) != new).
        let found = r#"{"type":"netmap","netmap":{"version":42,"network":{"name":"lab","cidr":"10.9.8.0/24","mtu":1280,"keepalive":25},"address":"65.9.8.17/24","name":"me","peers":{"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=":{"public-key":"AgICAgICAgICAgICAgICAgICAgIACgICAgICAgICAgI=","name":"node-2","address":"10.9.8.2","allowed-ips":["10.9.8.2/32","10.244.2.0/24"],"endpoints":["192.168.1.2:51820","[2001:db8::7]:41641"]},"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=":{"public-key":"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=","name":"node-3","address":"10.9.8.3","allowed-ips":["10.9.8.3/32","10.244.3.0/24"],"endpoints":["192.168.1.3:51820","[2001:db8::7]:41641"]}}}}"#;
        let err = crate::control::decode_server(found.as_bytes(), &key(0x11)).unwrap_err();
        assert!(err.to_string().contains("is listed under the key"), "{err}");
        // The same map with node-2 under its own key decodes.
        let fixed = found.replacen(
            "AgICAgICAgICAgICAgICAgICAgIACgICAgICAgICAgI=",
            &key(2).to_base64(),
            1,
        );
        let crate::control::ServerMsg::Netmap { netmap } =
            crate::control::decode_server(fixed.as_bytes(), &key(0x11)).unwrap()
        else {
            panic!("not a netmap");
        };
        assert!(netmap.peers.iter().all(|(k, p)| *k == p.public_key));
        // And what is encoded decodes.
        let m = map(1, &[peer(2, "10.9.8.2"), peer(3, "10.9.8.3")]);
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Netmap>(&text).unwrap(), m);
    }

    #[test]
    fn apply_is_idempotent_and_version_never_decreases() {
        let a = peer(2, "10.9.8.2");
        let mut m = map(3, &[]);
        let changes = vec![PeerChange::Upsert { peer: a.clone() }];
        m.apply(4, &changes);
        m.apply(4, &changes);
        m.apply(2, &[]);
        assert_eq!(m.version, 4);
        assert_eq!(m.peers.len(), 1);
    }
}
