//! The admin API under a schema-based fuzzer (issue 12): a real `coordinator` on loopback
//! with the admin token, a network with real members (simulated nodes that joined over
//! QUIC with a token and hold their sessions, and pending ones that came without), and
//! schemathesis (a schema-based API fuzzer from PyPI) run against its `/api/openapi.json`:
//! no server errors, every answer as documented, no request the document allows refused.
//!
//! schemathesis is a Python tool: `.ci/run` installs the versions pinned in
//! `tests/schemathesis-requirements.txt` with pip. Without it the test fails, saying how to
//! install it. All traffic stays on 127.0.0.1.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ipnet::IpNet;
use mesh_proto::control::{
    self, CertPin, ClientMsg, Hello, JoinToken, ServerMsg, ALPN, EXPORTER_LABEL,
};
use mesh_proto::Key;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::util::{self, TempDir};

/// The schemathesis version the test is written for (its options and checks).
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// How to install it, for the error message.
pub const INSTALL: &str =
    "python3 -m pip install -r tests/schemathesis-requirements.txt (what .ci/run does)";

/// A coordinator on loopback with its own data directory, killed on drop.
pub struct LoopbackCoordinator {
    dir: TempDir,
    child: Option<Child>,
    /// The QUIC control address.
    pub listen: SocketAddr,
    /// The admin HTTP address.
    pub http: SocketAddr,
    /// The admin token.
    pub token: String,
}

impl LoopbackCoordinator {
    /// Starts `coordinator serve` on free loopback ports (no relay) and waits until its
    /// admin API answers with the token.
    pub fn start() -> anyhow::Result<LoopbackCoordinator> {
        let dir = TempDir::new("schema")?;
        let listen = free_udp_block(3)?;
        let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("coordinator.log"))?;
        let child = Command::new(util::binary("coordinator")?)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &listen.to_string()])
            .args(["--advertise", &listen.to_string()])
            .args(["--http", &http.to_string()])
            .arg("--no-relay")
            .env(
                "COORDINATOR_LOG",
                std::env::var("COORDINATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the coordinator")?;
        let mut c = LoopbackCoordinator {
            dir,
            child: Some(child),
            listen,
            http,
            token: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten()) {
                bail!("the coordinator exited ({status}):\n{}", c.log_tail(30));
            }
            if c.token.is_empty() && data.join("admin.token").is_file() {
                let out = Command::new(util::binary("coordinator")?)
                    .args(["admin-token", "--data-dir"])
                    .arg(&data)
                    .output()?;
                c.token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            if !c.token.is_empty() && c.api("GET", "/api/networks", None).is_ok() {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!(
                    "the coordinator's admin API did not answer within 30 s:\n{}",
                    c.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its temporary directory (the schemathesis run works there too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The document's URL.
    pub fn openapi_url(&self) -> String {
        format!("http://{}/api/openapi.json", self.http)
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        util::tail(&self.dir.path().join("coordinator.log"), n)
    }

    /// One admin request (HTTP/1.1); the JSON answer of a 2xx, an error otherwise.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut s = TcpStream::connect(self.http)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.http,
            self.token,
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text.split_once("\r\n\r\n").context("malformed answer")?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("malformed status line")?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: HTTP {status}: {rest}");
        }
        if rest.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(rest).with_context(|| format!("{method} {path}: not JSON"))
    }
}

impl Drop for LoopbackCoordinator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- coordinator log (tail) ----\n{}", self.log_tail(40));
        }
    }
}

/// A UDP port `p` on loopback with `p..p+n` free (QUIC and the two reflectors).
fn free_udp_block(n: u16) -> anyhow::Result<SocketAddr> {
    for _ in 0..200 {
        let first = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port > u16::MAX - n {
            continue;
        }
        drop(first);
        let all: Result<Vec<_>, _> = (0..n)
            .map(|i| std::net::UdpSocket::bind(("127.0.0.1", port + i)))
            .collect();
        if all.is_ok() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    bail!("no block of {n} free UDP ports on loopback")
}

/// A simulated node to join with.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its hostname, the member's name.
    pub name: String,
    /// Routes it advertises.
    pub routes: Vec<IpNet>,
    /// With the token (an authorised member) or without (pending).
    pub with_token: bool,
}

/// Simulated nodes holding control sessions with a coordinator (as meshd would, without a
/// data plane): each proved its key and, with a token, got its netmap. They stay
/// connected until dropped.
pub struct Nodes {
    /// The sessions run on it; dropping it ends them.
    _runtime: tokio::runtime::Runtime,
    /// Each node's private key, in the order given.
    pub keys: Vec<Key>,
}

