//! The QUIC control endpoint: TLS 1.3 with the coordinator's self-signed certificate
//! (nodes pin its hash), ALPN [`ALPN`], one bidirectional stream per connection opened by
//! the node, each carrying one [`crate::control::session`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::control::{ALPN, EXPORTER_LABEL};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use sha2::{Digest as _, Sha256};

use crate::control::frame::QuicWriter;
use crate::control::session::{self, End, HANDSHAKE_TIMEOUT};
use crate::control::state::Coordinator;
use crate::identity::Identity;
use crate::limit::{Rate, RateLimiter};

/// QUIC keep-alive: keeps NAT mappings open and notices dead nodes.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// A connection silent this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections beyond this are refused (bounds memory under a flood).
pub const MAX_CONNECTIONS: usize = 20_000;
/// How long the last frame (a `Denied`) gets to reach the node before the connection closes.
const LINGER: Duration = Duration::from_secs(2);

/// Application close codes.
mod code {
    pub const DONE: u32 = 0;
    pub const DENIED: u32 = 1;
    pub const REPLACED: u32 = 2;
    pub const FAILED: u32 = 3;
}

/// Why the endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The certificate or key is unusable.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS configuration does not suit QUIC.
    #[error("QUIC TLS setup: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// Binding the UDP socket failed.
    #[error("binding QUIC to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The server configuration: TLS 1.3 only (ring), our certificate, ALPN, keep-alive and
/// idle timeout, one bidirectional stream per connection.
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, QuicError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(identity.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone())),
        )?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
                .unwrap_or(quinn::VarInt::from_u32(15_000).into()),
        ))
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        // Nodes send small messages: small receive windows bound memory per connection.
        .stream_receive_window((256u32 * 1024).into())
        .receive_window((512u32 * 1024).into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The endpoint settings: the stateless-reset key and the connection-ID key derived from
/// the coordinator's private key (SHA-256 of a label and the key), so the same coordinator
/// restarted recognises the connection IDs it issued before (quinn drops packets whose ID
/// does not validate) and answers them with resets the nodes accept. Nodes then notice a
/// crash and restart on their next packet (within the nodes' 5 s keep-alive) instead of
/// after the idle timeout.
pub fn endpoint_config(identity: &Identity) -> quinn::EndpointConfig {
    let derive = |label: &[u8]| -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(label);
        h.update(&identity.key_der);
        h.finalize().into()
    };
    let secret = derive(b"wiremesh-quic-stateless-reset-v1");
    let cid = derive(b"wiremesh-quic-connection-id-v1");
    let cid_key = u64::from_be_bytes([
        cid[0], cid[1], cid[2], cid[3], cid[4], cid[5], cid[6], cid[7],
    ]);
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &secret,
    )));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    // quinn sends at most one reset per 20 ms by default; after a restart every node's
    // next keep-alive needs one (10,000 nodes: 2,000 a second). A reset is smaller than
    // the packet that caused it, so this amplifies nothing.
    config.min_reset_interval(RESET_INTERVAL);
    config
}

/// Shortest time between two stateless resets.
pub const RESET_INTERVAL: Duration = Duration::from_micros(50);
/// Socket buffers asked for (the kernel caps them at `net.core.rmem_max`/`wmem_max`):
/// thousands of nodes send at once after a restart or a change.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Binds the endpoint.
pub fn bind(identity: &Identity, addr: SocketAddr) -> Result<quinn::Endpoint, QuicError> {
    let config = server_config(identity)?;
    let socket = crate::udp::bind_std(addr).map_err(|source| QuicError::Bind { addr, source })?;
    let sock = socket2::SockRef::from(&socket);
    if let Err(e) = sock
        .set_recv_buffer_size(SOCKET_BUFFER)
        .and_then(|()| sock.set_send_buffer_size(SOCKET_BUFFER))
    {
        tracing::debug!("socket buffer size: {e}");
    }
    quinn::Endpoint::new(
        endpoint_config(identity),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| QuicError::Bind { addr, source })
}

/// QUIC connection attempts (each a TLS handshake, the costly part) one source IP may
/// start: 200 at once (a site's nodes reconnecting together after a restart), then 20 a
/// second. Attempts beyond it are ignored, counted in
/// `wiremesh_handshakes_refused_total{reason="rate-limited"}`; the nodes retry.
pub const HANDSHAKES_PER_SOURCE: Rate = Rate {
    per_sec: 20.0,
    burst: 200.0,
};

/// Accepts connections until the endpoint is closed, each in its own task; attempts beyond
/// [`HANDSHAKES_PER_SOURCE`] or [`MAX_CONNECTIONS`] are turned away before any handshake
/// work.
pub async fn serve(endpoint: quinn::Endpoint, coord: Arc<Coordinator>) {
    serve_limited(endpoint, coord, HANDSHAKES_PER_SOURCE).await;
}

/// [`serve`] with another limit of connection attempts per source (tests).
pub async fn serve_limited(endpoint: quinn::Endpoint, coord: Arc<Coordinator>, limit: Rate) {
    let live = Arc::new(AtomicUsize::new(0));
    let mut per_source = RateLimiter::new(limit);
    let stats = coord.control_stats();
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        if !per_source.allow(remote.ip(), std::time::Instant::now()) {
            // Not even a refusal: answering a flood is work too.
            tracing::debug!(%remote, "too many connection attempts from this source, ignoring");
            stats.handshakes_rate_limited.inc();
            incoming.ignore();
            continue;
        }
        if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::warn!(%remote, "too many connections, refusing");
            stats.handshakes_refused_full.inc();
            incoming.refuse();
            continue;
        }
        live.fetch_add(1, Ordering::Relaxed);
        let (coord, live) = (coord.clone(), live.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            if let Err(e) = handle(incoming, &coord).await {
                tracing::debug!(%remote, "connection failed: {e}");
            }
            live.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Why a connection ended before its session started.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("handshake: {0}")]
    Connect(#[from] quinn::ConnectionError),
    #[error("no stream opened within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("keying material export failed")]
    Export,
}

async fn handle(incoming: quinn::Incoming, coord: &Coordinator) -> Result<(), ConnError> {
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming)
        .await
        .map_err(|_| ConnError::Timeout)??;
    let (send, recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| ConnError::Timeout)??;
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .map_err(|_| ConnError::Export)?;
    let mut writer = QuicWriter(send);
    let end = session::run(coord, recv, &mut writer, exporter, conn.remote_address()).await;
    let mut send = writer.0;
    let (code, reason): (u32, &[u8]) = match &end {
        End::Closed => (code::DONE, b"bye"),
        End::Denied(_) => (code::DENIED, b"denied"),
        End::Replaced => (code::REPLACED, b"replaced by a newer connection"),
        End::Failed(_) => (code::FAILED, b"failed"),
    };
    // Let the last frame arrive before closing (close discards unsent stream data).
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(LINGER, send.stopped()).await;
    }
    conn.close(code.into(), reason);
    Ok(())
}
