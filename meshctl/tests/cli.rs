//! meshctl as a user runs it: the real binary, `wg` from wireguard-tools, and a fake meshd
//! (a thread answering on a unix socket with a canned response).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");
const WG: &str = "/usr/bin/wg";

/// Runs `program args`, feeding `stdin`.
fn run(program: &str, args: &[&str], stdin: &str, env: &[(&str, &Path)]) -> Output {
    if program == WG {
        assert!(
            Path::new(WG).exists(),
            "these tests need wireguard-tools: {WG} is missing"
        );
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove("MESHCTL_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// stdout of a run that must succeed with an empty stderr.
fn ok(program: &str, args: &[&str], stdin: &str) -> String {
    let out = run(program, args, stdin, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} {args:?} failed: {stderr}");
    assert!(
        stderr.is_empty(),
        "{program} {args:?} wrote to stderr: {stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts a failed run: exit code 1, nothing on stdout, exactly `want` + newline on stderr.
fn assert_one_line_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr, format!("{want}\n"));
}

fn assert_key_line(text: &str) {
    assert_eq!(text.len(), 45, "{text:?}");
    assert!(text.ends_with('\n'), "{text:?}");
    assert!(text[..44].parse::<mesh_proto::Key>().is_ok(), "{text:?}");
}

#[test]
fn wg_genkey_then_pubkey_agrees() {
    for _ in 0..8 {
        let private = ok(WG, &["genkey"], "");
        let ours = ok(MESHCTL, &["pubkey"], &private);
        let theirs = ok(WG, &["pubkey"], &private);
        assert_key_line(&ours);
        assert_eq!(ours, theirs, "private key {private:?}");
    }
}

#[test]
fn meshctl_genkey_then_pubkey_agrees() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        let private = ok(MESHCTL, &["genkey"], "");
        assert_key_line(&private);
        assert!(seen.insert(private.clone()), "genkey repeated a key");
        let theirs = ok(WG, &["pubkey"], &private);
        let ours = ok(MESHCTL, &["pubkey"], &private);
        assert_eq!(ours, theirs, "private key {private:?}");
    }
}

#[test]
fn pubkey_rejects_bad_input() {
    let out = run(MESHCTL, &["pubkey"], "not a key\n", &[]);
    assert_one_line_error(
        &out,
        "meshctl: stdin does not hold a private key: expected 44 base64 characters, got 9",
    );
    let out = run(MESHCTL, &["pubkey"], "", &[]);
    assert_one_line_error(
        &out,
        "meshctl: stdin does not hold a private key: expected 44 base64 characters, got 0",
    );
}

const PUBLIC: &str = "m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs=";
const PEER_A: &str = "YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=";
const PEER_B: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fn canned_status() -> serde_json::Value {
    serde_json::json!({
        "interface": "mesh0",
        "address": "10.9.8.1/24",
        "mtu": 1280,
        "public-key": PUBLIC,
        "listen-port": 51820,
        "peers": [
            {
                "public-key": PEER_A,
                "endpoint": "198.51.100.2:51820",
                "allowed-ips": ["10.9.8.2/32", "192.168.7.0/24"],
                "latest-handshake-secs": 12,
                "handshakes": 3,
                "rx-bytes": 1_289_748,
                "tx-bytes": 4_781_506,
                "persistent-keepalive": 25
            },
            {
                "public-key": PEER_B,
                "endpoint": null,
                "allowed-ips": [],
                "latest-handshake-secs": null,
                "handshakes": 0,
                "rx-bytes": 0,
                "tx-bytes": 100,
                "persistent-keepalive": null
            }
        ],
        "dropped": { "no-route": 1, "bad-source": 2, "invalid": 3, "unknown-peer": 4, "no-endpoint": 5 }
    })
}

/// A fake meshd: answers one connection with `answer` (None: accept, read the request, then
/// say nothing until the client gives up). Returns the request line it read.
fn fake_meshd(answer: Option<String>) -> (tempfile::TempDir, PathBuf, JoinHandle<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut request = String::new();
        reader.read_line(&mut request).unwrap();
        let mut stream = reader.into_inner();
        match answer {
            Some(answer) => {
                stream.write_all(answer.as_bytes()).unwrap();
                stream.write_all(b"\n").unwrap();
            }
            None => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let mut rest = Vec::new();
                let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
            }
        }
        request
    });
    (dir, path, handle)
}

