//! `/metrics` through the router, parsed with a Prometheus text-format parser.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mesh_proto::control::ServerMsg;
use prometheus_parse::{Scrape, Value};
use tower::ServiceExt as _;

use crate::admin::router;
use crate::testutil::{hello, private, Harness, Node};

const TOKEN: &str = "metrics-test-token";

async fn get(app: &axum::Router, auth: Option<&str>) -> (StatusCode, String, String) {
    let mut req = Request::builder().uri("/metrics");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

/// Samples by `name{label=value,…}` (labels sorted), with their values.
async fn scrape(app: &axum::Router) -> HashMap<String, f64> {
    {
        let (status, ctype, text) = get(app, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let mut out = HashMap::new();
        for s in parsed.samples {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let v = match s.value {
                Value::Counter(v) => {
                    assert!(s.metric.ends_with("_total"), "{}", s.metric);
                    v
                }
                Value::Gauge(v) => v,
                other => panic!("{}: unexpected {other:?}", s.metric),
            };
            assert!(
                parsed.docs.contains_key(&s.metric),
                "{} has no HELP",
                s.metric
            );
            out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), v);
        }
        out
    }
}

#[tokio::test]
async fn metrics_parse_and_counters_move() {
    let h = Harness::new();
    let app = router(h.coord.clone(), TOKEN);
    let (status, _, _) = get(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = get(&app, Some("Bearer wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    h.network("lab").await;
    let before = scrape(&app).await;
    assert_eq!(before["wiremesh_members{network=lab}"], 0.0);
    assert_eq!(before["wiremesh_members_online{network=lab}"], 0.0);
    assert_eq!(before["wiremesh_joins_total{}"], 0.0);
    assert_eq!(before["wiremesh_netmap_pushes_total{}"], 0.0);
    assert_eq!(
        before["wiremesh_relay_dropped_total{reason=bad-token}"],
        0.0
    );

    let token = h.token("lab", false, None).await;
    let mut node = Node::connect(&h.coord, 1, hello("lab", &private(1), Some(token))).await;
    assert!(matches!(node.recv().await, ServerMsg::Netmap { .. }));
    h.coord.stats().relay.forwarded_bytes.add(1234);
    h.coord.stats().reflector.requests.inc();

    let after = scrape(&app).await;
    assert_eq!(after["wiremesh_members{network=lab}"], 1.0);
    assert_eq!(after["wiremesh_members_authorized{network=lab}"], 1.0);
    assert_eq!(after["wiremesh_members_online{network=lab}"], 1.0);
    assert_eq!(after["wiremesh_joins_total{}"], 1.0);
    assert!(after["wiremesh_netmap_pushes_total{}"] >= 1.0);
    assert_eq!(after["wiremesh_relay_forwarded_bytes_total{}"], 1234.0);
    assert_eq!(after["wiremesh_reflector_requests_total{}"], 1.0);

    node.end().await;
    let gone = scrape(&app).await;
    assert_eq!(gone["wiremesh_members_online{network=lab}"], 0.0);
    assert_eq!(gone["wiremesh_joins_total{}"], 1.0);
}

#[test]
fn label_values_are_escaped() {
    let mut p = super::Page::default();
    p.family("m", "gauge", "help");
    p.sample("m", &[("n", "a\"b\\c\nd")], 1);
    assert_eq!(
        p.finish(),
        "# HELP m help\n# TYPE m gauge\nm{n=\"a\\\"b\\\\c\\nd\"} 1\n"
    );
}
