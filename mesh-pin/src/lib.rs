//! The client side of wiremesh's certificate pinning: a rustls verifier that trusts exactly
//! the server certificate whose SHA-256 is a [`CertPin`] (`sha256:…`, what `meshctl join
//! --pin` and `--admin-pin` take, like kubeadm's discovery hash), and the client
//! configurations built on it. meshd's QUIC client, meshctl's https admin client and the
//! coordinator's tests all use it.
//!
//! The pin replaces the whole web PKI: no certificate authorities, no chain, no validity
//! dates, no revocation and no host name (the coordinator's self-signed certificate names
//! `wiremesh-coordinator`, whatever address it is reached at). The handshake signatures
//! are still verified with the provider's algorithms, so the server must hold the pinned
//! certificate's private key.
//!
//! Left out: the server side (the coordinator loads its own certificate), client
//! certificates (a node proves its WireGuard key inside the control protocol instead, see
//! `mesh_proto::control`), and any provider but ring.

use std::fmt;
use std::sync::Arc;

use mesh_proto::control::{ct_eq, CertPin};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme, SupportedProtocolVersion,
};

/// A rustls [`ServerCertVerifier`] that accepts exactly the end-entity certificate whose
/// SHA-256 is the pin, whatever the server name, and checks TLS 1.2 and 1.3 handshake
/// signatures against that certificate.
#[derive(Debug)]
pub struct PinnedCert {
    pin: CertPin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCert {
    /// Trusts `pin`; signatures are checked with ring's algorithms.
    pub fn new(pin: CertPin) -> PinnedCert {
        PinnedCert::with_provider(pin, &rustls::crypto::ring::default_provider())
    }

    /// Trusts `pin`; signatures are checked with `provider`'s algorithms.
    fn with_provider(pin: CertPin, provider: &CryptoProvider) -> PinnedCert {
        PinnedCert {
            pin,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = CertPin::of_der(end_entity);
        if ct_eq(&got.0, &self.pin.0) {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = PinMismatch {
                expected: self.pin,
                got,
            };
            Err(rustls::Error::Other(OtherError(Arc::new(mismatch))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server presented a certificate other than the pinned one. [`PinnedCert`] returns it
/// as `rustls::Error::Other`, whose text reads `other error: coordinator certificate is
/// sha256:…, expected pin sha256:…`; [`PinMismatch::of`] gets it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinMismatch {
    /// The pin the client trusts.
    pub expected: CertPin,
    /// The pin of the certificate the server presented.
    pub got: CertPin,
}

impl PinMismatch {
    /// The mismatch inside a rustls error, if that is what the error is.
    pub fn of(error: &rustls::Error) -> Option<PinMismatch> {
        match error {
            rustls::Error::Other(OtherError(other)) => other.downcast_ref::<PinMismatch>().copied(),
            _ => None,
        }
    }
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "coordinator certificate is {}, expected pin {}",
            self.got, self.expected
        )
    }
}

impl std::error::Error for PinMismatch {}

/// A client configuration (ring, TLS 1.2 and 1.3, no client certificate) that trusts only
/// `pin` and offers the `alpn` protocols (none if empty).
pub fn client_config(pin: CertPin, alpn: &[&[u8]]) -> ClientConfig {
    build(pin, rustls::DEFAULT_VERSIONS, alpn)
}

/// Like [`client_config`] but TLS 1.3 only, as QUIC requires (RFC 9001, section 4.2).
pub fn quic_client_config(pin: CertPin, alpn: &[&[u8]]) -> ClientConfig {
    build(pin, &[&rustls::version::TLS13], alpn)
}

/// The builder chain both configurations share.
fn build(
    pin: CertPin,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCert::with_provider(pin, &provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        // Fails only for a provider without cipher suites or key exchange groups for the
        // versions; ring has both for TLS 1.2 and 1.3 (and the tests build both).
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[cfg(test)]
mod tests;
