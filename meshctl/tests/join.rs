//! `meshctl join`, `leave` and the status's control section against a fake meshd that
//! answers Join with Done and then a scripted sequence of statuses.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, assert_ok, meshctl, stdout, FakeMeshd};
use mesh_proto::control::{JoinSecret, JoinToken};
use serde_json::{json, Value};

const PUBLIC: &str = "m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs=";
const PIN: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn token(network: &str) -> String {
    JoinToken {
        coordinators: vec!["203.0.113.1:7443".to_owned()],
        pin: PIN.parse().unwrap(),
        network: network.to_owned(),
        secret: JoinSecret {
            id: "t1".to_owned(),
            secret: mesh_proto::Key([5; 32]),
        },
    }
    .encode()
}

fn done(message: &str) -> Value {
    json!({ "ok": true, "message": message })
}

fn control(state: &str, message: Option<&str>, version: Option<u64>) -> Value {
    json!({
        "network": "lab",
        "coordinators": ["203.0.113.1:7443"],
        "state": state,
        "message": message,
        "netmap-version": version,
    })
}

fn status(control: Option<Value>, peers: usize) -> Value {
    let peer = json!({
        "public-key": "YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=",
        "endpoint": null,
        "allowed-ips": ["10.9.8.2/32"],
        "latest-handshake-secs": null,
        "rx-bytes": 0,
        "tx-bytes": 0,
        "persistent-keepalive": 25
    });
    let mut status = json!({
        "interface": "mesh0",
        "address": "10.9.8.3/24",
        "mtu": 1280,
        "public-key": PUBLIC,
        "listen-port": 51820,
        "peers": vec![peer; peers],
        "dropped": { "no-route": 0, "bad-source": 0, "invalid": 0, "unknown-peer": 0, "no-endpoint": 0 }
    });
    if let Some(c) = control {
        status["control"] = c;
    }
    json!({ "ok": true, "status": status })
}

const JOINING: &str = "joining network \"lab\" via 203.0.113.1:7443";
const PENDING_LINE: &str = "waiting for an admin to authorise this node (fingerprint m9OJrAFV): meshctl admin … authorize lab m9OJrAFV";

#[test]
fn join_with_token_follows_progress_until_connected() {
    let t = token("lab");
    let meshd = FakeMeshd::start(vec![
        done(JOINING),
        status(Some(control("connecting", None, None)), 0),
        status(Some(control("connecting", None, None)), 0),
        status(Some(control("pending", None, None)), 0),
        status(Some(control("connected", None, Some(4))), 2),
    ]);
    let out = meshctl(
        &[
            "--socket",
            meshd.socket(),
            "join",
            "lab",
            "--token",
            &t,
            "--wait-authorized",
        ],
        &[],
    );
    let text = assert_ok(&out);
    assert_eq!(
        text,
        format!(
            "{JOINING}\nconnecting to 203.0.113.1:7443…\n{PENDING_LINE}\njoined lab as 10.9.8.3/24 (2 peers)\n"
        )
    );
    let requests = meshd.requests();
    assert_eq!(requests.len(), 5, "{requests:?}");
    assert_eq!(
        requests[0],
        json!({ "cmd": "join", "network": "lab", "token": t, "coordinator": null, "pin": null })
    );
    for r in &requests[1..] {
        assert_eq!(r, &json!({ "cmd": "status" }));
    }
}

#[test]
fn join_without_token_stops_at_pending() {
    let meshd = FakeMeshd::start(vec![
        done(JOINING),
        status(
            Some(control("connecting", Some("connection refused"), None)),
            0,
        ),
        status(
            Some(control("pending", Some("not authorised yet"), None)),
            0,
        ),
        status(Some(control("connected", None, Some(4))), 2),
    ]);
    let out = meshctl(
        &[
            "--socket",
            meshd.socket(),
            "join",
            "lab",
            "--coordinator",
            "203.0.113.1:7443",
            "--pin",
            PIN,
        ],
        &[],
    );
    let text = assert_ok(&out);
    assert_eq!(
        text,
        format!(
            "{JOINING}\nconnecting to 203.0.113.1:7443… (connection refused)\n{PENDING_LINE}\n"
        )
    );
    let requests = meshd.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(
        requests[0],
        json!({ "cmd": "join", "network": "lab", "token": null, "coordinator": "203.0.113.1:7443", "pin": PIN })
    );
}

