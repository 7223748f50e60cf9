//! What meshd remembers about its network across restarts, in sled under the state
//! directory: the membership (coordinators, pin, network, pending join secret), the last
//! netmap applied and the policy filter in force (the last that applied, and the peers
//! failed closed since). With these cached, a restarted meshd brings its tunnels back, and
//! enforces its filter on them, before (and without) reaching the coordinator.

use std::path::Path;

use anyhow::Context as _;
use mesh_proto::control::{CertPin, JoinSecret};
use mesh_proto::netmap::Netmap;
use serde::{Deserialize, Serialize};

const MEMBERSHIP: &[u8] = b"membership";
const NETMAP: &[u8] = b"netmap";
const SERVICES: &[u8] = b"services";
/// The network's DNS domain ([`mesh_proto::control::ServerMsg::Names`]).
const DOMAIN: &[u8] = b"domain";
const FILTER: &[u8] = b"filter";

/// The network this node joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Membership {
    /// Network name.
    pub network: String,
    /// Coordinator control addresses (`host:port`): those of the join, replaced by the
    /// list the coordinators advertise (never by an empty one); tried in the order
    /// `attempt_order` gives.
    pub coordinators: Vec<String>,
    /// The coordinator certificate pin.
    pub pin: CertPin,
    /// A join token's secret, kept until the coordinator has authorised this node once.
    pub join: Option<JoinSecret>,
}

/// The sled database; every write is flushed before it returns.
#[derive(Debug, Clone)]
pub struct Cache {
    db: sled::Db,
}

impl Cache {
    /// Opens (or creates) the cache in `dir/cache`.
    pub fn open(dir: &Path) -> anyhow::Result<Cache> {
        let path = dir.join("cache");
        let db =
            sled::open(&path).with_context(|| format!("opening state cache {}", path.display()))?;
        Ok(Cache { db })
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> anyhow::Result<Option<T>> {
        match self.db.get(key)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "state cache entry {:?} is corrupt",
                    String::from_utf8_lossy(key)
                )
            })?)),
        }
    }

    fn put<T: Serialize>(&self, key: &[u8], value: Option<&T>) -> anyhow::Result<()> {
        match value {
            Some(v) => {
                self.db.insert(key, serde_json::to_vec(v)?)?;
            }
            None => {
                self.db.remove(key)?;
            }
        }
        self.db.flush().context("flushing the state cache")?;
        Ok(())
    }

    /// The membership, if this node joined a network.
    pub fn membership(&self) -> anyhow::Result<Option<Membership>> {
        self.get(MEMBERSHIP)
    }

    /// Stores (or with `None`, forgets) the membership.
    pub fn set_membership(&self, m: Option<&Membership>) -> anyhow::Result<()> {
        self.put(MEMBERSHIP, m)
    }

    /// The last netmap applied.
    pub fn netmap(&self) -> anyhow::Result<Option<Netmap>> {
        self.get(NETMAP)
    }

    /// Stores (or with `None`, forgets) the netmap.
    pub fn set_netmap(&self, m: Option<&Netmap>) -> anyhow::Result<()> {
        self.put(NETMAP, m)
    }

    /// The coordinator's NAT traversal services, as last received.
    pub fn services(&self) -> anyhow::Result<Option<super::session::Services>> {
        self.get(SERVICES)
    }

    /// Stores (or with `None`, forgets) the services.
    pub fn set_services(&self, s: Option<&super::session::Services>) -> anyhow::Result<()> {
        self.put(SERVICES, s)
    }

    /// The network's DNS domain as the coordinator last sent it.
    pub fn domain(&self) -> anyhow::Result<Option<String>> {
        self.get(DOMAIN)
    }

    /// Stores the network's DNS domain.
    pub fn set_domain(&self, domain: &str) -> anyhow::Result<()> {
        self.put(DOMAIN, Some(&domain.to_owned()))
    }

    /// The policy filter state last in force.
    pub fn filter(&self) -> anyhow::Result<Option<crate::device::filter::Saved>> {
        self.get(FILTER)
    }

    /// Stores (or with `None`, forgets) the policy filter state.
    pub fn set_filter(&self, f: Option<&crate::device::filter::Saved>) -> anyhow::Result<()> {
        self.put(FILTER, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = Membership {
            network: "lab".into(),
            coordinators: vec!["203.0.113.1:7443".into()],
            pin: CertPin([1; 32]),
            join: None,
        };
        {
            let cache = Cache::open(dir.path()).unwrap();
            assert_eq!(cache.membership().unwrap(), None);
            cache.set_membership(Some(&m)).unwrap();
        }
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.membership().unwrap(), Some(m));
        cache.set_membership(None).unwrap();
        assert_eq!(cache.membership().unwrap(), None);
    }

    /// The filter state comes back whole after a restart: the filter, the peers failed
    /// closed and the error.
    #[test]
    fn filter_survives_reopen() {
        use mesh_proto::policy::{Action, Entry, NodeFilter, PeerFilter, Ports};
        let dir = tempfile::tempdir().unwrap();
        let entry = Entry {
            action: Action::Allow,
            ports: Ports::parse("tcp/22").unwrap(),
            src: None,
            dst: Some("10.9.8.0/24".parse().unwrap()),
            rule: 3,
            line: 17,
        };
        let saved = crate::device::filter::Saved {
            network: "lab".into(),
            filter: Some(NodeFilter {
                default: Action::Deny,
                peers: [(
                    mesh_proto::Key([5; 32]),
                    PeerFilter {
                        inbound: vec![entry],
                        outbound: vec![],
                    },
                )]
                .into(),
            }),
            closed: crate::device::filter::Closed {
                all: false,
                peers: [mesh_proto::Key([6; 32])].into(),
            },
            error: Some("hash mismatch".into()),
        };
        {
            let cache = Cache::open(dir.path()).unwrap();
            assert_eq!(cache.filter().unwrap(), None);
            cache.set_filter(Some(&saved)).unwrap();
        }
        let cache = Cache::open(dir.path()).unwrap();
        let back = cache.filter().unwrap().unwrap();
        assert_eq!(back, saved);
        assert_eq!(back.hash(), saved.hash());
        cache.set_filter(None).unwrap();
        assert_eq!(cache.filter().unwrap(), None);
    }
}
