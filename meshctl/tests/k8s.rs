//! `meshctl k8s [--json]` against a fake meshd: the real binary, one status exchange.
//!
//! NOTE: these tests need the `k8s` subcommand wired into meshctl's CLI
//! (`Command::K8s { json }` in cli.rs calling `k8s::run` in main.rs); until then they fail
//! with a message saying so. The derivation itself is unit-tested in `src/k8s.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_error, assert_ok, meshctl, stderr, FakeMeshd};
use serde_json::{json, Value};

const PUBLIC: &str = "m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs=";

fn status(address: Option<&str>, control: Value) -> Value {
    let mut status = json!({
        "interface": "mesh0",
        "address": address,
        "mtu": 1280,
        "public-key": PUBLIC,
        "listen-port": 51820,
        "peers": [],
        "dropped": {"no-route": 0, "bad-source": 0, "invalid": 0, "unknown-peer": 0, "no-endpoint": 0},
    });
    if !control.is_null() {
        status["control"] = control;
    }
    json!({"ok": true, "status": status})
}

fn connected() -> Value {
    json!({
        "network": "lab",
        "coordinators": ["203.0.113.1:7443"],
        "state": "connected",
        "message": null,
        "netmap-version": 4,
    })
}

/// Runs `meshctl --socket S k8s ARGS`, failing clearly while the subcommand is not wired.
fn k8s(meshd: &FakeMeshd, args: &[&str]) -> std::process::Output {
    k8s_at(meshd.socket(), args)
}

fn k8s_at(socket: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--socket", socket, "k8s"];
    all.extend_from_slice(args);
    let out = meshctl(&all, &[]);
    assert!(
        !stderr(&out).contains("unrecognized subcommand"),
        "meshctl has no `k8s` subcommand yet: wire meshctl/src/k8s.rs::run into cli.rs/main.rs \
         (stderr: {})",
        stderr(&out)
    );
    out
}

#[test]
fn json_for_a_joined_node() {
    let meshd = FakeMeshd::start(vec![status(Some("10.9.8.3/24"), connected())]);
    let text = assert_ok(&k8s(&meshd, &["--json"]));
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        got,
        json!({
            "node-ip": "10.9.8.3",
            "interface": "mesh0",
            "mesh-mtu": 1280,
            "network": "lab",
            "kubelet-args": ["--node-ip=10.9.8.3"],
            "kubeadm": {
                "advertise-address": "10.9.8.3",
                "control-plane-endpoint": "10.9.8.3:6443"
            },
            "etcd": {
                "listen-client-urls": "https://127.0.0.1:2379,https://10.9.8.3:2379",
                "advertise-client-urls": "https://10.9.8.3:2379",
                "listen-peer-urls": "https://10.9.8.3:2380",
                "initial-advertise-peer-urls": "https://10.9.8.3:2380"
            },
            "flannel": {"iface": "mesh0", "vxlan-mtu": 1230, "host-gw-mtu": 1280}
        })
    );
    assert_eq!(meshd.requests(), [json!({"cmd": "status"})]);
}

#[test]
fn text_names_every_flag() {
    let meshd = FakeMeshd::start(vec![status(Some("10.9.8.3/24"), connected())]);
    let text = assert_ok(&k8s(&meshd, &[]));
    for want in [
        "--node-ip=10.9.8.3",
        "localAPIEndpoint.advertiseAddress: 10.9.8.3",
        "controlPlaneEndpoint: 10.9.8.3:6443",
        "--listen-client-urls=https://127.0.0.1:2379,https://10.9.8.3:2379",
        "--initial-advertise-peer-urls=https://10.9.8.3:2380",
        "--iface=mesh0",
        "vxlan mtu: 1230",
        "host-gw mtu: 1280",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn not_joined_is_one_line() {
    for json in [false, true] {
        let meshd = FakeMeshd::start(vec![status(None, Value::Null)]);
        let args: &[&str] = if json { &["--json"] } else { &[] };
        let out = assert_error(
            &k8s(&meshd, args),
            "meshctl: this node has no overlay address yet: join a network first: meshctl join …",
        );
        assert_eq!(out, "", "nothing on stdout");
    }
}

#[test]
fn meshd_down_is_one_line() {
    let meshd = FakeMeshd::start(vec![status(None, Value::Null)]);
    let gone = format!("{}.gone", meshd.socket());
    let out = k8s_at(&gone, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).starts_with("meshctl: cannot reach meshd at "),
        "{}",
        stderr(&out)
    );
}