fn status_answer() -> String {
    serde_json::json!({ "ok": true, "status": canned_status() }).to_string()
}

#[test]
fn status_text() {
    let (_dir, socket, server) = fake_meshd(Some(status_answer()));
    let text = ok(
        MESHCTL,
        &["--socket", socket.to_str().unwrap(), "status"],
        "",
    );
    assert_eq!(server.join().unwrap(), "{\"cmd\":\"status\"}\n");
    let want = format!(
        "\
interface: mesh0
  public key: {PUBLIC}
  listening port: 51820
  address: 10.9.8.1/24
  mtu: 1280

peer: {PEER_A}
  endpoint: 198.51.100.2:51820
  allowed ips: 10.9.8.2/32, 192.168.7.0/24
  latest handshake: 12 seconds ago
  transfer: 1.23 MiB received, 4.56 MiB sent
  persistent keepalive: every 25 seconds

peer: {PEER_B}
  allowed ips: (none)
  latest handshake: never
  transfer: 0 B received, 100 B sent

dropped packets:
  bad source: 2
  invalid: 3
  no endpoint: 5
  no route: 1
  not local: 0
  unknown peer: 4
"
    );
    // `not local` is new: a meshd before it sends none, which reads as 0.
    assert_eq!(text, want);
}

#[test]
fn status_json_from_env_socket() {
    let (_dir, socket, server) = fake_meshd(Some(status_answer()));
    let out = run(
        MESHCTL,
        &["status", "--json"],
        "",
        &[("MESHCTL_SOCKET", &socket)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.join().unwrap(), "{\"cmd\":\"status\"}\n");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("{\n  \"interface\": \"mesh0\",\n"),
        "not pretty: {text}"
    );
    let printed: serde_json::Value = serde_json::from_str(&text).unwrap();
    // What the canned meshd (from before the `not-local` counter) sent, with it as 0.
    let mut want = canned_status();
    want["dropped"]["not-local"] = 0.into();
    assert_eq!(printed, want);
}

#[test]
fn status_missing_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("meshd.sock");
    let out = run(
        MESHCTL,
        &["status", "--socket", socket.to_str().unwrap()],
        "",
        &[],
    );
    assert_one_line_error(
        &out,
        &format!(
            "meshctl: cannot reach meshd at {}: No such file or directory (is meshd running?)",
            socket.display()
        ),
    );
}

#[test]
fn socket_default_and_env_are_documented() {
    let help = ok(MESHCTL, &["status", "--help"], "");
    // clap wraps help at the terminal's width when one is attached (stdin may be a
    // terminal under `cargo test`): compare with the line breaks folded.
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("--socket <PATH>"), "{help}");
    assert!(flat.contains("[env: MESHCTL_SOCKET=]"), "{help}");
    assert!(flat.contains("[default: /run/meshd/meshd.sock]"), "{help}");
}

#[test]
fn status_error_answer() {
    let answer = r#"{"ok":false,"error":"shutting down"}"#.to_owned();
    let (_dir, socket, server) = fake_meshd(Some(answer));
    let out = run(
        MESHCTL,
        &["--socket", socket.to_str().unwrap(), "status"],
        "",
        &[],
    );
    server.join().unwrap();
    assert_one_line_error(
        &out,
        &format!("meshctl: meshd at {}: shutting down", socket.display()),
    );
}

#[test]
fn status_times_out() {
    let (_dir, socket, server) = fake_meshd(None);
    let start = Instant::now();
    let out = run(
        MESHCTL,
        &["--socket", socket.to_str().unwrap(), "status"],
        "",
        &[],
    );
    let took = start.elapsed();
    assert_one_line_error(
        &out,
        &format!(
            "meshctl: meshd at {} did not answer within 5 seconds",
            socket.display()
        ),
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "took {took:?}"
    );
    server.join().unwrap();
}
