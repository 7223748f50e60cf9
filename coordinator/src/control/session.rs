//! One node's control session, independent of the transport: it runs over any
//! `AsyncRead`/`AsyncWrite` pair, given the TLS exporter secret of the connection and the
//! node's address ([`crate::control::quic`] passes a QUIC stream; tests pass `tokio::io::duplex`).
//!
//! ```text
//! handshake (≤ HANDSHAKE_TIMEOUT)    Hello → Challenge → Proof → verify
//! admission                          token / pending / authorised   (Coordinator::admit)
//! loop                               snapshot changed → [Services] Netmap | Changes
//!                                                       | Pending | Denied
//!                                    Endpoints from the node → Coordinator::update_endpoints
//!                                    Paths from the node → Coordinator::report_paths
//!                                    replaced by a newer session of the same member → end
//! ```
//! Netmaps and changes go out in the binary encoding of [`mesh_proto::wire`], encoded once
//! per version and shared by every session ([`crate::control::snapshot`]). A session sends the
//! change frames of the versions its node lacks; it looks at new snapshots at most once per
//! [`push_interval`] (which grows with the number of sessions), so a burst of changes
//! reaches each node as one write of several frames instead of a wake-up per change.
//! A node resumes from the version it holds when the change log still reaches back to it
//! (after a reconnect, also to a restarted coordinator), else it gets the full map.
//! Nodes older than control protocol 2 are denied with a message that says so.
//!
//! Whenever an authorised member is about to get its first map on a connection (a full
//! netmap, or the changes it resumes with; again after a deauthorisation was lifted), it
//! is first sent [`ServerMsg::Services`]: the reflectors, the relay and its relay token, so
//! it can look for paths while it sets up its peers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_proto::control::{
    ct_eq, expected_proof, ClientMsg, Hello, ServerMsg, DUAL_STACK_PROTOCOL, FILTER_PROTOCOL,
    MIN_PROTOCOL, NAMES_PROTOCOL,
};
use mesh_proto::policy::Action;
use mesh_proto::{relay, Key};
use tokio::io::AsyncRead;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::control::frame::{self, FrameReader, FrameSink, ReadError, WriteError};
use crate::control::snapshot::{Snapshot, Status};
use crate::control::state::{random32, AdmitError, Coordinator, EndpointReport, FilterReport};
use crate::control::views::SharedFilter;

/// Time a node has to say hello and prove its key.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one message may take to leave (a node that does not read is dropped).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message a node may send before it proved its key (hello is small).
pub const CLIENT_FRAME_LIMIT: usize = 64 * 1024;
/// Largest message a node may send after it proved its key: a path report of
/// [`MAX_PATH_REPORT`] peers fits (under 100 bytes per peer). A larger frame is a
/// protocol error like any other; a node that follows the protocol never sends one.
///
/// [`MAX_PATH_REPORT`]: mesh_proto::control::MAX_PATH_REPORT
pub const SESSION_FRAME_LIMIT: usize = 512 * 1024;
/// Shortest time between two pushes to one node.
pub const PUSH_INTERVAL_MIN: Duration = Duration::from_millis(5);
/// Push interval added per online session, so that pushes (each a QUIC write and packet,
/// tens of µs of CPU) stay at about 20,000 a second however many nodes are online and
/// however fast changes come (during a cold start of 5,000 nodes, 10 µs saturated both
/// cores of the test machine with pushes; the load generator measures it).
pub const PUSH_INTERVAL_PER_SESSION: Duration = Duration::from_micros(100);
/// Longest time between two pushes to one node.
pub const PUSH_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// How long a session waits after a push before it looks at newer snapshots, given how
/// many sessions are online: changes within it go out together.
pub fn push_interval(sessions: usize) -> Duration {
    PUSH_INTERVAL_PER_SESSION
        .saturating_mul(u32::try_from(sessions).unwrap_or(u32::MAX))
        .clamp(PUSH_INTERVAL_MIN, PUSH_INTERVAL_MAX)
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The node was sent `Denied` with this reason.
    Denied(String),
    /// The node closed its side.
    Closed,
    /// A newer session of the same member took over.
    Replaced,
    /// The connection failed (nothing more could be sent).
    Failed(String),
}

