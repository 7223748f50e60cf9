//! The control protocol over real QUIC on 127.0.0.1, with a client that pins the
//! coordinator's certificate the way meshd does.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coordinator::control::frame::{self, FrameReader};
use coordinator::control::state::{Coordinator, JoinInfo, Services, SystemClock};
use coordinator::identity::{DataDir, SERVER_NAME};
use coordinator::store::MemoryStore;
use mesh_proto::admin::{CreateNetwork, CreateToken};
use mesh_proto::control::{
    node_proof, CertPin, ClientMsg, Hello, JoinSecret, JoinToken, ServerMsg, ALPN, EXPORTER_LABEL,
};
use mesh_proto::Key;

/// A client endpoint on the loopback address `ip` (each one another source to the
/// coordinator) trusting only `pin`, configured like meshd's.
fn client_from(ip: [u8; 4], pin: CertPin) -> quinn::Endpoint {
    let tls = mesh_pin::quic_client_config(pin, &[ALPN]);
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((ip, 0))).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

struct Server {
    addr: SocketAddr,
    pin: CertPin,
    coord: Arc<Coordinator>,
    _dir: tempfile::TempDir,
}

const RELAY_SECRET: Key = Key([5; 32]);

async fn server() -> Server {
    server_limited(coordinator::control::quic::HANDSHAKES_PER_SOURCE).await
}

/// A server that lets each source start `limit` connections.
async fn server_limited(limit: coordinator::limit::Rate) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    data.create().unwrap();
    let identity = data.load_or_create_identity().unwrap();
    let endpoint =
        coordinator::control::quic::bind(&identity, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let coord = Coordinator::open_with_services(
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
        JoinInfo {
            coordinators: vec![addr.to_string()],
            pin: identity.pin,
        },
        Some(Services {
            reflectors: vec!["127.0.0.1:7444".into(), "127.0.0.1:7445".into()],
            relay: None,
            relays: vec![],
            relay_secret: RELAY_SECRET,
        }),
    )
    .unwrap();
    coord
        .create_network(CreateNetwork {
            cidr6: None,
            name: "lab".into(),
            cidr: "10.9.8.0/24".parse().unwrap(),
            mtu: None,
            keepalive: None,
            dns_domain: None,
        })
        .await
        .unwrap();
    tokio::spawn(coordinator::control::quic::serve_limited(
        endpoint,
        coord.clone(),
        limit,
    ));
    Server {
        addr,
        pin: identity.pin,
        coord,
        _dir: dir,
    }
}

