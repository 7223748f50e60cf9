//! Writes the committed seed corpora, `fuzz/corpus/<target>/seed-*`, from the real encoders
//! (and, for config files, the shipped examples). Deterministic: running it again rewrites
//! the same files.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//! The relay seeds are written from the layout in `mesh_proto::relay`'s docs with its
//! `MAGIC` only, so they do not depend on the relay module's encoder signatures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use mesh_proto::api::{
    ControlState, ControlStatus, DropCounters, JoinRequest, NetcheckReport, PathType, PeerStatus,
    PingAnswer, PingReport, Reflection, Request, Response, Status,
};
use mesh_proto::control::{
    self, CertPin, ClientMsg, Hello, JoinSecret, JoinToken, PeerPathReport, ReportedPath, ServerMsg,
};
use mesh_proto::disco::{self, DiscoMsg};
use mesh_proto::netmap::{Netmap, NetworkInfo, PeerChange, PeerInfo};
use mesh_proto::{reflect, relay, Key};
use wiremesh_fuzz::{disco_pair, encode_changes, encode_netmap, ME};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Corpus {
    root: PathBuf,
}

impl Corpus {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        Ok(())
    }
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| panic!("{s}"))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|_| panic!("{s}"))
}

fn network() -> NetworkInfo {
    NetworkInfo {
        cidr6: None,
        name: "lab".into(),
        cidr: net("10.9.8.0/24"),
        mtu: 1280,
        keepalive: 25,
    }
}

fn peer(b: u8) -> PeerInfo {
    PeerInfo {
        address6: None,
        public_key: Key([b; 32]),
        name: format!("node-{b}"),
        address: format!("10.9.8.{b}").parse().expect("an address"),
        allowed_ips: vec![
            net(&format!("10.9.8.{b}/32")),
            net(&format!("10.244.{b}.0/24")),
        ],
        endpoints: vec![
            sock(&format!("192.168.1.{b}:51820")),
            sock("[2001:db8::7]:41641"),
        ],
    }
}

