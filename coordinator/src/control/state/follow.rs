//! Following a shared store: what other coordinators commit becomes this coordinator's
//! memory, snapshots and pushes, exactly as if it had committed it itself.
//!
//! One task per coordinator reads [`Follow`] messages in revision order. A batch is split
//! by network; a network already at or past the batch's revision skips it (this
//! coordinator's own batches come back too, and are mirrored since their commit). The
//! rest goes through the same mirroring as a local commit ([`Coordinator::mirror`]): the
//! version's change frame is encoded once, sessions are woken, the relay's index updated.
//!
//! **Architecture Invariant:** per network, every coordinator applies the same batches in
//! the same order: each batch is conditioned on the network's revision, so batches of one
//! network are totally ordered by the store, and a follower applies them in revision
//! order. Versions are therefore the same on every coordinator, and a node may resume on
//! any of them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Weak;
use std::time::Duration;

use mesh_proto::Key;
use tokio::sync::mpsc;

use super::{Change, Coordinator, NetState, State};
use crate::model::{Member, Network, Token};
use crate::store::{Event, Follow, Op, Revision};

/// How long a writer that lost a race waits for the winner's batch before it retries
/// anyway.
const CATCH_UP: Duration = Duration::from_secs(2);

/// What one batch does to one network.
#[derive(Default)]
struct NetOps {
    network: Option<Network>,
    deleted: bool,
    put: Vec<Member>,
    delete: Vec<Key>,
    tokens: Vec<Token>,
}

/// Runs until the coordinator is dropped or the store stops reporting.
pub(super) async fn run(coord: Weak<Coordinator>, mut rx: mpsc::Receiver<Follow>) {
    while let Some(msg) = rx.recv().await {
        let Some(c) = coord.upgrade() else { return };
        match msg {
            Follow::Batch(event) => c.apply_event(event).await,
            Follow::Reload => loop {
                match c.reload().await {
                    Ok(Some(next)) => {
                        rx = next;
                        break;
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!("reloading the shared store: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            },
            Follow::Presence(p) => c.remote_presence(p),
            Follow::Coordinator { id, info } => c.remote_coordinator(&id, info),
        }
    }
}

impl Coordinator {
    /// Mirrors a batch some coordinator committed.
    pub(super) async fn apply_event(&self, event: Event) {
        let own = self
            .own_revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&event.revision);
        let mut by_net: BTreeMap<String, NetOps> = BTreeMap::new();
        let mut audit = Vec::new();
        for op in event.ops {
            match op {
                Op::PutNetwork(n) => {
                    let e = by_net.entry(n.name.clone()).or_default();
                    e.deleted = false;
                    e.network = Some(n);
                }
                Op::DeleteNetwork(net) => {
                    let e = by_net.entry(net).or_default();
                    *e = NetOps {
                        deleted: true,
                        ..NetOps::default()
                    };
                }
                Op::PutMember { network, member } => {
                    by_net.entry(network).or_default().put.push(member);
                }
                Op::DeleteMember { network, key } => {
                    by_net.entry(network).or_default().delete.push(key);
                }
                Op::PutToken(t) => by_net.entry(t.network.clone()).or_default().tokens.push(t),
                Op::PutAudit { seq, entry } => audit.push((seq, entry)),
                Op::PutLog { .. } | Op::PruneLog { .. } | Op::PruneAudit { .. } => {}
            }
        }
        let mut st = self.state.lock().await;
        let mut membership = false;
        for (net, ops) in by_net {
            membership |= self.apply_net_ops(&mut st, &net, ops, event.revision);
        }
        if !own {
            for (seq, entry) in audit {
                st.audit.remote(seq, entry);
            }
        }
        if membership {
            self.publish_membership(&st);
        }
        drop(st);
        self.changes.bump();
        self.followed.notify_waiters();
    }

    /// Mirrors one network's part of a batch at `rev`; whether the authorised set changed.
    fn apply_net_ops(&self, st: &mut State, net: &str, ops: NetOps, rev: Revision) -> bool {
        let known = st.networks.get(net).map(|ns| ns.rev);
        if known.is_some_and(|r| r >= rev) {
            return false;
        }
        if ops.deleted {
            let Some(mut ns) = st.networks.remove(net) else {
                return false;
            };
            ns.seq = self.applied.load(std::sync::atomic::Ordering::SeqCst);
            ns.publish(true);
            st.tokens.retain(|_, t| t.network != net);
            tracing::info!(network = %net, revision = rev, "network deleted (by another coordinator)");
            return true;
        }
        if known.is_none() {
            // A network created elsewhere (or one this coordinator had not seen yet).
            let Some(network) = ops.network else {
                return false;
            };
            let mut ns = NetState::new(network, ops.put);
            ns.rev = rev;
            for t in ops.tokens {
                st.tokens.insert(t.id.clone(), t);
            }
            let authorised = !ns.peers.is_empty();
            st.networks.insert(net.to_owned(), ns);
            return authorised;
        }
        let change = Change {
            put: ops.put,
            delete: ops.delete,
            tokens: ops.tokens,
            audit: Vec::new(),
            // The network's record (policy included) comes as `ops.network`.
            policy: None,
        };
        self.mirror_remote(st, net, change, ops.network, rev);
        false
    }

    /// Waits until network `net` moved past revision `seen` here (another coordinator's
    /// batch won a race), at most [`CATCH_UP`].
    pub(super) async fn catch_up(&self, net: &str, seen: Revision) {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let notified = self.followed.notified();
            {
                let st = self.state.lock().await;
                if st.networks.get(net).map_or(0, |ns| ns.rev) != seen {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Replaces memory with a fresh read of the store (the follower fell behind a
    /// compaction) and follows again from there.
    async fn reload(&self) -> Result<Option<mpsc::Receiver<Follow>>, crate::store::StoreError> {
        let store = self.store.clone();
        let dump = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|_| crate::store::StoreError::Interrupted)??;
        let mut st = self.state.lock().await;
        let names: BTreeSet<String> = dump
            .networks
            .iter()
            .map(|n| n.network.name.clone())
            .collect();
        let gone: Vec<String> = st
            .networks
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for net in gone {
            self.apply_net_ops(
                &mut st,
                &net,
                NetOps {
                    deleted: true,
                    ..NetOps::default()
                },
                dump.revision,
            );
        }
        for n in dump.networks {
            let net = n.network.name.clone();
            let delete = st
                .networks
                .get(&net)
                .map(|ns| {
                    ns.members
                        .keys()
                        .filter(|k| !n.members.iter().any(|m| m.public_key == **k))
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            self.apply_net_ops(
                &mut st,
                &net,
                NetOps {
                    network: Some(n.network),
                    deleted: false,
                    put: n.members,
                    delete,
                    tokens: n.tokens,
                },
                n.revision.max(1),
            );
        }
        self.publish_membership(&st);
        drop(st);
        self.changes.bump();
        self.followed.notify_waiters();
        Ok(self.store.follow(dump.revision))
    }
}