async fn token(s: &Server) -> JoinToken {
    let created = s
        .coord
        .create_token(
            "lab",
            CreateToken {
                reusable: true,
                expires_in_secs: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    created.join_token.parse().unwrap()
}

type Stream = (
    quinn::Connection,
    quinn::SendStream,
    FrameReader<quinn::RecvStream>,
);

async fn open(addr: SocketAddr, pin: CertPin) -> Result<Stream, quinn::ConnectionError> {
    open_from([127, 0, 0, 1], addr, pin).await
}

/// [`open`] from the loopback address `ip`.
async fn open_from(
    ip: [u8; 4],
    addr: SocketAddr,
    pin: CertPin,
) -> Result<Stream, quinn::ConnectionError> {
    let endpoint = client_from(ip, pin);
    let conn = endpoint.connect(addr, SERVER_NAME).unwrap().await?;
    let (send, recv) = conn.open_bi().await?;
    Ok((
        conn,
        send,
        FrameReader::new(recv, mesh_proto::control::MAX_FRAME),
    ))
}

/// The next message as node `me` reads it (netmaps are binary and list `me` too).
async fn recv_as(r: &mut FrameReader<quinn::RecvStream>, me: &Key) -> ServerMsg {
    tokio::time::timeout(Duration::from_secs(5), r.next_server(me))
        .await
        .expect("no answer within 5 s")
        .unwrap()
        .expect("stream ended")
}

/// The next message before any netmap (JSON whoever reads it).
async fn recv(r: &mut FrameReader<quinn::RecvStream>) -> ServerMsg {
    recv_as(r, &Key([0; 32])).await
}

/// Hello with `claimed` as identity, proof made with `private`.
async fn handshake(
    stream: &mut Stream,
    private: &Key,
    claimed: Key,
    join: Option<JoinSecret>,
) -> ServerMsg {
    let (conn, send, frames) = stream;
    let hello = Hello {
        network: "lab".into(),
        public_key: claimed,
        name: "quic-node".into(),
        version: "test".into(),
        join,
        resume: None,
        listen_port: 51820,
        local: vec![],
        routes: vec![],
        protocol: mesh_proto::control::PROTOCOL,
    };
    frame::write(send, &ClientMsg::Hello(hello)).await.unwrap();
    let ServerMsg::Challenge { ephemeral, nonce } = recv(frames).await else {
        panic!("no challenge");
    };
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .unwrap();
    let proof = node_proof(private, &ephemeral, &nonce, &exporter);
    frame::write(send, &ClientMsg::Proof { proof })
        .await
        .unwrap();
    recv(frames).await
}

#[tokio::test]
async fn token_join_over_quic_with_a_pinned_certificate() {
    let s = server().await;
    let token = token(&s).await;
    assert_eq!(token.pin, s.pin);
    assert_eq!(token.coordinators, vec![s.addr.to_string()]);
    let private = Key::clamp_private([11; 32]);
    let mut stream = open(s.addr, token.pin).await.unwrap();
    let msg = handshake(
        &mut stream,
        &private,
        private.public_key(),
        Some(token.secret),
    )
    .await;
    assert_eq!(
        msg,
        ServerMsg::Services {
            reflectors: vec!["127.0.0.1:7444".into(), "127.0.0.1:7445".into()],
            relay: None,
            relays: vec![],
            relay_token: mesh_proto::relay::token(&RELAY_SECRET, &private.public_key()),
            coordinators: vec![s.addr.to_string()],
        }
    );
    // Control protocol 5: the network's DNS domain before the netmap it names.
    let msg = recv_as(&mut stream.2, &private.public_key()).await;
    assert_eq!(
        msg,
        ServerMsg::Names {
            domain: "mesh.internal".into()
        }
    );
    let msg = recv_as(&mut stream.2, &private.public_key()).await;
    let ServerMsg::Netmap { netmap } = msg else {
        panic!("expected a netmap, got {msg:?}");
    };
    assert_eq!(netmap.address.to_string(), "10.9.8.1/24");
    let members = s.coord.list_members("lab").await.unwrap();
    assert!(members[0].online);
    assert_eq!(
        members[0].endpoints,
        vec!["127.0.0.1:51820".parse().unwrap()]
    );
}

#[tokio::test]
async fn a_wrong_pin_fails_before_anything_is_sent() {
    let s = server().await;
    let err = open(s.addr, CertPin([0; 32]))
        .await
        .expect_err("connected despite a wrong pin");
    assert!(err.to_string().contains("pin"), "{err}");
    assert!(s.coord.list_members("lab").await.unwrap().is_empty());
}

#[tokio::test]
async fn claiming_another_key_is_refused() {
    let s = server().await;
    let token = token(&s).await;
    let victim = Key::clamp_private([12; 32]).public_key();
    let mut stream = open(s.addr, s.pin).await.unwrap();
    let msg = handshake(
        &mut stream,
        &Key::clamp_private([13; 32]),
        victim,
        Some(token.secret),
    )
    .await;
    assert!(
        matches!(&msg, ServerMsg::Denied { reason } if reason.contains("proof")),
        "{msg:?}"
    );
    assert!(s.coord.list_members("lab").await.unwrap().is_empty());
}

#[tokio::test]
async fn garbage_is_refused_without_disturbing_others() {
    let s = server().await;
    let token = token(&s).await;
    // An oversized frame header, then garbage.
    let (_c, mut send, mut frames) = open(s.addr, s.pin).await.unwrap();
    send.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    let msg = recv(&mut frames).await;
    assert!(
        matches!(&msg, ServerMsg::Denied { reason } if reason.contains("exceeds")),
        "{msg:?}"
    );
    let (_c2, mut send2, mut frames2) = open(s.addr, s.pin).await.unwrap();
    send2.write_all(b"\x00\x00\x00\x03abc").await.unwrap();
    assert!(matches!(recv(&mut frames2).await, ServerMsg::Denied { .. }));
    // Raw UDP garbage at the port.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for n in [1usize, 100, 1200] {
        udp.send_to(&vec![0x5a; n], s.addr).await.unwrap();
    }
    // A well-behaved node still gets in.
    let private = Key::clamp_private([14; 32]);
    let mut stream = open(s.addr, s.pin).await.unwrap();
    let msg = handshake(
        &mut stream,
        &private,
        private.public_key(),
        Some(token.secret),
    )
    .await;
    assert!(matches!(msg, ServerMsg::Services { .. }), "{msg:?}");
    let msg = recv_as(&mut stream.2, &private.public_key()).await;
    assert!(matches!(msg, ServerMsg::Names { .. }), "{msg:?}");
    let msg = recv_as(&mut stream.2, &private.public_key()).await;
    assert!(matches!(msg, ServerMsg::Netmap { .. }), "{msg:?}");
}

#[tokio::test]
async fn guessing_join_tokens_is_cut_to_ten_tries_per_source() {
    let s = server().await;
    let good = token(&s).await;
    let wrong = JoinSecret {
        id: good.secret.id.clone(),
        secret: Key([0x42; 32]),
    };
    // Ten wrong guesses from one address: each refused for what it is.
    for i in 0..10u8 {
        let private = Key::clamp_private([100 + i; 32]);
        let mut stream = open(s.addr, s.pin).await.unwrap();
        let msg = handshake(
            &mut stream,
            &private,
            private.public_key(),
            Some(wrong.clone()),
        )
        .await;
        assert!(
            matches!(&msg, ServerMsg::Denied { reason } if reason == "invalid join token"),
            "guess {i}: {msg:?}"
        );
    }
    // The eleventh attempt from there is refused unheard, even with the right secret.
    let private = Key::clamp_private([120; 32]);
    let mut stream = open(s.addr, s.pin).await.unwrap();
    let msg = handshake(
        &mut stream,
        &private,
        private.public_key(),
        Some(good.secret.clone()),
    )
    .await;
    assert!(
        matches!(&msg, ServerMsg::Denied { reason } if reason.contains("too many failed join attempts from 127.0.0.1")),
        "{msg:?}"
    );
    // Another source is not held back.
    let mut stream = open_from([127, 0, 0, 2], s.addr, s.pin).await.unwrap();
    let msg = handshake(
        &mut stream,
        &private,
        private.public_key(),
        Some(good.secret),
    )
    .await;
    assert!(matches!(msg, ServerMsg::Services { .. }), "{msg:?}");
    let stats = s.coord.control_stats();
    assert_eq!(stats.join_failures.get(), 10);
    assert_eq!(stats.join_rate_limited.get(), 1);
    assert_eq!(stats.joins.get(), 1);
}

#[tokio::test]
async fn connection_attempts_per_source_are_bounded() {
    let s = server_limited(coordinator::limit::Rate {
        per_sec: 0.001,
        burst: 3.0,
    })
    .await;
    // Three connections from one address get through the handshake…
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open(s.addr, s.pin).await.unwrap());
    }
    // …the fourth is not answered at all (the client would retry until it gives up)…
    let fourth = tokio::time::timeout(Duration::from_secs(2), open(s.addr, s.pin)).await;
    assert!(fourth.is_err(), "a fourth connection was answered");
    assert!(s.coord.control_stats().handshakes_rate_limited.get() >= 1);
    // …while another source connects and joins.
    let token = token(&s).await;
    let private = Key::clamp_private([15; 32]);
    let mut stream = open_from([127, 0, 0, 3], s.addr, s.pin).await.unwrap();
    let msg = handshake(
        &mut stream,
        &private,
        private.public_key(),
        Some(token.secret),
    )
    .await;
    assert!(matches!(msg, ServerMsg::Services { .. }), "{msg:?}");
    assert_eq!(s.coord.control_stats().handshakes_refused_full.get(), 0);
}
