//! The admin router over real TLS on 127.0.0.1:0, with a rustls client that trusts exactly
//! the pinned certificate; PEM loading and its one-line errors.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::identity::DataDir;
use crate::testutil::Harness;

const TOKEN: &str = "test-admin-token";

/// The router over TLS on 127.0.0.1:0 until `stop` is sent.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
    _harness: Harness,
}

impl Server {
    async fn start(tls: &AdminTls) -> Server {
        Server::start_limited(tls, MAX_CONNECTIONS).await
    }

    async fn start_limited(tls: &AdminTls, max_connections: usize) -> Server {
        let harness = Harness::new();
        let app = crate::admin::router(harness.coord.clone(), TOKEN);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_limited(
            listener,
            tls.config.clone(),
            app,
            shutdown,
            max_connections,
        ));
        Server {
            addr,
            stop: Some(stop),
            task,
            _harness: harness,
        }
    }

    /// Stops the server and waits (at most 5 s) for `serve` to return.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn tls_connect(
    addr: SocketAddr,
    pin: CertPin,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = mesh_pin::client_config(pin, &[b"h2", b"http/1.1"]);
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("wiremesh-coordinator").unwrap(), tcp)
        .await
}

/// One `GET path` over a fresh pinned TLS connection; the status code and body.
async fn get(addr: SocketAddr, pin: CertPin, path: &str, token: Option<&str>) -> (u16, String) {
    let mut tls = tls_connect(addr, pin).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: coordinator\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn identity_tls() -> (tempfile::TempDir, AdminTls, CertPin) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path());
    dir.create().unwrap();
    let identity = dir.load_or_create_identity().unwrap();
    let tls = AdminTls::from_identity(&identity).unwrap();
    (tmp, tls, identity.pin)
}

#[tokio::test]
async fn serves_the_router_with_the_coordinators_certificate() {
    let (_tmp, tls, pin) = identity_tls();
    assert_eq!(tls.pin, pin, "the admin API shows the pin nodes check");
    let server = Server::start(&tls).await;
    let (status, body) = get(server.addr, pin, "/api/networks", Some(TOKEN)).await;
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, _) = get(server.addr, pin, "/api/networks", None).await;
    assert_eq!(status, 401);
    let (status, _) = get(server.addr, pin, "/api/networks", Some("wrong")).await;
    assert_eq!(status, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_pinning_another_certificate_is_refused() {
    let (_tmp, tls, _) = identity_tls();
    let server = Server::start(&tls).await;
    let wrong = CertPin([7; 32]);
    let err = tls_connect(server.addr, wrong).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!("expected pin {wrong}")),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let (_tmp, tls, pin) = identity_tls();
    let server = Server::start(&tls).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /api/networks HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    // The server is unharmed.
    let (status, _) = get(server.addr, pin, "/api/networks", Some(TOKEN)).await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let (_tmp, tls, _) = identity_tls();
    let server = Server::start(&tls).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    // Paused time advances while everything waits: the server's timer fires.
    let n = tcp.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the server closes without a word");
    assert!(
        started.elapsed() >= HANDSHAKE_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_unfinished_handshakes() {
    let (_tmp, tls, pin) = identity_tls();
    let server = Server::start(&tls).await;
    // An idle keep-alive connection after one request, and a TCP connection that never
    // starts its handshake: neither holds shutdown up.
    let mut idle = tls_connect(server.addr, pin).await.unwrap();
    idle.write_all(
        format!("GET /api/networks HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    server.shutdown().await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let (_tmp, tls, pin) = identity_tls();
    let server = Server::start_limited(&tls, 1).await;
    // The one slot is taken by a client that never starts its handshake.
    let silent = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The next one is accepted by the kernel but not served.
    let waiting = tokio::spawn(get(server.addr, pin, "/api/networks", Some(TOKEN)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served beyond the cap");
    // The slot frees up when the silent client leaves.
    drop(silent);
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(status, 200);
    server.shutdown().await;
}

/// A self-signed certificate and key for `name`, as PEM.
fn pem_pair(name: &str) -> (String, String, CertPin) {
    let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (
        made.cert.pem(),
        made.signing_key.serialize_pem(),
        CertPin::of_der(made.cert.der()),
    )
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn serves_an_operator_certificate_from_pem_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let (cert_pem, key_pem, pin) = pem_pair("admin.example.net");
    write(&cert, &cert_pem, 0o644);
    // Group-readable keys are fine (the ssl-cert group); others are not.
    write(&key, &key_pem, 0o640);
    let tls = AdminTls::from_pem_files(&cert, &key).unwrap();
    assert_eq!(tls.pin, pin);
    let server = Server::start(&tls).await;
    let (status, _) = get(server.addr, pin, "/api/networks", Some(TOKEN)).await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

#[test]
fn bad_pem_files_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    let (cert_pem, key_pem, _) = pem_pair("a.example");
    let (_, other_key_pem, _) = pem_pair("b.example");
    write(&p("cert.pem"), &cert_pem, 0o644);
    write(&p("key.pem"), &key_pem, 0o600);
    write(&p("other-key.pem"), &other_key_pem, 0o600);
    write(&p("open-key.pem"), &key_pem, 0o644);
    write(&p("garbage"), "hello\n", 0o600);
    write(
        &p("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
        0o600,
    );
    let shown = |name: &str| p(name).display().to_string();

    let err = |cert: &str, key: &str| {
        AdminTls::from_pem_files(&p(cert), &p(key))
            .unwrap_err()
            .to_string()
    };
    for (cert, key, want) in [
        (
            "missing.pem",
            "key.pem",
            format!(
                "--http-cert {}: No such file or directory (os error 2)",
                shown("missing.pem")
            ),
        ),
        (
            "cert.pem",
            "missing.pem",
            format!(
                "--http-key {}: No such file or directory (os error 2)",
                shown("missing.pem")
            ),
        ),
        (
            "garbage",
            "key.pem",
            format!(
                "--http-cert {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
                shown("garbage")
            ),
        ),
        (
            "key.pem",
            "key.pem",
            format!(
                "--http-cert {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
                shown("key.pem")
            ),
        ),
        (
            "cert.pem",
            "cert.pem",
            format!("--http-key {} is accessible by others (mode 644); run chmod o-rwx on it", shown("cert.pem")),
        ),
        (
            "cert.pem",
            "garbage",
            format!("--http-key {}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)", shown("garbage")),
        ),
        (
            "cert.pem",
            "open-key.pem",
            format!("--http-key {} is accessible by others (mode 644); run chmod o-rwx on it", shown("open-key.pem")),
        ),
        (
            "cert.pem",
            "other-key.pem",
            format!(
                "--http-key {} does not match the certificate in --http-cert {}",
                shown("other-key.pem"),
                shown("cert.pem")
            ),
        ),
    ] {
        assert_eq!(err(cert, key), want, "{cert} {key}");
    }
    let broken = err("broken.pem", "key.pem");
    assert!(
        broken.starts_with(&format!(
            "--http-cert {}: not valid PEM: ",
            shown("broken.pem")
        )),
        "{broken}"
    );
    let dir = AdminTls::from_pem_files(tmp.path(), &p("key.pem"))
        .unwrap_err()
        .to_string();
    assert!(
        dir.starts_with("--http-cert ") && dir.ends_with("is a directory"),
        "{dir}"
    );
    for e in [broken, dir] {
        assert!(!e.contains('\n'), "{e}");
    }
}
