//! The coordinator set as this coordinator sees it through a shared store: who else is
//! alive and what it advertises ([`Registration`]), which members are online elsewhere,
//! and from that the services every member is told about.
//!
//! **Relay choice.** Two members of a network must meet at one relay, whichever
//! coordinators their control sessions are on. Every coordinator picks, per network, the
//! same *meeting relay*: among the live registrations that offer a relay, sorted by id, the
//! one at `hash(network) mod n`. Each coordinator computes it from the same registrations,
//! so a network's members are all sent the same relay; networks spread over the relays.
//! When that coordinator dies its lease expires ([`crate::store::LEASE_TTL`]), the
//! registrations change everywhere, and every session re-sends [`ServerMsg::Services`] with
//! the next relay. Cost: relayed traffic of a network crosses one coordinator, possibly not
//! the one its members' sessions are on, and a relay failure costs relayed pairs the lease
//! TTL plus one registration round. Relays never forward to each other.
//!
//! [`ServerMsg::Services`]: mesh_proto::control::ServerMsg::Services

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex as StdMutex;

use mesh_proto::Key;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Coordinator;
use crate::store::Presence;

/// What a coordinator advertises to the others (stored under its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Registration {
    /// Control (QUIC) addresses nodes dial, `host:port`.
    pub control: Vec<String>,
    /// Its relay, `host:port`, if it relays.
    #[serde(default)]
    pub relay: Option<String>,
    /// Its relay in every advertised family (`relay` first); empty from a coordinator
    /// before dual-stack underlays.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
    /// Its reflectors, `host:port`.
    #[serde(default)]
    pub reflectors: Vec<String>,
}

/// What this coordinator knows of the others.
pub(super) struct Cluster {
    /// Members online elsewhere: (network, key) → the coordinators holding a session.
    presence: StdMutex<HashMap<(String, Key), BTreeSet<String>>>,
    /// Live coordinators by id (this one included once it registered).
    registrations: StdMutex<BTreeMap<String, Registration>>,
    /// Bumped whenever `registrations` changes: sessions re-send their services.
    generation: watch::Sender<u64>,
}

impl Cluster {
    pub(super) fn new(presence: &[Presence], coordinators: &[(String, Vec<u8>)]) -> Cluster {
        let mut map: HashMap<(String, Key), BTreeSet<String>> = HashMap::new();
        for p in presence.iter().filter(|p| p.online) {
            map.entry((p.network.clone(), p.key))
                .or_default()
                .insert(p.coordinator.clone());
        }
        let registrations = coordinators
            .iter()
            .filter_map(|(id, info)| {
                Some((
                    id.clone(),
                    serde_json::from_slice::<Registration>(info).ok()?,
                ))
            })
            .collect();
        Cluster {
            presence: StdMutex::new(map),
            registrations: StdMutex::new(registrations),
            generation: watch::Sender::new(0),
        }
    }

