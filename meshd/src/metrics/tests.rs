use std::collections::HashMap;

use mesh_proto::api::{
    DropCounters, FilterDirection, FilterDrop, FilterDropReason, FilterStatus, PathType,
    PeerStatus, Status,
};
use mesh_proto::Key;
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{render, serve};

fn peer(b: u8, name: Option<&str>, path: Option<PathType>, rx: u64) -> PeerStatus {
    PeerStatus {
        public_key: Key([b; 32]),
        endpoint: None,
        allowed_ips: vec![],
        latest_handshake_secs: path.map(|_| 7),
        handshakes: rx / 100,
        rx_bytes: rx,
        tx_bytes: rx * 2,
        persistent_keepalive: None,
        name: name.map(str::to_owned),
        path,
        rtt_ms: None,
    }
}

fn status(rx: u64, no_route: u64) -> Status {
    Status {
        address6: None,
        interface: "mesh0".into(),
        address: None,
        mtu: 1280,
        public_key: Key([9; 32]),
        listen_port: 51820,
        peers: vec![
            peer(1, Some("web-1"), Some(PathType::Direct), rx),
            peer(2, None, Some(PathType::Relay), 5),
            peer(3, Some("db"), None, 0),
        ],
        dropped: DropCounters {
            no_route,
            bad_source: 1,
            invalid: 2,
            unknown_peer: 3,
            no_endpoint: 4,
            not_local: 5,
        },
        control: None,
        filter: None,
        dns: None,
        networks: vec![],
    }
}

/// `metric{k=v,…}` (labels sorted) → value; checks every sample has HELP and a type.
fn parse(text: &str) -> HashMap<String, f64> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let mut out = HashMap::new();
    for s in scrape.samples {
        assert!(scrape.docs.contains_key(&s.metric), "{}", s.metric);
        let v = match s.value {
            Value::Counter(v) | Value::Gauge(v) => v,
            other => panic!("{}: {other:?}", s.metric),
        };
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), v);
    }
    out
}

#[test]
fn renders_a_status() {
    let fp1 = Key([1; 32]).fingerprint();
    let fp2 = Key([2; 32]).fingerprint();
    let fp3 = Key([3; 32]).fingerprint();
    let m = parse(&render(&status(100, 0)));
    assert_eq!(m["wiremesh_peers{}"], 3.0);
    assert_eq!(
        m[&format!("wiremesh_peer_rx_bytes{{name=web-1,peer={fp1}}}")],
        100.0
    );
    assert_eq!(
        m[&format!("wiremesh_peer_tx_bytes{{name=,peer={fp2}}}")],
        10.0
    );
    assert_eq!(
        m[&format!("wiremesh_peer_path{{name=,path=relay,peer={fp2}}}")],
        1.0
    );
    assert_eq!(
        m[&format!("wiremesh_peer_path{{name=,path=direct,peer={fp2}}}")],
        0.0
    );
    assert_eq!(
        m[&format!("wiremesh_peer_path{{name=db,path=direct,peer={fp3}}}")],
        0.0
    );
    assert_eq!(
        m[&format!("wiremesh_peer_latest_handshake_age_seconds{{name=,peer={fp2}}}")],
        7.0
    );
    assert!(!m.contains_key(&format!(
        "wiremesh_peer_latest_handshake_age_seconds{{name=db,peer={fp3}}}"
    )));
    assert_eq!(
        m[&format!("wiremesh_peer_handshakes_total{{name=web-1,peer={fp1}}}")],
        1.0
    );
    assert_eq!(
        m["wiremesh_dropped_packets_total{reason=unknown-peer}"],
        3.0
    );
    assert_eq!(m["wiremesh_dropped_packets_total{reason=no-route}"], 0.0);
    assert_eq!(m["wiremesh_dropped_packets_total{reason=not-local}"], 5.0);

    // Label values are escaped.
    let mut odd = status(1, 0);
    odd.peers[0].name = Some("a\"b\\c\nd".into());
    assert!(render(&odd).contains(&format!(
        "wiremesh_peer_rx_bytes{{peer=\"{fp1}\",name=\"a\\\"b\\\\c\\nd\"}} 1\n"
    )));

    // Counters move with the status.
    let later = parse(&render(&status(250, 6)));
    assert_eq!(
        later[&format!("wiremesh_peer_rx_bytes{{name=web-1,peer={fp1}}}")],
        250.0
    );
    assert_eq!(
        later["wiremesh_dropped_packets_total{reason=no-route}"],
        6.0
    );
    assert_eq!(
        later[&format!("wiremesh_peer_handshakes_total{{name=web-1,peer={fp1}}}")],
        2.0
    );
}