/// Runs one session to its end.
pub async fn run<R, W>(
    coord: &Coordinator,
    reader: R,
    writer: &mut W,
    exporter: [u8; 32],
    remote: SocketAddr,
) -> End
where
    R: AsyncRead + Unpin,
    W: FrameSink,
{
    let mut frames = FrameReader::new(reader, CLIENT_FRAME_LIMIT);
    let hello =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut frames, writer, &exporter))
            .await
        {
            Err(_) => return deny(writer, "handshake timed out".into()).await,
            Ok(Err(Fail::Deny(reason))) => return deny(writer, reason).await,
            Ok(Err(Fail::End(end))) => return end,
            Ok(Ok(hello)) => hello,
        };
    frames.set_limit(SESSION_FRAME_LIMIT);
    let span = tracing::info_span!(
        "session",
        network = %hello.network,
        node = %hello.public_key.fingerprint(),
        %remote
    );
    async {
        let mut session = Session {
            coord,
            frames,
            writer,
            remote,
            net: hello.network.clone(),
            key: hello.public_key,
            sent: None,
            told_pending: false,
            resume: hello.resume,
            next_push: Instant::now(),
            protocol: hello.protocol,
            filter_sent: None,
            names_sent: None,
            session_id: 0,
        };
        let end = match session.serve(&hello).await {
            Ok(()) => End::Closed,
            Err(Fail::Deny(reason)) => deny(session.writer, reason).await,
            Err(Fail::End(end)) => end,
        };
        if let Err(e) = coord.seen(&session.net, &session.key).await {
            tracing::warn!("recording last seen: {e}");
        }
        tracing::info!(end = ?end, "session ended");
        end
    }
    .instrument(span)
    .await
}

/// Why a session step stopped.
enum Fail {
    /// Send `Denied` with this reason and end.
    Deny(String),
    /// End without sending anything.
    End(End),
}

impl From<WriteError> for Fail {
    fn from(e: WriteError) -> Fail {
        Fail::End(End::Failed(e.to_string()))
    }
}

async fn send<W: FrameSink>(w: &mut W, msg: &ServerMsg) -> Result<(), Fail> {
    send_frames(w, vec![frame::json_frame(msg)?]).await
}

/// Sends frames already encoded (shared with other sessions).
async fn send_frames<W: FrameSink>(w: &mut W, frames: Vec<Bytes>) -> Result<(), Fail> {
    match tokio::time::timeout(WRITE_TIMEOUT, w.send_frames(frames)).await {
        Ok(r) => Ok(r.map_err(WriteError::from)?),
        Err(_) => Err(Fail::End(End::Failed("node stopped reading".into()))),
    }
}

/// Sends `Denied` (best effort) and reports it.
async fn deny<W: FrameSink>(w: &mut W, reason: String) -> End {
    tracing::info!(%reason, "denied");
    let _ = send(
        w,
        &ServerMsg::Denied {
            reason: reason.clone(),
        },
    )
    .await;
    End::Denied(reason)
}

/// A broken stream just ends the session; a malformed or oversized frame is denied.
fn read_failed(e: ReadError) -> Fail {
    match e {
        ReadError::Io(_) | ReadError::Truncated => Fail::End(End::Failed(e.to_string())),
        ReadError::Frame(_) | ReadError::TooLarge { .. } => Fail::Deny(e.to_string()),
    }
}

fn msg_kind(msg: &ClientMsg) -> &'static str {
    match msg {
        ClientMsg::Hello(_) => "hello",
        ClientMsg::Proof { .. } => "proof",
        ClientMsg::Endpoints { .. } => "endpoints",
        ClientMsg::Paths { .. } => "paths",
        ClientMsg::Filter { .. } => "filter",
    }
}

/// A message from a node after the handshake. A `paths` report that does not parse is
/// told apart from other malformed messages: it is ignored, not a protocol error (path
/// reports only feed the admin view).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one at a time, matched at once: boxing buys nothing
enum Incoming {
    /// A well-formed message.
    Msg(ClientMsg),
    /// A malformed `paths` report, with what was wrong.
    BadPaths(String),
}

impl<'de> serde::Deserialize<'de> for Incoming {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Incoming, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let paths = value.get("type").and_then(|t| t.as_str()) == Some("paths");
        match serde_json::from_value::<ClientMsg>(value) {
            Ok(msg) => Ok(Incoming::Msg(msg)),
            Err(e) if paths => Ok(Incoming::BadPaths(e.to_string())),
            Err(e) => Err(serde::de::Error::custom(e)),
        }
    }
}

