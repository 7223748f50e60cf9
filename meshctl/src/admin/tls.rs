//! https to the admin API, trusting exactly one certificate: the pinned one (SHA-256 of its
//! DER bytes, `sha256:…`, like `meshctl join --pin`). No certificate authorities, no
//! hostname check; the handshake signature is still verified, so the server must hold the
//! pinned certificate's key.
//!
//! ureq's own rustls support builds its verifier from root certificates only, so this is
//! a TLS step of our own in ureq's connector chain (`()` → TCP → [`PinnedTls`]), with
//! rustls on ring (no aws-lc-rs; the verifier and configuration from [`mesh_pin`]) and
//! none of ureq's TLS features. The connector API is in ureq's `unversioned` module: a ureq
//! upgrade may need this file adjusted.

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::sync::Arc;

use mesh_pin::PinMismatch;
use mesh_proto::control::CertPin;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use ureq::unversioned::transport::{
    Buffers as _, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// The server name sent when the URL's host is not a valid one (the pin is what counts).
const FALLBACK_NAME: &str = "wiremesh-coordinator";

/// A failed TLS handshake, for [`super::client::Client`]'s messages.
#[derive(Debug)]
pub enum HandshakeError {
    /// The server's certificate is not the pinned one.
    Mismatch(CertPin),
    /// The server did not speak TLS (plain HTTP on an https:// URL, most likely).
    NotTls(String),
    /// Anything else rustls refused (an alert, no common cipher suite …).
    Other(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Mismatch(got) => write!(f, "the certificate presented is {got}"),
            HandshakeError::NotTls(e) | HandshakeError::Other(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The TLS step of the connector chain: wraps https connections, passes others through.
#[derive(Debug)]
pub struct PinnedTls {
    config: Arc<ClientConfig>,
}

impl PinnedTls {
    /// A TLS client (TLS 1.2 and 1.3, ALPN `http/1.1`) that trusts only `pin`.
    pub fn new(pin: CertPin) -> PinnedTls {
        PinnedTls {
            config: Arc::new(mesh_pin::client_config(pin, &[b"http/1.1"])),
        }
    }
}

/// The name to send (SNI) for `host` as it appears in a URL (IPv6 in brackets); an IP
/// address sends none.
fn server_name(host: &str) -> Result<ServerName<'static>, ureq::Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .or_else(|_| ServerName::try_from(FALLBACK_NAME))
        .map_err(|e| ureq::Error::Other(Box::new(HandshakeError::Other(e.to_string()))))
}

/// Turns a handshake failure into a ureq error carrying a [`HandshakeError`].
fn handshake_error(e: io::Error) -> ureq::Error {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            let closed = "the server closed the connection".to_owned();
            return ureq::Error::Other(Box::new(HandshakeError::NotTls(closed)));
        }
        return ureq::Error::from(e);
    };
    let error = match (PinMismatch::of(tls), tls) {
        (Some(mismatch), _) => HandshakeError::Mismatch(mismatch.got),
        (None, rustls::Error::InvalidMessage(_)) => HandshakeError::NotTls(tls.to_string()),
        (None, _) => HandshakeError::Other(tls.to_string()),
    };
    ureq::Error::Other(Box::new(error))
}

impl<In: Transport> Connector<In> for PinnedTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails<'_>,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let name = server_name(details.uri.host().unwrap_or(FALLBACK_NAME))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| ureq::Error::Other(Box::new(HandshakeError::Other(e.to_string()))))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock).map_err(handshake_error)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// An https connection: ureq's buffers over a rustls stream over the TCP transport.
pub struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn ureq::unversioned::transport::Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