impl Nodes {
    /// Joins `specs` to `network` at `coord` with `token`; returns once every node with a
    /// token holds its netmap and every other one was told it is pending.
    pub fn join(
        coord: SocketAddr,
        token: &JoinToken,
        network: &str,
        specs: &[NodeSpec],
    ) -> anyhow::Result<Nodes> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let seed = Sha256::new()
            .chain_update(std::process::id().to_be_bytes())
            .chain_update(format!("{:?}", std::time::SystemTime::now()))
            .finalize();
        let keys: Vec<Key> = (0..specs.len())
            .map(|i| {
                Key::clamp_private(
                    Sha256::new()
                        .chain_update(seed)
                        .chain_update((i as u64).to_be_bytes())
                        .finalize()
                        .into(),
                )
            })
            .collect();
        let endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?
        };
        let client = client_config(token.pin)?;
        let mut waits = Vec::new();
        for (spec, key) in specs.iter().zip(&keys) {
            let (tx, rx) = std::sync::mpsc::channel();
            let hello = Hello {
                network: network.to_owned(),
                public_key: key.public_key(),
                name: spec.name.clone(),
                version: "wm-schema-test".into(),
                join: spec.with_token.then(|| token.secret.clone()),
                resume: None,
                listen_port: 51820,
                local: vec![SocketAddr::from(([127, 0, 0, 1], 51820))],
                routes: spec.routes.clone(),
                protocol: control::PROTOCOL,
            };
            runtime.spawn(session(
                endpoint.clone(),
                client.clone(),
                coord,
                *key,
                hello,
                tx,
            ));
            waits.push((spec.name.clone(), rx));
        }
        for (name, rx) in waits {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => bail!("node {name}: {e:#}"),
                Err(_) => bail!("node {name}: no netmap and no pending notice within 30 s"),
            }
        }
        Ok(Nodes {
            _runtime: runtime,
            keys,
        })
    }
}

fn client_config(pin: CertPin) -> anyhow::Result<quinn::ClientConfig> {
    let tls = mesh_pin::quic_client_config(pin, &[ALPN]);
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    // As meshd (meshd/src/control/quic.rs, `Liveness`).
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    transport.max_idle_timeout(Some(Duration::from_secs(15).try_into()?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

async fn read_frame(r: &mut quinn::RecvStream) -> anyhow::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; control::body_len(header)?];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// One node's session: Hello, key proof, then frames until the coordinator ends it. Tells
/// `ready` once it holds a netmap or was told it is pending.
async fn session(
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    coord: SocketAddr,
    private: Key,
    hello: Hello,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let result = async {
        let conn = endpoint
            .connect_with(client, coord, "wiremesh-coordinator")?
            .await?;
        let mut exporter = [0u8; 32];
        conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .map_err(|_| anyhow::anyhow!("TLS exporter unavailable"))?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&control::encode(&ClientMsg::Hello(hello)))
            .await?;
        let Some(body) = read_frame(&mut recv).await? else {
            bail!("closed during the handshake");
        };
        match control::decode::<ServerMsg>(&body)? {
            ServerMsg::Challenge { ephemeral, nonce } => {
                let proof = control::node_proof(&private, &ephemeral, &nonce, &exporter);
                send.write_all(&control::encode(&ClientMsg::Proof { proof }))
                    .await?;
            }
            ServerMsg::Denied { reason } => bail!("denied: {reason}"),
            other => bail!("expected a challenge, got {other:?}"),
        }
        let mut told = false;
        while let Some(body) = read_frame(&mut recv).await? {
            // JSON frames (pending, denied, services); binary ones are netmaps and changes.
            let settled = match body.first() {
                Some(b'{') => match control::decode::<ServerMsg>(&body)? {
                    ServerMsg::Pending { .. } => true,
                    ServerMsg::Denied { reason } if !told => bail!("denied: {reason}"),
                    _ => false,
                },
                _ => true,
            };
            if settled && !told {
                told = true;
                let _ = ready.send(Ok(()));
            }
        }
        // Keep the connection (and so the member online) until the runtime ends.
        if told {
            conn.closed().await;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = ready.send(Err(e));
    }
}

/// `python3 -m schemathesis.cli` at [`SCHEMATHESIS_VERSION`], or an error saying how to
/// install it.
pub fn schemathesis() -> anyhow::Result<Command> {
    let out = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .output();
    let version = match &out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Ok(o) => bail!(
            "schemathesis is not installed for python3 ({}); install it: {INSTALL}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => bail!("python3 not found ({e}); install python3 and pip, then: {INSTALL}"),
    };
    if !version.ends_with(SCHEMATHESIS_VERSION) {
        bail!(
            "schemathesis {SCHEMATHESIS_VERSION} wanted, found {version:?}; install it: {INSTALL}"
        );
    }
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "schemathesis.cli"]);
    Ok(cmd)
}

/// Runs `cmd` in `dir`, with its output (stdout and stderr together) also written to
/// `dir/<name>.log`.
pub fn run_logged(mut cmd: Command, dir: &Path, name: &str) -> anyhow::Result<(Output, PathBuf)> {
    let log = dir.join(format!("{name}.log"));
    let out = cmd
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", util::describe(&cmd)))?;
    let mut text = out.stdout.clone();
    text.extend_from_slice(&out.stderr);
    std::fs::write(&log, &text)?;
    Ok((out, log))
}

/// A TOML string.
pub fn toml_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// A TOML array of strings.
pub fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The join token of a `POST …/tokens` answer.
pub fn join_token(created: &Value) -> anyhow::Result<JoinToken> {
    created["join-token"]
        .as_str()
        .context("no join-token in the answer")?
        .parse()
        .context("parsing the join token")
}