/// Hello → Challenge → Proof; the hello of a node that proved its key.
async fn handshake<R, W>(
    frames: &mut FrameReader<R>,
    writer: &mut W,
    exporter: &[u8; 32],
) -> Result<Hello, Fail>
where
    R: AsyncRead + Unpin,
    W: FrameSink,
{
    let hello = match frames.next::<ClientMsg>().await {
        Ok(Some(ClientMsg::Hello(h))) => h,
        Ok(Some(other)) => {
            return Err(Fail::Deny(format!(
                "expected hello, got {}",
                msg_kind(&other)
            )))
        }
        Ok(None) => return Err(Fail::End(End::Closed)),
        Err(e) => return Err(read_failed(e)),
    };
    let random = |what| random32().map_err(|e| Fail::Deny(format!("coordinator {what}: {e}")));
    let ephemeral = Key::clamp_private(random("random generator failed")?);
    let nonce = Key(random("random generator failed")?);
    // A low-order public key makes the shared secret all zeros whatever our ephemeral is,
    // which would let anyone answer the challenge for it.
    let shared = x25519_dalek::StaticSecret::from(ephemeral.0)
        .diffie_hellman(&x25519_dalek::PublicKey::from(hello.public_key.0));
    if !shared.was_contributory() {
        return Err(Fail::Deny("invalid public key (low order point)".into()));
    }
    send(
        writer,
        &ServerMsg::Challenge {
            ephemeral: ephemeral.public_key(),
            nonce,
        },
    )
    .await?;
    let proof = match frames.next::<ClientMsg>().await {
        Ok(Some(ClientMsg::Proof { proof })) => proof,
        Ok(Some(other)) => {
            return Err(Fail::Deny(format!(
                "expected proof, got {}",
                msg_kind(&other)
            )))
        }
        Ok(None) => return Err(Fail::End(End::Closed)),
        Err(e) => return Err(read_failed(e)),
    };
    let expected = expected_proof(&ephemeral, &hello.public_key, &nonce, exporter);
    if !ct_eq(&proof.0, &expected.0) {
        return Err(Fail::Deny(
            "proof of key possession failed: this node does not hold the private key of the public key it claims".into(),
        ));
    }
    Ok(hello)
}

/// A session after the handshake.
struct Session<'a, R, W> {
    coord: &'a Coordinator,
    frames: FrameReader<R>,
    writer: &'a mut W,
    remote: SocketAddr,
    net: String,
    key: Key,
    /// The snapshot whose netmap the node holds (`None`: it holds none from us).
    sent: Option<Arc<Snapshot>>,
    /// Whether the node was told it is pending.
    told_pending: bool,
    /// The version the node asked to resume from (first netmap only).
    resume: Option<u64>,
    /// No push before this (see [`push_interval`]).
    next_push: Instant,
    /// The control protocol the node speaks.
    protocol: u32,
    /// The policy filter the node was sent (`None`: none, it allows everything).
    filter_sent: Option<Arc<SharedFilter>>,
    /// The DNS domain the node was sent ([`ServerMsg::Names`], protocol 5).
    names_sent: Option<Arc<str>>,
    /// This session's id in the registry (for reports).
    session_id: u64,
}

