//! Control-plane operations: what a node's session ([`crate::control::session`]) calls after the
//! node proved its key: admission (token or pending), endpoint updates, path reports,
//! last-seen, and the change-log records a resuming node needs.

use std::net::SocketAddr;
use std::sync::Arc;

use std::collections::BTreeSet;

use mesh_proto::control::{ct_eq, secret_hash, Hello, PeerPathReport, MAX_PATH_REPORT};
use mesh_proto::Key;
use tokio::sync::watch;

use super::{Change, Coordinator, Error, SessionGuard, LOG_KEEP};
use crate::control::ipam::{self, IpamError};
use crate::control::snapshot::Snapshot;
use crate::model::{
    clean_routes, clean_version, member_name_from_hello, ChangeRecord, Member, Token, MAX_ENDPOINTS,
};
use crate::store::StoreError;

/// Why a node is refused at admission; the text is the `Denied` reason it is sent.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The network does not exist.
    #[error("unknown network {0:?}")]
    UnknownNetwork(String),
    /// No token with that id, or a wrong secret.
    #[error("invalid join token")]
    BadToken,
    /// The token admits to another network.
    #[error("join token {id} is for network {token_network:?}, not {network:?}")]
    WrongNetwork {
        /// Token id.
        id: String,
        /// The token's network.
        token_network: String,
        /// The network asked for.
        network: String,
    },
    /// Revoked by an admin.
    #[error("join token {0} was revoked")]
    Revoked(String),
    /// Past its expiry.
    #[error("join token {0} has expired")]
    Expired(String),
    /// A one-time token that was used already.
    #[error("join token {0} was already used (it is one-time)")]
    Used(String),
    /// No address left for a new member.
    #[error("{0}")]
    NoAddress(IpamError),
    /// Storage failed.
    #[error("coordinator storage failed, try again later")]
    Store(#[from] StoreError),
    /// Anything else that should not happen.
    #[error("coordinator error: {0}")]
    Internal(String),
}

impl super::Raced for AdmitError {
    fn raced(&self) -> Option<(&str, crate::store::Revision)> {
        match self {
            AdmitError::Store(e) => super::raced(e),
            _ => None,
        }
    }
}

impl From<Error> for AdmitError {
    fn from(e: Error) -> AdmitError {
        match e {
            Error::Store(e) => AdmitError::Store(e),
            other => AdmitError::Internal(other.to_string()),
        }
    }
}

/// What a node's `Endpoints` message says ([`ClientMsg::Endpoints`]).
///
/// [`ClientMsg::Endpoints`]: mesh_proto::control::ClientMsg::Endpoints
#[derive(Debug, Clone, Copy)]
pub struct EndpointReport<'a> {
    /// WireGuard UDP port.
    pub listen_port: u16,
    /// Local interface addresses with the WireGuard port.
    pub local: &'a [SocketAddr],
    /// What the reflectors saw, best first.
    pub reflexive: &'a [SocketAddr],
}

/// Why a path report ([`ClientMsg::Paths`]) was not kept. Never a reason to end a session.
///
/// [`ClientMsg::Paths`]: mesh_proto::control::ClientMsg::Paths
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathsIgnored {
    /// More entries than [`MAX_PATH_REPORT`].
    #[error("a report of {0} peers exceeds the {MAX_PATH_REPORT}-peer limit")]
    TooLong(usize),
    /// The member is not (or no longer) authorised, or gone.
    #[error("the member is not authorised")]
    NotAuthorised,
    /// A newer session of the member took over.
    #[error("the session was replaced")]
    Replaced,
}

/// A node let in (authorised or pending): the network's snapshots.
#[derive(Debug)]
pub struct Admitted {
    /// Snapshots of the member's network, the current one marked unseen.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
}