#[test]
fn join_denied_exits_1_with_the_reason() {
    let meshd = FakeMeshd::start(vec![
        done(JOINING),
        status(Some(control("connecting", None, None)), 0),
        status(Some(control("denied", Some("join token expired"), None)), 0),
    ]);
    let out = meshctl(
        &[
            "--socket",
            meshd.socket(),
            "join",
            "lab",
            "--token",
            &token("lab"),
        ],
        &[],
    );
    let text = assert_error(
        &out,
        "meshctl: the coordinator refused this node in lab: join token expired",
    );
    assert_eq!(
        text,
        format!("{JOINING}\nconnecting to 203.0.113.1:7443…\n")
    );
}

#[test]
fn join_times_out_naming_the_last_state() {
    let meshd = FakeMeshd::start(vec![
        done(JOINING),
        status(Some(control("connecting", Some("timed out"), None)), 0),
    ]);
    let start = Instant::now();
    let out = meshctl(
        &[
            "--socket",
            meshd.socket(),
            "join",
            "lab",
            "--token",
            &token("lab"),
            "--timeout",
            "1s",
        ],
        &[],
    );
    let took = start.elapsed();
    let text = assert_error(
        &out,
        "meshctl: timed out after 1s waiting to join lab; last state: connecting (timed out)",
    );
    assert_eq!(
        text,
        format!("{JOINING}\nconnecting to 203.0.113.1:7443… (timed out)\n")
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    // Polled every 250 ms: about five statuses in one second, not a busy loop.
    let polls = meshd.requests().len() - 1;
    assert!((3..=8).contains(&polls), "{polls} status polls");
}

#[test]
fn join_waiting_for_authorisation_times_out() {
    let meshd = FakeMeshd::start(vec![
        done(JOINING),
        status(Some(control("pending", None, None)), 0),
    ]);
    let out = meshctl(
        &[
            "--socket",
            meshd.socket(),
            "join",
            "lab",
            "--coordinator",
            "h:7443",
            "--pin",
            PIN,
            "--wait-authorized",
            "--timeout",
            "1s",
        ],
        &[],
    );
    let text = assert_error(
        &out,
        "meshctl: timed out after 1s waiting to join lab; last state: pending; an admin must authorise fingerprint m9OJrAFV",
    );
    assert_eq!(text, format!("{JOINING}\n{PENDING_LINE}\n"));
}

#[test]
fn join_json_prints_the_final_control_status() {
    let meshd = FakeMeshd::start(vec![
        done(JOINING),
        status(Some(control("connecting", None, None)), 0),
        status(Some(control("connected", None, Some(9))), 1),
    ]);
    let out = meshctl(
        &[
            "--socket",
            meshd.socket(),
            "join",
            "lab",
            "--token",
            &token("lab"),
            "--json",
        ],
        &[],
    );
    let text = assert_ok(&out);
    let printed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(printed, control("connected", None, Some(9)));
    assert!(text.starts_with("{\n  \"network\": \"lab\",\n"), "{text}");
}

#[test]
fn join_no_wait_asks_once() {
    let meshd = FakeMeshd::start(vec![
        done(JOINING),
        status(Some(control("connecting", None, None)), 0),
    ]);
    let out = meshctl(
        &[
            "--socket",
            meshd.socket(),
            "join",
            "lab",
            "--token",
            &token("lab"),
            "--no-wait",
        ],
        &[],
    );
    assert_eq!(assert_ok(&out), format!("{JOINING}\n"));
    assert_eq!(meshd.requests().len(), 1);
}

#[test]
fn join_refused_by_meshd() {
    let meshd = FakeMeshd::start(vec![json!({
        "ok": false,
        "error": "already a member of network \"prod\"; run `meshctl leave prod` first"
    })]);
    let out = meshctl(
        &[
            "--socket",
            meshd.socket(),
            "join",
            "lab",
            "--token",
            &token("lab"),
        ],
        &[],
    );
    let text = assert_error(
        &out,
        "meshctl: meshd refused: already a member of network \"prod\"; run `meshctl leave prod` first",
    );
    assert_eq!(text, "");
    assert_eq!(meshd.requests().len(), 1);
}

#[test]
fn join_stops_when_the_membership_disappears() {
    let meshd = FakeMeshd::start(vec![done(JOINING), status(None, 0)]);
    let out = meshctl(
        &[
            "--socket",
            meshd.socket(),
            "join",
            "lab",
            "--token",
            &token("lab"),
        ],
        &[],
    );
    assert_error(
        &out,
        "meshctl: meshd stopped joining \"lab\": it has no network (did someone run `meshctl leave` or join another network?)",
    );
}

#[test]
fn join_flags_are_checked_before_asking_meshd() {
    // No meshd at all: every one of these must fail on the flags alone.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("meshd.sock");
    let socket = socket.to_str().unwrap();
    let t = token("lab");
    for (args, want) in [
        (vec!["--token", "wm1_garbage"], "meshctl: --token: not a wiremesh join token (expected wm1_…)"),
        (vec!["--token", &token("prod")], "meshctl: the token is for network \"prod\", not \"lab\""),
        (vec!["--token", &t, "--coordinator", "h:1"], "meshctl: --token cannot be used with --coordinator or --pin (the token names the coordinator and its pin)"),
        (vec!["--token", &t, "--pin", PIN], "meshctl: --token cannot be used with --coordinator or --pin (the token names the coordinator and its pin)"),
        (vec!["--coordinator", "h:1"], "meshctl: --coordinator needs --pin sha256:HEX (the coordinator certificate's pin)"),
        (vec!["--pin", PIN], "meshctl: --pin needs --coordinator HOST:PORT"),
        (vec!["--coordinator", "h:1", "--pin", "sha256:abc"], "meshctl: --pin: expected sha256:<64 hex digits>"),
        (vec!["--coordinator", "h", "--pin", PIN], "meshctl: --coordinator: expected HOST:PORT (e.g. 203.0.113.1:7443 or [2001:db8::1]:7443), got \"h\""),
        (vec![], "meshctl: give --token TOKEN, or --coordinator HOST:PORT with --pin sha256:HEX"),
    ] {
        let mut all = vec!["--socket", socket, "join", "lab"];
        all.extend(args);
        let out = meshctl(&all, &[]);
        assert_eq!(assert_error(&out, want), "", "{all:?}");
    }
}

#[test]
fn leave_prints_meshds_message() {
    let meshd = FakeMeshd::start(vec![done("left network \"lab\"")]);
    let out = meshctl(&["--socket", meshd.socket(), "leave", "lab"], &[]);
    assert_eq!(assert_ok(&out), "left network \"lab\"\n");
    assert_eq!(
        meshd.requests(),
        vec![json!({ "cmd": "leave", "network": "lab" })]
    );

    let meshd = FakeMeshd::start(vec![
        json!({ "ok": false, "error": "not a member of \"lab\"" }),
    ]);
    let out = meshctl(&["--socket", meshd.socket(), "leave", "lab"], &[]);
    assert_error(&out, "meshctl: meshd refused: not a member of \"lab\"");
}

#[test]
fn status_shows_the_control_section() {
    let meshd = FakeMeshd::start(vec![status(
        Some(control("connecting", Some("connection refused"), Some(12))),
        0,
    )]);
    let out = meshctl(&["--socket", meshd.socket(), "status"], &[]);
    let text = stdout(&out);
    assert!(out.status.success());
    assert!(
        text.contains(
            "  mtu: 1280\n\nnetwork: lab\n  coordinator: 203.0.113.1:7443\n  state: connecting\n  message: connection refused\n  netmap version: 12\n\ndropped packets:\n"
        ),
        "{text}"
    );
}
