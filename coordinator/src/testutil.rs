//! Test helpers: a coordinator on the in-memory store with a hand-set clock, and a node
//! that speaks the control protocol over `tokio::io::duplex`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::admin::{CreateNetwork, CreateToken};
use mesh_proto::control::{
    encode, node_proof, CertPin, ClientMsg, Hello, JoinSecret, JoinToken, ServerMsg,
};
use mesh_proto::Key;
use tokio::io::{AsyncWriteExt as _, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

use crate::control::frame::FrameReader;
use crate::control::session::{self, End};
use crate::control::state::{Coordinator, JoinInfo, ManualClock, Services};
use crate::store::MemoryStore;

/// Opens the sled store at `path`, retrying for a while when the lock is still held: sled
/// releases a dropped database's file lock from its background flusher thread, a moment
/// after the last handle is gone, so an in-process reopen can race it.
pub fn open_sled_store(path: &std::path::Path) -> crate::store::SledStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match crate::store::SledStore::open(path) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening {}: {e}", path.display()),
        }
    }
}

/// The exporter secret test connections use.
pub const EXPORTER: [u8; 32] = [42; 32];

/// A coordinator with its store and clock.
pub struct Harness {
    pub coord: Arc<Coordinator>,
    pub store: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
}

pub fn join_info() -> JoinInfo {
    JoinInfo {
        coordinators: vec!["192.0.2.1:7443".into()],
        pin: CertPin([3; 32]),
    }
}

/// The relay secret test coordinators use.
pub const RELAY_SECRET: Key = Key([5; 32]);

/// The NAT traversal services test coordinators advertise.
pub fn services() -> Services {
    Services {
        reflectors: vec!["192.0.2.1:7444".into(), "192.0.2.1:7445".into()],
        relay: Some("192.0.2.1:7446".into()),
        relays: vec!["192.0.2.1:7446".into(), "[2001:db8::1]:7446".into()],
        relay_secret: RELAY_SECRET,
    }
}

impl Harness {
    pub fn new() -> Harness {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(1_000_000));
        let coord = Coordinator::open_with_services(
            store.clone(),
            clock.clone(),
            join_info(),
            Some(services()),
        )
        .unwrap();
        Harness {
            coord,
            store,
            clock,
        }
    }

    /// Creates network `name` on 10.9.8.0/24.
    pub async fn network(&self, name: &str) {
        create_network(&self.coord, name).await;
    }

    /// Network `name` as [`Harness::network`] but IPv4 only (`cidr6 = off`).
    pub async fn network_v4_only(&self, name: &str) {
        create_network_with(&self.coord, name, Some("off")).await;
    }

    /// A new token of `net`, as the node presents it.
    pub async fn token(&self, net: &str, reusable: bool, expires: Option<u64>) -> JoinSecret {
        let created = self
            .coord
            .create_token(
                net,
                CreateToken {
                    reusable,
                    expires_in_secs: expires,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        created.join_token.parse::<JoinToken>().unwrap().secret
    }
}

/// A private key from a seed byte.
/// Creates network `name` on 10.9.8.0/24 with the default MTU and keepalive (and so a
/// random IPv6 ULA /64 beside it).
pub async fn create_network(coord: &Coordinator, name: &str) {
    create_network_with(coord, name, None).await;
}

/// Creates network `name` on 10.9.8.0/24 with `cidr6` as the admin gives it (`None`: the
/// default, a random ULA).
pub async fn create_network_with(coord: &Coordinator, name: &str, cidr6: Option<&str>) {
    coord
        .create_network(CreateNetwork {
            cidr6: cidr6.map(str::to_owned),
            name: name.into(),
            cidr: "10.9.8.0/24".parse().unwrap(),
            mtu: None,
            keepalive: None,
            dns_domain: None,
        })
        .await
        .unwrap();
}

pub fn private(seed: u8) -> Key {
    Key::clamp_private([seed; 32])
}

pub fn hello(net: &str, private: &Key, join: Option<JoinSecret>) -> Hello {
    Hello {
        network: net.into(),
        public_key: private.public_key(),
        name: format!("node-{}", private.0[1]),
        version: "0.1.0".into(),
        join,
        resume: None,
        listen_port: 51820,
        local: vec!["192.168.1.2:51820".parse().unwrap()],
        routes: vec![],
        protocol: mesh_proto::control::PROTOCOL,
    }
}

/// A node connected to a session over a duplex pipe.
pub struct Node {
    pub frames: FrameReader<ReadHalf<DuplexStream>>,
    pub writer: WriteHalf<DuplexStream>,
    pub task: JoinHandle<End>,
    pub key: Key,
    /// `Services` messages [`Node::recv`] passed over, in order.
    pub services: Vec<ServerMsg>,
    /// The `Names` messages received (the network's DNS domain), in order.
    pub names: Vec<ServerMsg>,
}

/// The address test nodes "connect from".
pub fn remote(seed: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, seed], 40000))
}

impl Node {
    /// Opens a session and says `hello` (nothing else).
    pub fn open(coord: &Arc<Coordinator>, seed: u8) -> Node {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (br, mut bw) = tokio::io::split(b);
        let coord = coord.clone();
        let task =
            tokio::spawn(
                async move { session::run(&coord, br, &mut bw, EXPORTER, remote(seed)).await },
            );
        let (ar, aw) = tokio::io::split(a);
        Node {
            frames: FrameReader::new(ar, usize::MAX),
            writer: aw,
            task,
            key: private(seed).public_key(),
            services: Vec::new(),
            names: Vec::new(),
        }
    }