/// The endpoint candidates a node's report yields: the address its QUIC connection comes
/// from with its WireGuard port, then its local addresses (no unspecified addresses, no
/// port 0, at most [`MAX_ENDPOINTS`]).
pub fn reported_endpoints(
    remote: SocketAddr,
    listen_port: u16,
    local: &[SocketAddr],
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let observed = if listen_port == 0 {
        Vec::new()
    } else {
        vec![SocketAddr::new(remote.ip().to_canonical(), listen_port)]
    };
    (observed, clean_endpoints(local))
}

/// Reported addresses as candidates: IPv4-mapped IPv6 as IPv4, without unspecified or
/// multicast addresses, port 0 or duplicates, at most [`MAX_ENDPOINTS`], order kept.
pub fn clean_endpoints(reported: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for ep in reported {
        let ep = SocketAddr::new(ep.ip().to_canonical(), ep.port());
        if out.len() == MAX_ENDPOINTS {
            break;
        }
        let usable = ep.port() != 0 && !ep.ip().is_unspecified() && !ep.ip().is_multicast();
        if usable && !out.contains(&ep) {
            out.push(ep);
        }
    }
    out
}

/// A join waiting to be admitted ([`Coordinator::admit_batch`]).
pub(crate) struct PendingJoin {
    hello: Hello,
    remote: SocketAddr,
    tx: tokio::sync::oneshot::Sender<Result<watch::Receiver<Arc<Snapshot>>, AdmitError>>,
}

/// One batch's failure, as each of its joins reports it (a race stays a race, so each
/// join is retried after catching up).
fn shared_error(e: &Error) -> AdmitError {
    match e {
        Error::Store(StoreError::Conflict { network, expected }) => {
            AdmitError::Store(StoreError::Conflict {
                network: network.clone(),
                expected: *expected,
            })
        }
        Error::Store(StoreError::Unavailable(why)) => {
            AdmitError::Store(StoreError::Unavailable(why.clone()))
        }
        other => AdmitError::Internal(other.to_string()),
    }
}

/// What admitting `hello` makes of its member, against the network as it is plus the
/// joins decided before it in the same batch (`by_addr` holds their addresses, `batch`
/// their members, `tokens` the token uses so far).
#[allow(clippy::too_many_arguments)]
fn decide_join(
    ns: &super::NetState,
    all_tokens: &std::collections::BTreeMap<String, Token>,
    hello: &Hello,
    remote: SocketAddr,
    now: u64,
    by_addr: &mut std::collections::BTreeMap<std::net::IpAddr, Key>,
    batch: &[Member],
    tokens: &mut std::collections::BTreeMap<String, Token>,
) -> Result<Member, AdmitError> {
    let net = hello.network.as_str();
    let key = hello.public_key;
    let (endpoints, local_endpoints) = reported_endpoints(remote, hello.listen_port, &hello.local);
    let existing = batch
        .iter()
        .find(|m| m.public_key == key)
        .or_else(|| ns.members.get(&key))
        .cloned();
    let mut authorize = false;
    // Tags of the token a new member joins with.
    let mut token_tags: Vec<String> = Vec::new();
    if let Some(join) = &hello.join {
        let token = tokens
            .get(&join.id)
            .or_else(|| all_tokens.get(&join.id))
            .filter(|t| ct_eq(&secret_hash(&join.secret), &t.secret_hash))
            .ok_or(AdmitError::BadToken)?;
        if token.network != net {
            return Err(AdmitError::WrongNetwork {
                id: token.id.clone(),
                token_network: token.network.clone(),
                network: net.to_owned(),
            });
        }
        // A member that is authorised already needs no token: a retry after a lost
        // answer must not fail on its own one-time token.
        if !existing.as_ref().is_some_and(|m| m.authorized) {
            if token.revoked {
                return Err(AdmitError::Revoked(token.id.clone()));
            }
            if token.expires_at.is_some_and(|at| now >= at) {
                return Err(AdmitError::Expired(token.id.clone()));
            }
            if !token.reusable && token.uses > 0 {
                return Err(AdmitError::Used(token.id.clone()));
            }
            token_tags.clone_from(&token.tags);
            let mut used = token.clone();
            used.uses += 1;
            tokens.insert(used.id.clone(), used);
        }
        authorize = true;
    }
    let mut member = match existing {
        Some(m) => m,
        None => {
            let address =
                ipam::next_free(&ns.network.cidr, by_addr).map_err(AdmitError::NoAddress)?;
            by_addr.insert(address, key);
            Member {
                address6: None,
                public_key: key,
                name: member_name_from_hello(&hello.name, &key),
                address,
                authorized: false,
                created_at: now,
                last_seen: None,
                version: String::new(),
                endpoints: Vec::new(),
                local_endpoints: Vec::new(),
                reflexive_endpoints: Vec::new(),
                public_endpoint: None,
                advertised_routes: Vec::new(),
                approved_routes: Vec::new(),
                tags: token_tags.into_iter().collect(),
            }
        }
    };
    member.authorized |= authorize;
    member.version = clean_version(&hello.version);
    member.last_seen = Some(now);
    member.endpoints = endpoints;
    member.local_endpoints = local_endpoints;
    // The node's config is static per run: what this hello advertises replaces what an
    // earlier one did (a route no longer advertised is withdrawn).
    member.advertised_routes = clean_routes(&hello.routes);
    // Hello carries no reflexive addresses; the node reports them once it asked the
    // reflectors. Until then keep those of the last connection that are still plausible
    // (same public IP: a reconnect through the same NAT), so peers are not sent a worse
    // candidate list in between; after a move they are stale.
    let ip = remote.ip().to_canonical();
    member.reflexive_endpoints.retain(|ep| ep.ip() == ip);
    Ok(member)
}

