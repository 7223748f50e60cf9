//! The verifier called directly, and whole handshakes in memory against a rustls server
//! holding a self-signed rcgen certificate.

use rustls::pki_types::PrivateKeyDer;
use rustls::server::ServerConfig;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConnection, ConnectionCommon, ServerConnection};

use super::*;

/// A self-signed certificate for `wiremesh-coordinator` and its PKCS#8 key.
fn self_signed() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["wiremesh-coordinator".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    (made.cert.der().clone(), key)
}

/// A server presenting `cert` and signing with `key` (not checked to match: a server
/// that has the certificate but not its key is one of the cases).
fn server(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    versions: &[&'static SupportedProtocolVersion],
) -> ServerConnection {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = provider.key_provider.load_private_key(key).unwrap();
    let resolver = SingleCertAndKey::from(CertifiedKey::new(vec![cert], key));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"wiremesh/1".to_vec(), b"http/1.1".to_vec()];
    ServerConnection::new(Arc::new(config)).unwrap()
}

/// Runs the handshake in memory; the first error either side reports.
fn handshake(
    config: ClientConfig,
    server: &mut ServerConnection,
) -> Result<ClientConnection, rustls::Error> {
    // Any name: the pin is what is checked.
    let name = ServerName::try_from("somewhere.example").unwrap();
    let mut client = ClientConnection::new(Arc::new(config), name).unwrap();
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(client);
        }
        flight(&mut client, server)?;
        flight(server, &mut client)?;
    }
    panic!("the handshake did not finish in 10 round trips");
}

/// Moves everything `from` has to send to `to`, which processes it.
fn flight<A, B>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
) -> Result<(), rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
    }
    to.process_new_packets().map(|_| ())
}

fn verify(
    verifier: &PinnedCert,
    cert: &CertificateDer<'_>,
    name: &str,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name).unwrap();
    verifier
        .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn accepts_the_pinned_certificate_under_any_server_name() {
    let (cert, _) = self_signed();
    let verifier = PinnedCert::new(CertPin::of_der(&cert));
    for name in ["wiremesh-coordinator", "other.example", "192.0.2.1"] {
        verify(&verifier, &cert, name).unwrap();
    }
}

#[test]
fn refuses_another_certificate_naming_both_pins() {
    let (cert, _) = self_signed();
    let wrong = CertPin([7; 32]);
    let err = verify(&PinnedCert::new(wrong), &cert, "wiremesh-coordinator").unwrap_err();
    let got = CertPin::of_der(&cert);
    assert_eq!(
        PinMismatch::of(&err),
        Some(PinMismatch {
            expected: wrong,
            got
        })
    );
    assert_eq!(
        err.to_string(),
        format!("other error: coordinator certificate is {got}, expected pin {wrong}")
    );
    assert_eq!(PinMismatch::of(&rustls::Error::DecryptError), None);
}

#[test]
fn tls13_and_tls12_handshakes_with_the_pinned_certificate_succeed() {
    let (cert, key) = self_signed();
    let pin = CertPin::of_der(&cert);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut server = server(cert.clone(), key.clone_key(), &[version]);
        let client = handshake(client_config(pin, &[b"http/1.1"]), &mut server)
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        assert_eq!(client.protocol_version(), Some(version.version));
        assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
}

#[test]
fn a_wrong_pin_fails_the_handshake() {
    let (cert, key) = self_signed();
    let mut server = server(cert, key, rustls::DEFAULT_VERSIONS);
    let err = handshake(client_config(CertPin([7; 32]), &[]), &mut server).unwrap_err();
    assert!(PinMismatch::of(&err).is_some(), "{err}");
}

#[test]
fn the_server_must_hold_the_pinned_certificates_key() {
    let (cert, _) = self_signed();
    let (_, other_key) = self_signed();
    let pin = CertPin::of_der(&cert);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut server = server(cert.clone(), other_key.clone_key(), &[version]);
        let err = handshake(client_config(pin, &[]), &mut server).unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{version:?}: {err}"
        );
    }
}

#[test]
fn the_quic_config_offers_tls13_only() {
    let (cert, key) = self_signed();
    let pin = CertPin::of_der(&cert);
    let mut server13 = server(cert.clone(), key.clone_key(), rustls::DEFAULT_VERSIONS);
    let client = handshake(quic_client_config(pin, &[b"wiremesh/1"]), &mut server13).unwrap();
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(client.alpn_protocol(), Some(&b"wiremesh/1"[..]));
    let mut server12 = server(cert, key, &[&rustls::version::TLS12]);
    assert!(handshake(quic_client_config(pin, &[]), &mut server12).is_err());
}