fn netmap() -> Netmap {
    Netmap {
        address6: None,
        version: 42,
        network: network(),
        address: net("10.9.8.17/24"),
        name: "me".into(),
        peers: [peer(2), peer(3)]
            .into_iter()
            .map(|p| (p.public_key, p))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn changes() -> Vec<PeerChange> {
    vec![
        PeerChange::Upsert { peer: peer(4) },
        PeerChange::Remove {
            public_key: Key([2; 32]),
        },
        PeerChange::SelfUpdate {
            address6: None,
            address: net("10.9.8.18/24"),
            name: "me-renamed".into(),
        },
        PeerChange::Network {
            network: NetworkInfo {
                mtu: 1420,
                ..network()
            },
        },
    ]
}

fn client_msgs() -> Vec<(&'static str, ClientMsg)> {
    vec![
        (
            "hello",
            ClientMsg::Hello(Hello {
                network: "lab".into(),
                public_key: Key([5; 32]),
                name: "node-5".into(),
                version: "0.1.0".into(),
                join: Some(JoinSecret {
                    id: "t1".into(),
                    secret: Key([6; 32]),
                }),
                resume: Some(41),
                listen_port: 51820,
                local: vec![sock("192.168.1.5:51820"), sock("[fe80::5]:51820")],
                routes: vec![net("10.244.5.0/24")],
                protocol: control::PROTOCOL,
            }),
        ),
        (
            "proof",
            ClientMsg::Proof {
                proof: Key([7; 32]),
            },
        ),
        (
            "endpoints",
            ClientMsg::Endpoints {
                listen_port: 51820,
                local: vec![sock("192.168.1.5:51820")],
                reflexive: vec![sock("203.0.113.5:40000")],
            },
        ),
        (
            "paths",
            ClientMsg::Paths {
                peers: vec![
                    PeerPathReport {
                        peer: Key([2; 32]),
                        path: ReportedPath::Direct,
                        rtt_ms: Some(12),
                    },
                    PeerPathReport {
                        peer: Key([3; 32]),
                        path: ReportedPath::Relayed,
                        rtt_ms: None,
                    },
                ],
            },
        ),
    ]
}

fn server_msgs() -> Vec<(&'static str, ServerMsg)> {
    vec![
        (
            "challenge",
            ServerMsg::Challenge {
                ephemeral: Key([8; 32]),
                nonce: Key([9; 32]),
            },
        ),
        (
            "pending",
            ServerMsg::Pending {
                message: "waiting for an admin".into(),
            },
        ),
        (
            "denied",
            ServerMsg::Denied {
                reason: "token revoked".into(),
            },
        ),
        (
            "services",
            ServerMsg::Services {
                relays: vec![],
                reflectors: vec!["192.0.2.1:7444".into(), "192.0.2.1:7445".into()],
                relay: Some("192.0.2.1:7446".into()),
                relay_token: Key([10; 32]),
                coordinators: vec!["c1.example:7443".into(), "c2.example:7443".into()],
            },
        ),
        ("netmap-json", ServerMsg::Netmap { netmap: netmap() }),
        (
            "changes-json",
            ServerMsg::Changes {
                version: 43,
                changes: changes(),
            },
        ),
    ]
}

/// A body without its length prefix.
fn body(frame: &[u8]) -> &[u8] {
    &frame[4..]
}

fn write_control(c: &Corpus) -> Result<()> {
    for (name, msg) in client_msgs() {
        c.put("control_client", name, body(&control::encode(&msg)))?;
    }
    for (name, msg) in server_msgs() {
        c.put("control_server", name, body(&control::encode(&msg)))?;
    }
    let netmap_frame = encode_netmap(&netmap(), &ME);
    let changes_frame = encode_changes(43, 24, None, &changes(), &ME);
    c.put("control_server", "netmap-binary", body(&netmap_frame))?;
    c.put("control_server", "changes-binary", body(&changes_frame))?;

    // Streams: whole frames back to back, as on the QUIC stream.
    let mut node = Vec::new();
    for (_, msg) in client_msgs() {
        node.extend_from_slice(&control::encode(&msg));
    }
    c.put("control_stream_coordinator", "session", &node)?;
    let mut bad_paths = control::encode(&client_msgs()[0].1);
    bad_paths.extend_from_slice(&control::encode(&client_msgs()[1].1));
    let report = br#"{"type":"paths","peers":[{"peer":"x","path":"lan"}]}"#;
    bad_paths.extend_from_slice(&(report.len() as u32).to_be_bytes());
    bad_paths.extend_from_slice(report);
    bad_paths.extend_from_slice(&control::encode(&client_msgs()[2].1));
    c.put("control_stream_coordinator", "bad-paths", &bad_paths)?;

    let mut coordinator = Vec::new();
    for (name, msg) in server_msgs() {
        if name != "netmap-json" && name != "changes-json" {
            coordinator.extend_from_slice(&control::encode(&msg));
        }
    }
    coordinator.extend_from_slice(&netmap_frame);
    coordinator.extend_from_slice(&changes_frame);
    coordinator.extend_from_slice(&control::encode(&ServerMsg::Changes {
        version: 44,
        changes: vec![PeerChange::Upsert { peer: peer(2) }],
    }));
    c.put("control_stream_meshd", "session-binary", &coordinator)?;
    let mut json = Vec::new();
    for (_, msg) in server_msgs() {
        json.extend_from_slice(&control::encode(&msg));
    }
    c.put("control_stream_meshd", "session-json", &json)?;
    Ok(())
}

fn write_wire(c: &Corpus) -> Result<()> {
    c.put("wire_netmap", "three", body(&encode_netmap(&netmap(), &ME)))?;
    let mut lone = netmap();
    lone.peers.clear();
    c.put("wire_netmap", "alone", body(&encode_netmap(&lone, &ME)))?;
    let mut v6 = netmap();
    v6.network.cidr = net("fd00:9::/64");
    v6.address = net("fd00:9::11/64");
    c.put("wire_netmap", "ipv6", body(&encode_netmap(&v6, &ME)))?;
    // The first upsert names the receiver, as the target decodes.
    let mut own_first = vec![PeerChange::SelfUpdate {
        address6: None,
        address: net("10.9.8.18/24"),
        name: "me".into(),
    }];
    own_first.extend(changes());
    c.put(
        "wire_changes",
        "all-kinds",
        body(&encode_changes(43, 24, None, &own_first, &ME)),
    )?;
    c.put(
        "wire_changes",
        "remove",
        body(&encode_changes(
            44,
            24,
            None,
            &[PeerChange::Remove {
                public_key: Key([3; 32]),
            }],
            &ME,
        )),
    )?;
    Ok(())
}

fn disco_msgs() -> Vec<(&'static str, DiscoMsg)> {
    vec![
        ("ping", DiscoMsg::Ping { tx: [1; 12] }),
        (
            "pong-v4",
            DiscoMsg::Pong {
                tx: [2; 12],
                observed: sock("203.0.113.9:41641"),
            },
        ),
        (
            "pong-v6",
            DiscoMsg::Pong {
                tx: [3; 12],
                observed: sock("[2001:db8::5]:1"),
            },
        ),
        (
            "call-me-maybe",
            DiscoMsg::CallMeMaybe {
                candidates: vec![sock("192.168.1.2:51820"), sock("[fe80::1]:51820")],
            },
        ),
    ]
}

/// The plaintext encoding of a disco message, written from the layout in the module docs.
fn disco_plaintext(msg: &DiscoMsg) -> Vec<u8> {
    fn addr(out: &mut Vec<u8>, a: SocketAddr) {
        match a {
            SocketAddr::V4(v4) => {
                out.push(4);
                out.extend_from_slice(&v4.port().to_be_bytes());
                out.extend_from_slice(&v4.ip().octets());
            }
            SocketAddr::V6(v6) => {
                out.push(6);
                out.extend_from_slice(&v6.port().to_be_bytes());
                out.extend_from_slice(&v6.ip().octets());
            }
        }
    }
    let mut out = Vec::new();
    match msg {
        DiscoMsg::Ping { tx } => {
            out.push(1);
            out.extend_from_slice(tx);
        }
        DiscoMsg::Pong { tx, observed } => {
            out.push(2);
            out.extend_from_slice(tx);
            addr(&mut out, *observed);
        }
        DiscoMsg::CallMeMaybe { candidates } => {
            out.push(3);
            out.push(candidates.len() as u8);
            for c in candidates {
                addr(&mut out, *c);
            }
        }
    }
    out
}

fn write_disco(c: &Corpus) -> Result<()> {
    let pair = disco_pair();
    for (i, (name, msg)) in disco_msgs().into_iter().enumerate() {
        let nonce = [i as u8 + 1; 24];
        let sealed = disco::seal(&pair.sender_key, &pair.sender_public, nonce, &msg);
        // The target's sealing must agree with disco::seal byte for byte.
        assert_eq!(
            pair.seal_plaintext(nonce, &disco_plaintext(&msg)),
            sealed,
            "{name}"
        );
        c.put("disco_open", name, &sealed)?;
        let mut input = nonce.to_vec();
        input.extend_from_slice(&disco_plaintext(&msg));
        c.put("disco_plaintext", name, &input)?;
    }
    Ok(())
}

fn write_reflect(c: &Corpus) -> Result<()> {
    c.put("reflect", "request", &reflect::request([1; 12]))?;
    c.put(
        "reflect",
        "response-v4",
        &reflect::response([2; 12], sock("203.0.113.9:41641")),
    )?;
    c.put(
        "reflect",
        "response-v6",
        &reflect::response([3; 12], sock("[2001:db8::5]:7")),
    )?;
    Ok(())
}

fn write_relay(c: &Corpus) -> Result<()> {
    // type byte, then what follows the 37-byte header (see mesh_proto::relay's docs).
    let frames: [(&str, u8, Vec<u8>); 6] = [
        ("register", 1, [[0x31; 32], [0x32; 32]].concat()),
        ("send", 2, b"\x01\x00\x00\x00wireguard".to_vec()),
        ("deliver", 3, b"\x04\x00\x00\x00wireguard".to_vec()),
        ("registered", 4, vec![0x33; 32]),
        ("hello", 5, vec![0; 32]),
        ("challenge", 6, vec![0x34; 32]),
    ];
    for (name, kind, rest) in frames {
        let mut d = relay::MAGIC.to_vec();
        d.push(kind);
        d.extend_from_slice(&[0x30; 32]);
        d.extend_from_slice(&rest);
        c.put("relay", name, &d)?;
    }
    Ok(())
}

fn write_text(c: &Corpus) -> Result<()> {
    let token = JoinToken {
        coordinators: vec!["203.0.113.1:7443".into(), "coord.example.net:7443".into()],
        pin: CertPin([5; 32]),
        network: "lab".into(),
        secret: JoinSecret {
            id: "t1".into(),
            secret: Key([6; 32]),
        },
    };
    c.put("token", "token", token.encode().as_bytes())?;
    let pin = CertPin::of_der(b"certificate");
    c.put("pin", "pin", pin.to_string().as_bytes())?;
    c.put(
        "pin",
        "pin-upper",
        pin.to_string()
            .to_uppercase()
            .replace("SHA256", "sha256")
            .as_bytes(),
    )?;
    c.put("pin", "key", Key([7; 32]).to_base64().as_bytes())?;
    Ok(())
}

fn status() -> Status {
    Status {
        address6: None,
        dns: None,
        networks: Vec::new(),
        interface: "mesh0".into(),
        address: Some(net("10.9.8.17/24")),
        mtu: 1280,
        public_key: Key([1; 32]),
        listen_port: 51820,
        peers: vec![PeerStatus {
            public_key: Key([2; 32]),
            endpoint: Some(sock("192.168.1.2:51820")),
            allowed_ips: vec![net("10.9.8.2/32")],
            latest_handshake_secs: Some(3),
            handshakes: 2,
            rx_bytes: 1000,
            tx_bytes: 2000,
            persistent_keepalive: Some(25),
            name: Some("node-2".into()),
            path: Some(PathType::Direct),
            rtt_ms: Some(1.25),
        }],
        dropped: DropCounters::default(),
        control: Some(ControlStatus {
            network: "lab".into(),
            coordinators: vec!["192.0.2.1:7443".into()],
            state: ControlState::Connected,
            message: None,
            netmap_version: Some(42),
            coordinator: Some("192.0.2.1:7443".into()),
        }),
        filter: None,
    }
}

fn write_api(c: &Corpus) -> Result<()> {
    let requests = [
        ("status", Request::Status),
        (
            "join",
            Request::Join(JoinRequest {
                network: "lab".into(),
                token: None,
                coordinator: Some("192.0.2.1:7443".into()),
                pin: Some(CertPin([5; 32])),
            }),
        ),
        (
            "leave",
            Request::Leave {
                network: "lab".into(),
            },
        ),
        (
            "ping",
            Request::Ping {
                peer: "node-2".into(),
            },
        ),
        ("netcheck", Request::Netcheck),
    ];
    for (name, request) in requests {
        let mut line = serde_json::to_vec(&request)?;
        line.push(b'\n');
        c.put("api_request", name, &line)?;
    }
    let responses = [
        (
            "status",
            Response::Status {
                ok: true,
                status: status(),
            },
        ),
        (
            "ping",
            Response::Ping {
                ok: true,
                ping: PingReport {
                    public_key: Key([2; 32]),
                    answers: vec![PingAnswer {
                        path: PathType::Relay,
                        addr: sock("192.0.2.1:7446"),
                        rtt_ms: 20.5,
                    }],
                    path: Some(PathType::Relay),
                },
            },
        ),
        (
            "netcheck",
            Response::Netcheck {
                ok: true,
                netcheck: NetcheckReport {
                    udp: true,
                    reflections: vec![Reflection {
                        reflector: sock("192.0.2.1:7444"),
                        observed: Some(sock("203.0.113.5:40000")),
                    }],
                    mapping: "endpoint-independent".into(),
                    relay: true,
                },
            },
        ),
        (
            "done",
            Response::Done {
                ok: true,
                message: "joined lab".into(),
            },
        ),
        ("error", Response::error("unknown command")),
    ];
    for (name, response) in responses {
        c.put("api_response", name, &serde_json::to_vec(&response)?)?;
    }
    Ok(())
}

fn write_configs(c: &Corpus, repo: &Path) -> Result<()> {
    let example = std::fs::read(repo.join("packaging/meshd.toml"))?;
    c.put("meshd_config", "example", &example)?;
    let full = format!(
        r#"interface = "mesh1"
listen-port = 51821
address = "10.9.8.1/24"
mtu = 1420
private-key-file = "node.key"
advertise-routes = ["10.244.3.0/24"]
metrics-listen = "127.0.0.1:9586"
peer-idle-after = 120

[[peer]]
public-key = "{a}"
preshared-key = "{b}"
endpoint = "198.51.100.2:51820"
allowed-ips = ["10.9.8.2/32", "10.244.4.0/24"]
persistent-keepalive = 25

[[peer]]
public-key = "{b}"
endpoint = "[2001:db8::2]:51820"
allowed-ips = ["fd00::2"]
"#,
        a = Key([1; 32]).to_base64(),
        b = Key([2; 32]).to_base64(),
    );
    c.put("meshd_config", "full", full.as_bytes())?;

    let example = std::fs::read(repo.join("packaging/coordinator.toml"))?;
    c.put("coordinator_config", "example", &example)?;
    let full = r#"data-dir = "/var/lib/wiremesh-coordinator"
listen = "0.0.0.0:7443"
http = "0.0.0.0:7480"
http-tls = true
advertise = ["coord.example.net:7443", "[2001:db8::1]:7443"]
reflect = ["0.0.0.0:7444", "0.0.0.0:7445"]
relay = "0.0.0.0:7446"
advertise-reflect = ["coord.example.net:7444", "coord.example.net:7445"]
advertise-relay = "coord.example.net:7446"
store = "etcd:http://10.0.0.1:2379,https://10.0.0.2:2379"
id = "c1"
etcd-prefix = "/wiremesh/"
etcd-ca = "/etc/wiremesh/etcd-ca.pem"
etcd-cert = "/etc/wiremesh/etcd-client.pem"
etcd-key = "/etc/wiremesh/etcd-client.key"
etcd-user = "wiremesh"
etcd-password-file = "/etc/wiremesh/etcd.password"
"#;
    c.put("coordinator_config", "full", full.as_bytes())?;
    Ok(())
}

fn write_policy(c: &Corpus) -> Result<()> {
    let doc = r#"default = "deny"

[groups]
cluster = ["tag:control", "tag:worker"]
ops = ["tag:ops", "member:laptop", "10.9.8.0/28"]

[[rule]]
from = ["group:cluster"]
to = ["tag:control"]
ports = ["tcp/2379-2380", "tcp/6443"]

[[rule]]
action = "deny"
from = ["tag:ops"]
to = ["*"]
ports = ["tcp/10250"]

[[rule]]
from = ["group:ops", "10.244.1.0/24"]
to = ["*"]
ports = ["tcp", "udp/53", "icmp", "*"]

[[test]]
from = "tag:ops"
to = "tag:control"
port = "tcp/10250"
expect = "deny"

[[test]]
from = "tag:worker"
to = "tag:control member:c1"
port = "tcp/6443"
expect = "allow"
"#;
    c.put("policy", "document", doc.as_bytes())?;
    c.put("policy", "allow-all", b"default = \"allow\"\n")?;
    Ok(())
}

/// An IPv4 packet (no options) around `payload`; `frag` = (offset in 8-byte units, more
/// fragments) with identification 0x4242, else DF.
fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    payload: &[u8],
    frag: Option<(u16, bool)>,
) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).expect("a small packet");
    let flags = match frag {
        Some((offset, more)) => offset | if more { 0x2000 } else { 0 },
        None => 0x4000,
    };
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&0x4242u16.to_be_bytes());
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet (fd00::`src` to fd00::`dst`) whose first next header is `next`, carrying
/// `payload` (extension headers included).
fn ipv6(src: u8, dst: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("a small packet");
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    for last in [src, dst] {
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last]);
    }
    p.extend_from_slice(payload);
    p
}