    fn registrations(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Registration>> {
        self.registrations.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn presence(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Key), BTreeSet<String>>> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_registration(&self, id: &str, reg: Option<Registration>) {
        let changed = {
            let mut regs = self.registrations();
            match reg {
                Some(r) => regs.insert(id.to_owned(), r.clone()) != Some(r),
                None => regs.remove(id).is_some(),
            }
        };
        if changed {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

/// FNV-1a: a hash every coordinator computes alike (std's `DefaultHasher` promises no
/// stability across builds).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The meeting relay of `network` among `registrations`.
#[cfg(test)]
fn meeting_relay(registrations: &BTreeMap<String, Registration>, network: &str) -> Option<String> {
    meeting_registration(registrations, network).and_then(|r| r.relay.clone())
}

/// The registration whose relay is `network`'s meeting relay (see the module doc): the
/// same on every coordinator that sees the same registrations.
fn meeting_registration<'a>(
    registrations: &'a BTreeMap<String, Registration>,
    network: &str,
) -> Option<&'a Registration> {
    let relays: Vec<&Registration> = registrations
        .values()
        .filter(|r| r.relay.is_some())
        .collect();
    if relays.is_empty() {
        return None;
    }
    let i = usize::try_from(stable_hash(network) % relays.len() as u64).unwrap_or(0);
    Some(relays[i])
}

impl Coordinator {
    /// Announces this coordinator to the others (and to itself): a shared store keeps the
    /// registration while the process lives.
    pub fn register(&self, reg: Registration) {
        self.store
            .register(&self.id, serde_json::to_vec(&reg).unwrap_or_default());
        self.cluster.set_registration(&self.id, Some(reg));
    }

    /// Another coordinator registered or went away.
    pub(super) fn remote_coordinator(&self, id: &str, info: Option<Vec<u8>>) {
        let reg = info.and_then(|i| serde_json::from_slice::<Registration>(&i).ok());
        if id == self.id && reg.is_none() {
            // Our own registration expired (a partition longer than the lease): the
            // store's lease task writes it again; keep using it meanwhile.
            return;
        }
        match &reg {
            Some(_) => tracing::info!(coordinator = %id, "coordinator registered"),
            None => tracing::warn!(coordinator = %id, "coordinator gone (its lease expired)"),
        }
        self.cluster.set_registration(id, reg);
        if id != self.id {
            // Whoever was online only there is offline now unless it registers again.
            self.changes.bump();
        }
    }

    /// A member came online at, or left, another coordinator.
    pub(super) fn remote_presence(&self, p: Presence) {
        if p.coordinator == self.id {
            return;
        }
        {
            let mut map = self.cluster.presence();
            let slot = (p.network, p.key);
            if p.online {
                map.entry(slot).or_default().insert(p.coordinator);
            } else if let Some(set) = map.get_mut(&slot) {
                set.remove(&p.coordinator);
                if set.is_empty() {
                    map.remove(&slot);
                }
            }
        }
        self.changes.bump();
    }

    /// Whether a member has a session at another live coordinator.
    pub(super) fn online_elsewhere(&self, net: &str, key: &Key) -> bool {
        let map = self.cluster.presence();
        map.get(&(net.to_owned(), *key)).is_some_and(|set| {
            let regs = self.cluster.registrations();
            set.iter().any(|c| *c != self.id && regs.contains_key(c))
        })
    }

    /// Members online at other live coordinators, per network.
    pub(super) fn online_elsewhere_counts(&self) -> HashMap<String, usize> {
        let map = self.cluster.presence();
        let regs = self.cluster.registrations();
        let mut out: HashMap<String, usize> = HashMap::new();
        for ((net, _), set) in map.iter() {
            if set.iter().any(|c| *c != self.id && regs.contains_key(c)) {
                *out.entry(net.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Every live coordinator's registration, by id.
    pub fn coordinators(&self) -> BTreeMap<String, Registration> {
        self.cluster.registrations().clone()
    }

    /// Every control address nodes may dial: the configured ones, then every live
    /// coordinator's (by id), each once.
    pub fn control_addresses(&self) -> Vec<String> {
        let mut out = self.join.coordinators.clone();
        for reg in self.cluster.registrations().values() {
            for a in &reg.control {
                if !out.contains(a) {
                    out.push(a.clone());
                }
            }
        }
        out
    }

    /// The relay members of `net` are told about: the meeting relay of the coordinator
    /// set, or this coordinator's own when none registered one; with its address in every
    /// advertised family (empty when it has one only).
    pub fn relay_for(&self, net: &str) -> (Option<String>, Vec<String>) {
        let registrations = self.cluster.registrations();
        match meeting_registration(&registrations, net) {
            Some(r) => (r.relay.clone(), r.relays.clone()),
            None => self
                .services
                .as_ref()
                .map(|s| (s.relay.clone(), s.relays.clone()))
                .unwrap_or_default(),
        }
    }

    /// Changes whenever the coordinator set changes (sessions re-send their services).
    pub(crate) fn cluster_changes(&self) -> watch::Receiver<u64> {
        self.cluster.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(relay: &str) -> Registration {
        Registration {
            control: vec![format!("{relay}:7443")],
            relay: Some(format!("{relay}:7446")),
            relays: vec![],
            reflectors: vec![],
        }
    }

    #[test]
    fn every_coordinator_picks_the_same_meeting_relay() {
        let mut regs = BTreeMap::new();
        assert_eq!(meeting_relay(&regs, "lab"), None);
        regs.insert("c".to_owned(), reg("203.0.113.3"));
        regs.insert("a".to_owned(), reg("203.0.113.1"));
        regs.insert("b".to_owned(), reg("203.0.113.2"));
        let picks: Vec<String> = (0..20)
            .map(|i| meeting_relay(&regs, &format!("net{i}")).unwrap())
            .collect();
        // Deterministic, and networks spread over more than one relay.
        let again: Vec<String> = (0..20)
            .map(|i| meeting_relay(&regs.clone(), &format!("net{i}")).unwrap())
            .collect();
        assert_eq!(picks, again);
        let distinct: BTreeSet<&String> = picks.iter().collect();
        assert!(distinct.len() > 1, "{picks:?}");
        // A dead coordinator's relay is never picked again.
        let dead = picks[0].clone();
        regs.retain(|_, r| r.relay.as_ref() != Some(&dead));
        for i in 0..20 {
            assert_ne!(meeting_relay(&regs, &format!("net{i}")).unwrap(), dead);
        }
        assert_eq!(stable_hash("lab"), stable_hash("lab"));
        assert_ne!(stable_hash("lab"), stable_hash("lab2"));
    }
}