    /// Opens a session, completes the handshake with `hello`'s key and returns the node.
    pub async fn connect(coord: &Arc<Coordinator>, seed: u8, hello: Hello) -> Node {
        let mut node = Node::open(coord, seed);
        node.send(&ClientMsg::Hello(hello)).await;
        let ServerMsg::Challenge { ephemeral, nonce } = node.recv().await else {
            panic!("expected a challenge");
        };
        let proof = node_proof(&private(seed), &ephemeral, &nonce, &EXPORTER);
        node.send(&ClientMsg::Proof { proof }).await;
        node
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        self.writer.write_all(&encode(msg)).await.unwrap();
    }

    /// The next message other than `Services` and `Names` (kept in `self.services` and
    /// `self.names`); fails the test
    /// after 5 s. A full netmap comes back with the change frames sent with it already
    /// applied (a joiner gets the network's shared checkpoint and the changes since, in one
    /// write: `Snapshot::first_frames`).
    pub async fn recv(&mut self) -> ServerMsg {
        loop {
            match self.recv_any().await {
                msg @ ServerMsg::Services { .. } => self.services.push(msg),
                msg @ ServerMsg::Names { .. } => self.names.push(msg),
                ServerMsg::Netmap { mut netmap } => {
                    // What was written with it is in the pipe already: take it without
                    // waiting (the read is cancel-safe, a later message stays queued).
                    while let Ok(Ok(Some(msg))) =
                        tokio::time::timeout(Duration::ZERO, self.frames.next_server(&self.key))
                            .await
                    {
                        match msg {
                            ServerMsg::Changes { version, changes } => {
                                netmap.apply(version, &changes)
                            }
                            other => panic!("unexpected {other:?} right after a netmap"),
                        }
                    }
                    return ServerMsg::Netmap { netmap };
                }
                msg => return msg,
            }
        }
    }

    /// The next message, whatever it is (fails the test after 5 s).
    pub async fn recv_any(&mut self) -> ServerMsg {
        tokio::time::timeout(Duration::from_secs(5), self.frames.next_server(&self.key))
            .await
            .expect("no message within 5 s")
            .unwrap()
            .expect("session closed")
    }

    /// Asserts nothing arrives for a little while.
    pub async fn quiet(&mut self) {
        let got = tokio::time::timeout(
            Duration::from_millis(100),
            self.frames.next_server(&self.key),
        )
        .await;
        assert!(got.is_err(), "unexpected message: {got:?}");
    }

    /// Asserts that for a little while nothing arrives but changes of this node's own
    /// entry (its own endpoints), which the shared change frames carry to it as a self
    /// update; returns how many such messages came.
    pub async fn only_self_updates(&mut self) -> usize {
        let mut n = 0;
        loop {
            let got = tokio::time::timeout(
                Duration::from_millis(100),
                self.frames.next_server(&self.key),
            )
            .await;
            match got {
                Err(_) => return n,
                Ok(Ok(Some(ServerMsg::Changes { changes, .. })))
                    if changes.iter().all(|c| {
                        matches!(c, mesh_proto::netmap::PeerChange::SelfUpdate { .. })
                    }) =>
                {
                    n += 1
                }
                other => panic!("unexpected message: {other:?}"),
            }
        }
    }

    /// Messages until `Denied`, whose reason is returned; changes before it are skipped
    /// (a change and the end of the network may go out as one push).
    pub async fn denied_after_changes(&mut self) -> String {
        loop {
            match self.recv().await {
                ServerMsg::Changes { .. } => continue,
                ServerMsg::Denied { reason } => return reason,
                other => panic!("expected denied, got {other:?}"),
            }
        }
    }

    /// The session's end (after the node closed or was denied).
    pub async fn end(self) -> End {
        // Both halves must go for the session to see the end of its stream.
        let Node {
            task,
            writer,
            frames,
            ..
        } = self;
        drop((writer, frames));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("session did not end")
            .unwrap()
    }
}

/// A one-member etcd on loopback ports of its own, for the store suite and the
/// multi-coordinator tests; killed (and its data removed) on drop. Fails when etcd is not
/// installed (Debian: `etcd-server`), never skips.
pub struct EtcdServer {
    child: std::process::Child,
    /// Its client URL.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        EtcdServer::start_with("http", &[])
    }

    /// A member whose client URL has `scheme` (`https` with TLS flags in `extra`), started
    /// with `extra` flags too.
    pub fn start_with(scheme: &str, extra: &[std::ffi::OsString]) -> EtcdServer {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free loopback port")
        };
        let (client, peer) = (free(), free());
        let dir = tempfile::tempdir().unwrap();
        let url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = std::process::Command::new("etcd")
            .args(["--name", "t0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t0={peer_url}")])
            .args(["--log-level", "warn", "--max-txn-ops", "1024"])
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting etcd (apt-get install etcd-server): this test needs it");
        let server = EtcdServer {
            child,
            url,
            _dir: dir,
        };
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "etcd did not listen on {} within 20 s",
                server.url
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server
    }

    /// A store on it under `prefix`, as coordinator `id`.
    pub fn store(&self, prefix: &str, id: &str) -> crate::store::EtcdStore {
        let mut opts = crate::store::EtcdOptions::new(vec![self.url.clone()], id.into());
        opts.prefix = prefix.into();
        crate::store::EtcdStore::connect(opts).expect("connecting to the test etcd")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