/// An IPv6 fragment header: `next`, offset in 8-byte units, more fragments, id 0x00c0ffee.
fn fragment_header(next: u8, offset: u16, more: bool) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&0x00c0_ffeeu32.to_be_bytes());
    h
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + data.len()).expect("a small datagram");
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

/// An ICMP(v6) message: type, code, checksum, id and sequence 1, then `body`.
fn icmp(kind: u8, code: u8, id: u16, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(body);
    m
}

/// Raw IP packets as the policy filter reads them (`meshd_packet`): one of each kind
/// `packet.rs` tells apart.
fn write_packets(c: &Corpus) -> Result<()> {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;
    const ICMPV6: u8 = 58;
    let (me, peer) = ([10, 9, 8, 1], [10, 9, 8, 2]);
    let syn = ipv4(me, peer, TCP, &tcp(40000, 443, 0x02), None);
    c.put("meshd_packet", "tcp-syn-ipv4", &syn)?;
    c.put(
        "meshd_packet",
        "udp-ipv6",
        &ipv6(1, 2, UDP, &udp(5353, 53, b"query")),
    )?;
    c.put(
        "meshd_packet",
        "echo-ipv4",
        &ipv4(me, peer, ICMP, &icmp(8, 0, 77, b"ping"), None),
    )?;
    c.put(
        "meshd_packet",
        "echo-reply-ipv6",
        &ipv6(2, 1, ICMPV6, &icmp(129, 0, 5, b"ping")),
    )?;
    // Port unreachable from the peer, quoting the SYN's header and first 8 bytes.
    let unreachable = ipv4(peer, me, ICMP, &icmp(3, 3, 0, &syn[..28]), None);
    c.put("meshd_packet", "unreachable-tcp-ipv4", &unreachable)?;
    // Packet too big from the peer, quoting a whole UDP datagram.
    let sent = ipv6(1, 2, UDP, &udp(40000, 9999, b"data"));
    c.put(
        "meshd_packet",
        "too-big-udp-ipv6",
        &ipv6(2, 1, ICMPV6, &icmp(2, 0, 0, &sent)),
    )?;
    // A UDP datagram of 24 bytes in two fragments: 8 bytes (the header), then 16.
    let datagram = udp(40000, 53, &[0x61; 16]);
    let first = ipv4(me, peer, UDP, &datagram[..8], Some((0, true)));
    c.put("meshd_packet", "fragment-first-ipv4", &first)?;
    let later = ipv4(me, peer, UDP, &datagram[8..], Some((1, false)));
    c.put("meshd_packet", "fragment-later-ipv4", &later)?;
    // The same over IPv6, the first fragment behind a hop-by-hop header.
    let mut first = vec![44, 0, 0, 0, 0, 0, 0, 0];
    first.extend_from_slice(&fragment_header(UDP, 0, true));
    first.extend_from_slice(&datagram[..8]);
    c.put(
        "meshd_packet",
        "fragment-first-ipv6",
        &ipv6(1, 2, 0, &first),
    )?;
    let mut later = fragment_header(UDP, 1, false);
    later.extend_from_slice(&datagram[8..]);
    c.put(
        "meshd_packet",
        "fragment-later-ipv6",
        &ipv6(1, 2, 44, &later),
    )?;
    Ok(())
}

/// Seeds for the `arbitrary`-driven round trips: a few fixed pseudo-random inputs of
/// different lengths (the fuzzer's mutations do the rest).
fn write_roundtrips(c: &Corpus) -> Result<()> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for target in [
        "roundtrip_control",
        "roundtrip_wire",
        "roundtrip_disco",
        "roundtrip_reflect",
    ] {
        for len in [16usize, 64, 256, 1024] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            c.put(target, &format!("random-{len}"), &bytes)?;
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz.parent().ok_or("fuzz/ has a parent")?;
    let c = Corpus {
        root: fuzz.join("corpus"),
    };
    write_control(&c)?;
    write_wire(&c)?;
    write_disco(&c)?;
    write_reflect(&c)?;
    write_relay(&c)?;
    write_text(&c)?;
    write_api(&c)?;
    write_configs(&c, repo)?;
    write_policy(&c)?;
    write_packets(&c)?;
    write_roundtrips(&c)?;
    println!("seeds written to {}", c.root.display());
    Ok(())
}
