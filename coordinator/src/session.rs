//! One node's control session, independent of the transport: it runs over any
//! `AsyncRead`/`AsyncWrite` pair, given the TLS exporter secret of the connection and the
//! node's address ([`crate::quic`] passes a QUIC stream; tests pass `tokio::io::duplex`).
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
//! Before a netmap or changes go out, the version is recorded durably
//! ([`Coordinator::record_sent`]), so a reconnecting node can resume from it.
//!
//! Whenever an authorised member is about to get its first map on a connection (a full
//! netmap, or the changes it resumes with; again after a deauthorisation was lifted), it
//! is first sent [`ServerMsg::Services`]: the reflectors, the relay and its relay token, so
//! it can look for paths while it sets up its peers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::control::{ct_eq, expected_proof, ClientMsg, Hello, ServerMsg};
use mesh_proto::{relay, Key};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::frame::{self, FrameReader, ReadError, WriteError};
use crate::snapshot::{Snapshot, Status};
use crate::state::{random32, Coordinator, EndpointReport};

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
    W: AsyncWrite + Unpin,
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

async fn send<W: AsyncWrite + Unpin>(w: &mut W, msg: &ServerMsg) -> Result<(), Fail> {
    match tokio::time::timeout(WRITE_TIMEOUT, frame::write(w, msg)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Fail::End(End::Failed("node stopped reading".into()))),
    }
}

/// Sends `Denied` (best effort) and reports it.
async fn deny<W: AsyncWrite + Unpin>(w: &mut W, reason: String) -> End {
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
    W: AsyncWrite + Unpin,
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
}

impl<R, W> Session<'_, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    async fn serve(&mut self, hello: &Hello) -> Result<(), Fail> {
        let admitted = self
            .coord
            .admit(hello, self.remote)
            .await
            .map_err(|e| Fail::Deny(e.to_string()))?;
        let mut guard = self.coord.register_session(&self.net, &self.key);
        let mut snapshots: watch::Receiver<Arc<Snapshot>> = admitted.snapshots;
        let first = snapshots.borrow_and_update().clone();
        self.on_snapshot(first).await?;
        loop {
            tokio::select! {
                _ = &mut guard.replaced => return Err(Fail::End(End::Replaced)),
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return Err(Fail::Deny("network deleted".into()));
                    }
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
                    self.record(None).await?;
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
                let msg = match &self.sent {
                    Some(old) => {
                        let changes = snap.changes_since(old, &self.key);
                        if changes.is_empty() {
                            self.sent = Some(snap);
                            return Ok(());
                        }
                        ServerMsg::Changes {
                            version: snap.version,
                            changes,
                        }
                    }
                    None => {
                        let msg = self.first_message(&snap)?;
                        self.send_services().await?;
                        msg
                    }
                };
                self.record(Some(snap.version)).await?;
                self.sent = Some(snap);
                send(self.writer, &msg).await
            }
        }
    }

    /// Tells the member about the NAT traversal services, if the coordinator has any.
    async fn send_services(&mut self) -> Result<(), Fail> {
        let Some(services) = self.coord.services() else {
            return Ok(());
        };
        let msg = ServerMsg::Services {
            reflectors: services.reflectors.clone(),
            relay: services.relay.clone(),
            relay_token: relay::token(&services.relay_secret, &self.key),
        };
        send(self.writer, &msg).await
    }

    /// The first netmap message: changes when the node resumes from a version we can
    /// bring forward, the full map otherwise.
    fn first_message(&mut self, snap: &Snapshot) -> Result<ServerMsg, Fail> {
        if let Some(from) = self.resume.take() {
            match self
                .coord
                .resume_records(&self.net, &self.key, from, snap.version)
            {
                Ok(Some(records)) => {
                    tracing::debug!(from, to = snap.version, "resuming");
                    return Ok(ServerMsg::Changes {
                        version: snap.version,
                        changes: snap.changes_from_log(&self.key, &records),
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("reading the change log: {e}"),
            }
        }
        let netmap = snap
            .netmap_for(&self.key)
            .ok_or_else(|| Fail::End(End::Failed("member vanished".into())))?;
        Ok(ServerMsg::Netmap { netmap })
    }

    async fn record(&self, version: Option<u64>) -> Result<(), Fail> {
        self.coord
            .record_sent(&self.net, &self.key, version)
            .await
            .map_err(|e| {
                tracing::error!("recording the sent netmap: {e}");
                Fail::Deny("coordinator storage failed, try again later".into())
            })
    }
}

#[cfg(test)]
mod tests;
