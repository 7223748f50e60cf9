//! The QUIC client: TLS 1.3 where the coordinator's certificate is trusted only if its
//! SHA-256 matches the pin (no CA, no hostname), like kubeadm's discovery hash
//! ([`mesh_pin::quic_client_config`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_proto::control::{CertPin, ALPN, EXPORTER_LABEL};

/// The TLS server name the coordinator's certificate carries; not checked (the pin is).
const SERVER_NAME: &str = "wiremesh-coordinator";

/// How the client notices that a coordinator stopped answering: QUIC keep-alive (a PING
/// when nothing else was sent) and idle timeout (the connection is dead after this long
/// without a packet from the coordinator). quinn uses the smaller of both sides' idle
/// timeouts; the coordinator's is 15 s, so the client's wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Send a keep-alive after this long without sending.
    pub keep_alive: Duration,
    /// Give the connection up after this long without hearing from the coordinator.
    pub idle_timeout: Duration,
}

impl Liveness {
    /// With one coordinator there is nowhere to fail over to: keep-alive 5 s (the NAT
    /// mapping), idle timeout 15 s; a coordinator holds 10,000 nodes at 2,000 keep-alives a
    /// second. (A restarted coordinator resets old connections at once anyway.)
    pub const SINGLE: Liveness = Liveness {
        keep_alive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(15),
    };
    /// With several coordinators: a dead one is noticed within 4 s, in time to fail over
    /// within about 5 s; it costs each coordinator one keep-alive per node every 1.5 s.
    pub const FAILOVER: Liveness = Liveness {
        keep_alive: Duration::from_millis(1500),
        idle_timeout: Duration::from_secs(4),
    };

    /// The liveness for a membership listing `coordinators` addresses.
    pub fn for_coordinators(coordinators: usize) -> Liveness {
        if coordinators > 1 {
            Liveness::FAILOVER
        } else {
            Liveness::SINGLE
        }
    }
}

/// A live, authenticated-by-pin QUIC connection with its one control stream.
#[derive(Debug)]
pub struct Connection {
    /// Kept so the connection lives as long as the streams.
    pub connection: quinn::Connection,
    /// Node → coordinator.
    pub send: quinn::SendStream,
    /// Coordinator → node.
    pub recv: quinn::RecvStream,
    /// TLS exporter secret binding the key proof to this connection.
    pub exporter: [u8; 32],
}

/// A client endpoint (its own UDP socket) for reaching coordinators.
#[derive(Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
}

impl Client {
    /// Binds an ephemeral UDP port, dual-stack where the kernel has IPv6 (quinn maps IPv4
    /// coordinators into it), so coordinators of either family are reachable.
    pub fn new() -> anyhow::Result<Client> {
        let (socket, _) = crate::device::udp::bind_dual_stack(0)
            .context("binding the control-plane UDP socket")?;
        let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
                .context("starting the control-plane QUIC endpoint")?;
        Ok(Client { endpoint })
    }

    /// Connects to `addr` trusting only `pin`, opens the control stream.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        pin: CertPin,
        liveness: Liveness,
    ) -> anyhow::Result<Connection> {
        let tls = mesh_pin::quic_client_config(pin, &[ALPN]);
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(liveness.keep_alive));
        transport.max_idle_timeout(Some(liveness.idle_timeout.try_into()?));
        config.transport_config(Arc::new(transport));

        let connection = self
            .endpoint
            .connect_with(config, addr, SERVER_NAME)?
            .await
            .with_context(|| format!("connecting to coordinator {addr}"))?;
        let mut exporter = [0u8; 32];
        connection
            .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .map_err(|_| anyhow::anyhow!("TLS exporter unavailable"))?;
        let (send, recv) = connection
            .open_bi()
            .await
            .context("opening the control stream")?;
        Ok(Connection {
            connection,
            send,
            recv,
            exporter,
        })
    }
}
