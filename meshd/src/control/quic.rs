//! The QUIC client: TLS 1.3 where the coordinator's certificate is trusted only if its
//! SHA-256 matches the pin (no CA, no hostname), like kubeadm's discovery hash.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_proto::control::{CertPin, ALPN, EXPORTER_LABEL};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The TLS server name the coordinator's certificate carries; not checked (the pin is).
const SERVER_NAME: &str = "wiremesh-coordinator";

/// Trusts exactly one certificate: the pinned one.
#[derive(Debug)]
struct PinVerifier {
    pin: CertPin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = CertPin::of_der(end_entity.as_ref());
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "coordinator certificate is {got}, expected pin {}",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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
    /// Binds an ephemeral UDP port.
    pub fn new() -> anyhow::Result<Client> {
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
            .context("binding the control-plane UDP socket")?;
        Ok(Client { endpoint })
    }

    /// Connects to `addr` trusting only `pin`, opens the control stream.
    pub async fn connect(&self, addr: SocketAddr, pin: CertPin) -> anyhow::Result<Connection> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, provider }))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
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