impl Coordinator {
    /// Admits a node that proved it holds `hello.public_key`: with a token it becomes an
    /// authorised member at once; without, an authorised member proceeds and anyone else
    /// is (or becomes) a pending member. Durable before it returns.
    pub async fn admit(&self, hello: &Hello, remote: SocketAddr) -> Result<Admitted, AdmitError> {
        self.retrying(|| self.admit_once(hello, remote)).await
    }

    /// Queues the join and takes the state lock; whoever holds the lock next admits every
    /// queued join ([`Coordinator::admit_batch`]), so concurrent joins share one store
    /// transaction per network instead of queueing for one each.
    async fn admit_once(&self, hello: &Hello, remote: SocketAddr) -> Result<Admitted, AdmitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.joins().push(PendingJoin {
            hello: hello.clone(),
            remote,
            tx,
        });
        {
            let mut st = self.state.lock().await;
            let batch = std::mem::take(&mut *self.joins());
            if !batch.is_empty() {
                self.admit_batch(&mut st, batch);
            }
        }
        // Taken by this task or by one that held the lock before it: answered by now.
        let snapshots = rx
            .await
            .map_err(|_| AdmitError::Internal("the join was dropped".into()))??;
        self.durable().await?;
        self.control_stats.joins.inc();
        Ok(Admitted { snapshots })
    }

    pub(super) fn joins(&self) -> std::sync::MutexGuard<'_, Vec<PendingJoin>> {
        self.joins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits `batch` under the state lock: per network, each join is decided in turn
    /// against memory plus the joins before it in the batch (addresses, token uses), then
    /// all of them are committed together; each waiting task gets its answer.
    pub(super) fn admit_batch(&self, st: &mut super::State, batch: Vec<PendingJoin>) {
        let now = self.now();
        let mut by_net: std::collections::BTreeMap<String, Vec<PendingJoin>> =
            std::collections::BTreeMap::new();
        for j in batch {
            by_net.entry(j.hello.network.clone()).or_default().push(j);
        }
        for (net, joins) in by_net {
            let Some(ns) = st.networks.get(&net) else {
                for j in joins {
                    let name = net.chars().take(64).collect();
                    let _ = j.tx.send(Err(AdmitError::UnknownNetwork(name)));
                }
                continue;
            };
            let mut by_addr = ns.by_addr.clone();
            let mut put: Vec<Member> = Vec::new();
            let mut tokens: std::collections::BTreeMap<String, Token> =
                std::collections::BTreeMap::new();
            let mut admitted = Vec::new();
            for j in joins {
                let decided = decide_join(
                    ns,
                    &st.tokens,
                    &j.hello,
                    j.remote,
                    now,
                    &mut by_addr,
                    &put,
                    &mut tokens,
                );
                match decided {
                    Ok(member) => {
                        tracing::info!(
                            network = %net,
                            node = %member.public_key.fingerprint(),
                            address = %member.address,
                            authorized = member.authorized,
                            token = j.hello.join.as_ref().map(|t| t.id.as_str()),
                            "node admitted"
                        );
                        put.retain(|m| m.public_key != member.public_key);
                        put.push(member);
                        admitted.push(j);
                    }
                    Err(e) => {
                        let _ = j.tx.send(Err(e));
                    }
                }
            }
            if admitted.is_empty() {
                continue;
            }
            let change = Change {
                put,
                tokens: tokens.into_values().collect(),
                ..Change::default()
            };
            match self.commit(st, &net, change) {
                Ok(_) => {
                    let Some(ns) = st.networks.get(&net) else {
                        continue;
                    };
                    for j in admitted {
                        let _ = j.tx.send(Ok(ns.tx.subscribe()));
                    }
                }
                Err(e) => {
                    for j in admitted {
                        let _ = j.tx.send(Err(shared_error(&e)));
                    }
                }
            }
        }
    }

    /// Updates a member's endpoint candidates from its report (a push follows when it is
    /// authorised and they changed) and its last-seen time.
    pub async fn update_endpoints(
        &self,
        net: &str,
        key: &Key,
        remote: SocketAddr,
        report: &EndpointReport<'_>,
    ) -> Result<(), Error> {
        self.retrying(|| self.update_endpoints_once(net, key, remote, report))
            .await
    }

    async fn update_endpoints_once(
        &self,
        net: &str,
        key: &Key,
        remote: SocketAddr,
        report: &EndpointReport<'_>,
    ) -> Result<(), Error> {
        let (endpoints, local_endpoints) =
            reported_endpoints(remote, report.listen_port, report.local);
        let reflexive_endpoints = clean_endpoints(report.reflexive);
        let now = self.now();
        let mut st = self.state.lock().await;
        let Some(mut m) = st
            .networks
            .get(net)
            .and_then(|ns| ns.members.get(key))
            .cloned()
        else {
            return Ok(());
        };
        m.endpoints = endpoints;
        m.local_endpoints = local_endpoints;
        m.reflexive_endpoints = reflexive_endpoints;
        m.last_seen = Some(now);
        self.commit(
            &mut st,
            net,
            Change {
                put: vec![m],
                ..Change::default()
            },
        )?;
        Ok(())
    }

    /// Keeps a member's path report with its session, in memory only (it goes when the
    /// session ends or is replaced), replacing the previous one. A report longer than
    /// [`MAX_PATH_REPORT`] or from a member not authorised is ignored whole; entries that
    /// name no other authorised member of the network, and repeated peers, are dropped.
    /// Returns how many entries were kept. A report that changes what the member shows
    /// moves [`Coordinator::generation`] (at most once a second, whatever the number of
    /// reports).
    pub(crate) async fn report_paths(
        &self,
        session: &SessionGuard<'_>,
        peers: &[PeerPathReport],
    ) -> Result<usize, PathsIgnored> {
        if peers.len() > MAX_PATH_REPORT {
            return Err(PathsIgnored::TooLong(peers.len()));
        }
        let kept: Vec<PeerPathReport> = {
            let st = self.state.lock().await;
            let ns = st
                .networks
                .get(&session.net)
                .filter(|ns| ns.members.get(&session.key).is_some_and(|m| m.authorized))
                .ok_or(PathsIgnored::NotAuthorised)?;
            let mut seen = BTreeSet::new();
            peers
                .iter()
                .filter(|r| {
                    r.peer != session.key
                        && ns.members.get(&r.peer).is_some_and(|m| m.authorized)
                        && seen.insert(r.peer)
                })
                .copied()
                .collect()
        };
        let mut sessions = self.sessions();
        let slot = sessions
            .get_mut(&(session.net.clone(), session.key))
            .filter(|slot| slot.id == session.id)
            .ok_or(PathsIgnored::Replaced)?;
        let n = kept.len();
        if slot.paths != kept {
            slot.paths = kept;
            self.changes.path_reported();
        }
        Ok(n)
    }

    /// Records activity of a member (connect, message, disconnect). Not flushed: nothing
    /// is acknowledged by it.
    pub async fn seen(&self, net: &str, key: &Key) -> Result<(), Error> {
        self.retrying(|| self.seen_once(net, key)).await
    }

    async fn seen_once(&self, net: &str, key: &Key) -> Result<(), Error> {
        let now = self.now();
        let mut st = self.state.lock().await;
        let Some(mut m) = st
            .networks
            .get(net)
            .and_then(|ns| ns.members.get(key))
            .cloned()
        else {
            return Ok(());
        };
        m.last_seen = Some(now);
        self.commit(
            &mut st,
            net,
            Change {
                put: vec![m],
                ..Change::default()
            },
        )?;
        Ok(())
    }

    /// The change-log records that take a member from `from` to `to`, if the log still
    /// covers every version in between.
    ///
    /// A node's version is trusted as far as its own map goes: whatever it claims, it is
    /// sent every member touched since then as it is now, never anything a full map would
    /// not show it. Versions of a network recreated under the same name start above any
    /// the old one can have reached ([`crate::model::initial_version`]), so a stale cache
    /// never resumes into it.
    pub fn resume_records(
        &self,
        net: &str,
        from: u64,
        to: u64,
    ) -> Result<Option<Vec<ChangeRecord>>, StoreError> {
        if from > to || to - from > LOG_KEEP {
            return Ok(None);
        }
        let mut records = Vec::new();
        let mut expect = from;
        for (version, record) in self.store.log_after(net, from)? {
            if version > to {
                break;
            }
            expect += 1;
            if version != expect {
                return Ok(None);
            }
            records.push(record);
        }
        Ok((expect == to).then_some(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_candidates() {
        let remote: SocketAddr = "[::ffff:203.0.113.7]:40000".parse().unwrap();
        let local: Vec<SocketAddr> = vec![
            "192.168.1.5:51820".parse().unwrap(),
            "0.0.0.0:51820".parse().unwrap(),
            "192.168.1.6:0".parse().unwrap(),
            "192.168.1.5:51820".parse().unwrap(),
        ];
        let (observed, locals) = reported_endpoints(remote, 51820, &local);
        assert_eq!(observed, vec!["203.0.113.7:51820".parse().unwrap()]);
        assert_eq!(locals, vec!["192.168.1.5:51820".parse().unwrap()]);
        let (observed, _) = reported_endpoints(remote, 0, &local);
        assert!(observed.is_empty());
        let many: Vec<SocketAddr> = (1..=40)
            .map(|i| format!("10.0.0.{i}:1").parse().unwrap())
            .collect();
        assert_eq!(reported_endpoints(remote, 1, &many).1.len(), MAX_ENDPOINTS);
        let reflexive: Vec<SocketAddr> = vec![
            "[::ffff:203.0.113.7]:40001".parse().unwrap(),
            "203.0.113.7:40001".parse().unwrap(),
            "224.0.0.1:1".parse().unwrap(),
            "[::]:1".parse().unwrap(),
            "[2001:db8::7]:51820".parse().unwrap(),
        ];
        assert_eq!(
            clean_endpoints(&reflexive),
            vec![
                "203.0.113.7:40001".parse().unwrap(),
                "[2001:db8::7]:51820".parse().unwrap()
            ]
        );
    }
}
