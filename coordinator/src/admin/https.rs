//! The admin API over HTTPS: a rustls server configuration (ring, TLS 1.2 and 1.3, ALPN
//! `http/1.1`) made from the coordinator's own certificate ([`AdminTls::from_identity`],
//! the one QUIC serves and nodes pin) or from an operator's PEM files
//! ([`AdminTls::from_pem_files`]), and [`serve`], the accept loop that runs the axum router
//! on every TLS connection.
//!
//! Why a hand-written loop (tokio-rustls + hyper's HTTP/1.1 server, the pieces
//! `axum::serve` is made of) rather than axum-server: its `tls-rustls` feature pulls
//! aws-lc-rs, and here every limit is in one place. A TLS handshake must finish within
//! [`HANDSHAKE_TIMEOUT`] and each request's headers within [`HEADER_TIMEOUT`] (which also
//! closes idle keep-alive connections), and at most [`MAX_CONNECTIONS`] connections,
//! handshakes included, are open at once; further clients wait in the kernel's accept
//! queue. Shutdown matches `axum::serve(..).with_graceful_shutdown`: stop accepting, drop
//! unfinished handshakes, let each connection finish the request it is serving, close idle
//! ones, and return once all are closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use mesh_proto::control::CertPin;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::identity::Identity;

/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers (also the keep-alive idle limit).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections (TLS handshakes included) open at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Why the admin API's certificate or key cannot be used. Each message is one line naming
/// the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("{flag} {}: {reason}", path.display())]
    Read {
        /// `--http-cert` or `--http-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (not `source`: the message says it already, and `{:#}` chains would repeat it).
        reason: io::Error,
    },
    /// A PEM section is malformed.
    #[error("{flag} {}: not valid PEM: {message}", path.display())]
    BadPem {
        /// `--http-cert` or `--http-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        message: String,
    },
    /// The certificate file holds no certificate.
    #[error("--http-cert {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("--http-key {}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key file is readable by others. (Group access is allowed: Debian's
    /// `ssl-cert` group owns shared keys this way.)
    #[error("--http-key {} is accessible by others (mode {mode:03o}); run chmod o-rwx on it", path.display())]
    KeyPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The private key is not the certificate's.
    #[error("--http-key {} does not match the certificate in --http-cert {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the certificate or key (e.g. an unsupported key type).
    #[error("{what}: {reason}")]
    Rejected {
        /// What was refused.
        what: String,
        /// rustls's reason.
        reason: rustls::Error,
    },
}

/// The admin API's TLS server configuration and the pin of its certificate.
#[derive(Clone)]
pub struct AdminTls {
    /// What the accept loop serves.
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the end-entity certificate (what `meshctl admin --admin-pin` checks).
    pub pin: CertPin,
}

impl std::fmt::Debug for AdminTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTls")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

impl AdminTls {
    /// The coordinator's own certificate and key (the QUIC endpoint's; same pin).
    pub fn from_identity(identity: &Identity) -> Result<AdminTls, TlsError> {
        let chain = vec![CertificateDer::from(identity.cert_der.clone())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone()));
        AdminTls::new(chain, key).map_err(|reason| TlsError::Rejected {
            what: "the coordinator's certificate".to_owned(),
            reason,
        })
    }

    /// A PEM certificate chain (end-entity first) and its PEM private key (PKCS#8, PKCS#1
    /// or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<AdminTls, TlsError> {
        let chain = read_chain(cert)?;
        let key_der = read_key(key)?;
        AdminTls::new(chain, key_der).map_err(|reason| match reason {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                }
            }
            reason => TlsError::Rejected {
                what: format!(
                    "--http-cert {} / --http-key {}",
                    cert.display(),
                    key.display()
                ),
                reason,
            },
        })
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<AdminTls, rustls::Error> {
        let pin = chain
            .first()
            .map(|c| CertPin::of_der(c))
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AdminTls {
            config: Arc::new(config),
            pin,
        })
    }
}

fn read_file(flag: &'static str, path: &Path, private: bool) -> Result<Vec<u8>, TlsError> {
    use std::io::Read as _;
    let err = |reason| TlsError::Read {
        flag,
        path: path.to_owned(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if meta.is_dir() {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory",
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if private && mode & 0o007 != 0 {
        return Err(TlsError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(err)?;
    Ok(bytes)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file("--http-cert", path, false)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            flag: "--http-cert",
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file("--http-key", path, true)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        e => TlsError::BadPem {
            flag: "--http-key",
            path: path.to_owned(),
            message: e.to_string(),
        },
    })
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then shuts down
/// gracefully (see the module doc) and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_limited(listener, tls, app, shutdown, MAX_CONNECTIONS).await
}

/// [`serve`] with at most `max_connections` open at once.
async fn serve_limited(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
    max_connections: usize,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    // Each connection task holds a permit; all of them back means all connections closed.
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => {
                permit.map_err(|_| io::Error::other("admin API connection limit closed"))?
            }
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("admin API: accept failed: {e}");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            peer,
            acceptor.clone(),
            app.clone(),
            stop_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection: the handshake (bounded), then HTTP/1.1 until the client leaves, a
/// timeout closes it, or shutdown.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "admin API: TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "admin API: no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs());
                return;
            }
        },
        () = stopped(&mut stop) => return,
    };
    let mut conn = pin!(http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app)));
    let done = tokio::select! {
        done = conn.as_mut() => done,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = done {
        tracing::debug!(%peer, "admin API connection: {e}");
    }
}

/// Resolves once the server is stopping, or its loop is gone (the sender is dropped).
/// Also ends the dashboard's change feeds ([`crate::admin::web`]).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests;
