//! Shared by the integration tests: running the real binary, and fakes of its two servers
//! (meshd's unix socket, the coordinator's admin HTTP API), each a thread that answers with
//! canned responses and records what it was sent.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");

/// Runs meshctl with `args` and `env`, with none of its variables inherited.
pub fn meshctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(MESHCTL);
    cmd.args(args)
        .env_remove("MESHCTL_SOCKET")
        .env_remove("MESHCTL_ADMIN_URL")
        .env_remove("MESHCTL_ADMIN_TOKEN_FILE")
        .env_remove("MESHCTL_ADMIN_PIN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Asserts success with an empty stderr; returns stdout.
pub fn assert_ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", stderr(out));
    assert_eq!(stderr(out), "", "stderr not empty");
    stdout(out)
}

/// Asserts exit code 1 with exactly `want` + newline on stderr; returns stdout.
pub fn assert_error(out: &Output, want: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(out));
    assert_eq!(stderr(out), format!("{want}\n"));
    stdout(out)
}

/// A fake meshd: answers the n-th connection with `answers[n]` (the last one repeats),
/// one JSON line each, and records every request line.
pub struct FakeMeshd {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    requests: Arc<Mutex<Vec<serde_json::Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeMeshd {
    pub fn start(answers: Vec<serde_json::Value>) -> FakeMeshd {
        assert!(!answers.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("meshd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for n in 0.. {
                    let (stream, _) = listener.accept().unwrap();
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    requests
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&line).unwrap());
                    let answer = &answers[n.min(answers.len() - 1)];
                    let mut stream = reader.into_inner();
                    let _ = writeln!(stream, "{answer}");
                }
            })
        };
        FakeMeshd {
            _dir: dir,
            socket,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn socket(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeMeshd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request as the fake coordinator saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A fake coordinator admin API on 127.0.0.1: answers the n-th request with `answers[n]`
/// (status, body; the last repeats) and records the requests. Plain HTTP, or HTTPS with a
/// fresh self-signed certificate ([`FakeCoordinator::start_tls`]).
pub struct FakeCoordinator {
    pub url: String,
    /// The certificate's pin (`sha256:…`), for HTTPS.
    pub pin: Option<String>,
    /// The certificate (DER), for HTTPS.
    pub cert_der: Vec<u8>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: std::net::SocketAddr,
}

/// Reads one request from `stream`, records it, writes `answer`; answers what is not
/// HTTP (a TLS ClientHello) with a 400, like hyper.
fn exchange(
    stream: impl std::io::Read + std::io::Write,
    requests: &Mutex<Vec<Recorded>>,
    answer: &(u16, String),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    match read_request(&mut reader) {
        Ok(request) => requests.lock().unwrap().push(request),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let mut stream = reader.into_inner();
            stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )?;
            return stream.flush();
        }
        Err(e) => return Err(e),
    }
    let (status, body) = answer;
    let mut stream = reader.into_inner();
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

fn read_request(reader: &mut impl std::io::BufRead) -> std::io::Result<Recorded> {
    let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    if parts.next() != Some("HTTP/1.1") {
        return Err(bad());
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').ok_or_else(bad)?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(Ok(0), |(_, v)| v.parse().map_err(|_| bad()))?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Recorded {
        method,
        path,
        headers,
        body,
    })
}

impl FakeCoordinator {
    pub fn start(answers: Vec<(u16, String)>) -> FakeCoordinator {
        FakeCoordinator::spawn(answers, None)
    }

    /// Like [`FakeCoordinator::start`], over TLS with a new self-signed certificate.
    pub fn start_tls(answers: Vec<(u16, String)>) -> FakeCoordinator {
        let made = rcgen::generate_simple_self_signed(vec!["wiremesh-coordinator".into()]).unwrap();
        let cert = rustls::pki_types::CertificateDer::from(made.cert.der().to_vec());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        FakeCoordinator::spawn(answers, Some((Arc::new(config), made.cert.der().to_vec())))
    }

    fn spawn(
        answers: Vec<(u16, String)>,
        tls: Option<(Arc<rustls::ServerConfig>, Vec<u8>)>,
    ) -> FakeCoordinator {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (config, cert_der) = match tls {
            Some((config, der)) => (Some(config), der),
            None => (None, Vec::new()),
        };
        let thread = {
            let (requests, stop, config) = (requests.clone(), stop.clone(), config.clone());
            std::thread::spawn(move || {
                for n in 0.. {
                    let (stream, _) = listener.accept().unwrap();
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let answer = &answers[n.min(answers.len() - 1)];
                    // A client that gives up (a wrong pin, plain HTTP) records nothing.
                    let _ = match &config {
                        Some(config) => {
                            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                            exchange(rustls::StreamOwned::new(conn, stream), &requests, answer)
                        }
                        None => exchange(stream, &requests, answer),
                    };
                }
            })
        };
        let pin = config.map(|_| mesh_proto::control::CertPin::of_der(&cert_der).to_string());
        FakeCoordinator {
            url: format!("{}://{addr}", if pin.is_some() { "https" } else { "http" }),
            pin,
            cert_der,
            requests,
            stop,
            thread: Some(thread),
            addr,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The only request; panics unless there was exactly one.
    pub fn request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        requests[0].clone()
    }
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A 0600 token file holding `token` and a newline.
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}
