//! Shared by the integration tests: running the real binary, and fakes of its two servers
//! (meshd's unix socket, the coordinator's admin HTTP API), each a thread that answers with
//! canned responses and records what it was sent.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
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
/// (status, body; the last repeats) and records the requests.
pub struct FakeCoordinator {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: std::net::SocketAddr,
}

impl FakeCoordinator {
    pub fn start(answers: Vec<(u16, String)>) -> FakeCoordinator {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
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
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_owned();
                    let path = parts.next().unwrap_or_default().to_owned();
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (name, value) = h.split_once(':').unwrap();
                        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                    }
                    let len = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    requests.lock().unwrap().push(Recorded {
                        method,
                        path,
                        headers,
                        body,
                    });
                    let (status, body) = &answers[n.min(answers.len() - 1)];
                    let mut stream = reader.into_inner();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body.as_bytes());
                }
            })
        };
        FakeCoordinator {
            url: format!("http://{addr}"),
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
