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
    /// Binds an ephemeral UDP port.
    pub fn new() -> anyhow::Result<Client> {
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
            .context("binding the control-plane UDP socket")?;
        Ok(Client { endpoint })
    }

    /// Connects to `addr` trusting only `pin`, opens the control stream.
    pub async fn connect(&self, addr: SocketAddr, pin: CertPin) -> anyhow::Result<Connection> {
        let tls = mesh_pin::quic_client_config(pin, &[ALPN]);
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        transport.max_idle_timeout(Some(Duration::from_secs(15).try_into()?));
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