#[test]
fn renders_the_filter() {
    // No filter: no filter families.
    assert!(!render(&status(1, 0)).contains("wiremesh_node_filter"));
    let drop = |direction, reason, rule, packets| FilterDrop {
        direction,
        reason,
        rule,
        line: rule.map(|r| r * 10),
        packets,
    };
    let mut s = status(1, 0);
    s.filter = Some(FilterStatus {
        hash: Some("0123456789abcdef".into()),
        error: None,
        default: Some(mesh_proto::policy::Action::Deny),
        closed_all: false,
        closed: vec![],
        allowed_inbound: 40,
        allowed_outbound: 50,
        flows: 3,
        drops: vec![
            drop(FilterDirection::Inbound, FilterDropReason::Rule, Some(2), 7),
            drop(
                FilterDirection::Outbound,
                FilterDropReason::Rule,
                Some(2),
                1,
            ),
            drop(FilterDirection::Inbound, FilterDropReason::Default, None, 5),
            drop(
                FilterDirection::Outbound,
                FilterDropReason::Default,
                None,
                0,
            ),
            drop(
                FilterDirection::Inbound,
                FilterDropReason::TableFull,
                None,
                2,
            ),
        ],
    });
    let m = parse(&render(&s));
    assert_eq!(
        m["wiremesh_node_filter_info{default=deny,hash=0123456789abcdef,state=ok}"],
        1.0
    );
    assert_eq!(
        m["wiremesh_node_filter_drops_total{direction=inbound,rule=2}"],
        7.0
    );
    assert_eq!(
        m["wiremesh_node_filter_drops_total{direction=outbound,rule=2}"],
        1.0
    );
    assert_eq!(
        m["wiremesh_node_filter_drops_total{direction=inbound,rule=default}"],
        5.0
    );
    assert_eq!(
        m["wiremesh_node_filter_drops_total{direction=outbound,rule=default}"],
        0.0
    );
    assert_eq!(
        m["wiremesh_node_filter_drops_total{direction=inbound,rule=table-full}"],
        2.0
    );
    assert_eq!(
        m["wiremesh_node_filter_allowed_total{direction=outbound}"],
        50.0
    );
    assert_eq!(m["wiremesh_node_filter_flows{}"], 3.0);
    // A failed update shows in the state.
    s.filter.as_mut().unwrap().error = Some("hash mismatch".into());
    let m = parse(&render(&s));
    assert_eq!(
        m["wiremesh_node_filter_info{default=deny,hash=0123456789abcdef,state=failed-closed}"],
        1.0
    );
}

async fn fetch(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn responder_answers_get_metrics_only() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve(listener, || render(&status(42, 1))));

    let res = fetch(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = res.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    let m = parse(body);
    assert_eq!(m["wiremesh_dropped_packets_total{reason=no-route}"], 1.0);

    let res = fetch(addr, "GET / HTTP/1.1\r\n\r\n").await;
    assert!(res.starts_with("HTTP/1.1 404 "), "{res}");
    let res = fetch(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(res.starts_with("HTTP/1.1 405 "), "{res}");
    // An endless request head is cut off at the bound.
    let junk = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(20_000));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(junk.as_bytes()).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&out)
    );
    task.abort();
}