impl<R, W> Session<'_, R, W>
where
    R: AsyncRead + Unpin,
    W: FrameSink,
{
    async fn serve(&mut self, hello: &Hello) -> Result<(), Fail> {
        if hello.protocol < MIN_PROTOCOL {
            return Err(Fail::Deny(format!(
                "this node's meshd speaks control protocol {}, the coordinator needs {MIN_PROTOCOL}: upgrade meshd",
                hello.protocol
            )));
        }
        let ip = self.remote.ip();
        if hello.join.is_some() {
            let wait = self.coord.join_wait(ip, std::time::Instant::now());
            if !wait.is_zero() {
                self.coord.control_stats().join_rate_limited.inc();
                return Err(Fail::Deny(format!(
                    "too many failed join attempts from {}: try again in {} s",
                    ip.to_canonical(),
                    wait.as_secs().max(1)
                )));
            }
        }
        let admitted = self.coord.admit(hello, self.remote).await.map_err(|e| {
            if matches!(
                e,
                AdmitError::BadToken
                    | AdmitError::UnknownNetwork(_)
                    | AdmitError::WrongNetwork { .. }
            ) {
                self.coord.join_failed(ip, std::time::Instant::now());
            }
            Fail::Deny(e.to_string())
        })?;
        let mut guard = self.coord.register_session(&self.net, &self.key);
        self.session_id = guard.id();
        let mut cluster = self.coord.cluster_changes();
        cluster.mark_unchanged();
        let mut snapshots: watch::Receiver<Arc<Snapshot>> = admitted.snapshots;
        let first = snapshots.borrow_and_update().clone();
        self.on_snapshot(first).await?;
        loop {
            tokio::select! {
                _ = &mut guard.replaced => return Err(Fail::End(End::Replaced)),
                Ok(()) = cluster.changed() => {
                    // Another coordinator came or went: the meeting relay and the list of
                    // coordinators may have changed (only an authorised member has them).
                    if self.sent.is_some() {
                        self.send_services().await?;
                    }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return Err(Fail::Deny("network deleted".into()));
                    }
                    // Changes that arrive meanwhile go out with this one.
                    tokio::time::sleep_until(self.next_push).await;
                    let snap = snapshots.borrow_and_update().clone();
                    self.on_snapshot(snap).await?;
                }
                msg = self.frames.next::<Incoming>() => match msg {
                    Ok(None) => return Ok(()),
                    Ok(Some(Incoming::Msg(ClientMsg::Paths { peers }))) => {
                        match self.coord.report_paths(&guard, &peers).await {
                            Ok(kept) => tracing::debug!(
                                peers = peers.len(),
                                kept,
                                "path report"
                            ),
                            Err(e) => tracing::debug!("path report ignored: {e}"),
                        }
                    }
                    Ok(Some(Incoming::Msg(ClientMsg::Filter { hash, error }))) => {
                        if let Some(e) = &error {
                            tracing::warn!(%hash, "the node could not apply its filter: {e}");
                        }
                        let report = FilterReport { hash, error };
                        self.coord.report_filter(&self.net, &self.key, self.session_id, report);
                    }
                    Ok(Some(Incoming::BadPaths(e))) => {
                        tracing::debug!("malformed path report ignored: {e}");
                    }
                    Ok(Some(Incoming::Msg(ClientMsg::Endpoints { listen_port, local, reflexive }))) => {
                        let report = EndpointReport {
                            listen_port,
                            local: &local,
                            reflexive: &reflexive,
                        };
                        if let Err(e) = self
                            .coord
                            .update_endpoints(&self.net, &self.key, self.remote, &report)
                            .await
                        {
                            tracing::warn!("updating endpoints: {e}");
                        }
                    }
                    Ok(Some(Incoming::Msg(other))) => {
                        return Err(Fail::Deny(format!("unexpected {} message", msg_kind(&other))))
                    }
                    Err(e) => return Err(read_failed(e)),
                },
            }
        }
    }

    /// Brings the node up to `snap`: netmap or changes when authorised, pending when not,
    /// denied when gone.
    async fn on_snapshot(&mut self, snap: Arc<Snapshot>) -> Result<(), Fail> {
        // Nothing goes out that a crash could take back (at once in the usual case: the
        // change's own writer waited for the same flush before it answered).
        self.coord.durable_upto(snap.seq).await.map_err(|e| {
            tracing::error!("flushing before a push: {e}");
            Fail::Deny("coordinator storage failed, try again later".into())
        })?;
        if snap.network.cidr6.is_some() && self.protocol < DUAL_STACK_PROTOCOL {
            return Err(Fail::Deny(format!(
                "network {} is dual-stack (IPv6 prefix {}), which this node's meshd (control protocol {}) cannot read: upgrade meshd",
                self.net,
                snap.network.cidr6.map(|c| c.to_string()).unwrap_or_default(),
                self.protocol
            )));
        }
        match snap.status(&self.key) {
            Status::Absent => Err(Fail::Deny(if snap.deleted {
                "network deleted".into()
            } else {
                "removed from network".into()
            })),
            Status::Pending => {
                // A node told it is pending drops its netmap: no resuming after this.
                self.resume = None;
                if self.sent.take().is_some() {
                    self.told_pending = true;
                    tracing::info!("deauthorized");
                    send(
                        self.writer,
                        &ServerMsg::Pending {
                            message: "deauthorized".into(),
                        },
                    )
                    .await
                } else if !self.told_pending {
                    self.told_pending = true;
                    let message = format!(
                        "waiting for an admin to authorise this node: meshctl admin … authorize {} {}",
                        self.net,
                        self.key.fingerprint()
                    );
                    send(self.writer, &ServerMsg::Pending { message }).await
                } else {
                    Ok(())
                }
            }
            Status::Authorized => {
                // The filter first: a peer the netmap brings is enforced as it arrives.
                self.send_filter(&snap).await?;
                let frames = match &self.sent {
                    Some(old) if old.version == snap.version => {
                        self.sent = Some(snap);
                        return Ok(());
                    }
                    // With a policy (now or before): from the view it was sent to its
                    // view now, shared by its class.
                    Some(old) => match snap.view_frame(old, &self.key) {
                        Some(frames) => frames,
                        None => match snap.deltas.between(old.version, snap.version) {
                            Some(frames) => frames,
                            None => {
                                // Fell behind what is kept: this session's own diff.
                                let changes = snap.changes_since(old, &self.key);
                                vec![snap.changes_frame(&self.key, &changes)]
                            }
                        },
                    },
                    None => {
                        let frames = self.first_frames(&snap);
                        self.send_services().await?;
                        frames
                    }
                };
                if !frames.is_empty() {
                    self.coord.control_stats().netmap_pushes.inc();
                }
                // The domain before the netmap it names (after the services).
                self.send_names(&snap).await?;
                self.sent = Some(snap);
                self.next_push = Instant::now() + push_interval(self.coord.online());
                send_frames(self.writer, frames).await
            }
        }
    }

    /// Sends the changes of this member's policy filter in `snap`, if any. A node that
    /// cannot enforce filters (protocol below [`FILTER_PROTOCOL`]) is refused while its network has a policy.
    async fn send_filter(&mut self, snap: &Snapshot) -> Result<(), Fail> {
        let filter = match snap.filter_of(&self.key) {
            Some(filter) => filter,
            // The policy went away after the node was sent one: everything allowed again.
            None if self.filter_sent.is_some() => SharedFilter::new(Action::Allow, BTreeMap::new()),
            None => return Ok(()),
        };
        if self.protocol < FILTER_PROTOCOL {
            return Err(Fail::Deny(format!(
                "network {} has a policy, which this node's meshd (control protocol {}) cannot enforce: upgrade meshd",
                self.net, self.protocol
            )));
        }
        // The update is shared by every member going from the same filter to the same one.
        let Some(update) = snap.filter_update(self.filter_sent.as_ref(), &filter) else {
            self.filter_sent = Some(filter);
            return Ok(());
        };
        let u = &update.update;
        tracing::debug!(hash = %u.hash, peers = u.upsert.len(), removed = u.remove.len(), full = u.full, "filter");
        send_frames(self.writer, vec![update.frame().map_err(Fail::from)?]).await?;
        self.coord
            .filter_sent(&self.net, &self.key, self.session_id, &u.hash);
        self.filter_sent = Some(filter);
        Ok(())
    }

    /// Tells a node of control protocol 5 or later the network's DNS domain, before its
    /// first netmap and whenever the domain changes.
    async fn send_names(&mut self, snap: &Snapshot) -> Result<(), Fail> {
        if self.protocol < NAMES_PROTOCOL || self.names_sent.as_ref() == Some(&snap.domain) {
            return Ok(());
        }
        let msg = ServerMsg::Names {
            domain: snap.domain.to_string(),
        };
        send(self.writer, &msg).await?;
        self.names_sent = Some(snap.domain.clone());
        Ok(())
    }

    /// Tells the member about the NAT traversal services, if the coordinator has any.
    async fn send_services(&mut self) -> Result<(), Fail> {
        let Some(services) = self.coord.services() else {
            return Ok(());
        };
        let (relay, relays) = self.coord.relay_for(&self.net);
        let msg = ServerMsg::Services {
            reflectors: services.reflectors.clone(),
            relay,
            relays,
            relay_token: relay::token(&services.relay_secret, &self.key),
            coordinators: self.coord.control_addresses(),
        };
        send(self.writer, &msg).await
    }

    /// The first netmap frames: changes when the node resumes from a version the change
    /// log still reaches back to, the full map (shared, see [`Snapshot::first_frames`])
    /// otherwise.
    fn first_frames(&mut self, snap: &Snapshot) -> Vec<Bytes> {
        // With a policy, the member's view whole (no resuming from the change log, which
        // lists changes to everyone's map).
        if let Some(frames) = snap.view_first_frames(&self.key) {
            self.resume = None;
            return frames;
        }
        if let Some(from) = self.resume.take() {
            match self.coord.resume_records(&self.net, from, snap.version) {
                Ok(Some(records)) => {
                    tracing::debug!(from, to = snap.version, "resuming");
                    let changes = snap.changes_from_log(&self.key, &records);
                    return vec![snap.changes_frame(&self.key, &changes)];
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("reading the change log: {e}"),
            }
        }
        snap.first_frames(&self.key)
    }
}

#[cfg(test)]
mod tests;
