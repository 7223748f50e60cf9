//! The real `coordinator serve --http-tls` binary: the start-up line names the admin URL
//! and the pin, and a client pinning the coordinator's own certificate (the one QUIC
//! serves) gets answers; bad TLS settings stop the start with one line.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use coordinator::identity::DataDir;
use mesh_proto::control::CertPin;
use rustls::pki_types::ServerName;

const COORDINATOR: &str = env!("CARGO_BIN_EXE_coordinator");

/// Kills the coordinator when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(COORDINATOR);
    cmd.args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--no-relay"])
        .args(extra)
        .env("COORDINATOR_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// `GET path` with the token over TLS pinned to `pin`: the status line.
fn get(addr: &str, pin: CertPin, path: &str, token: &str) -> String {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let answer = exchange(addr, pin, &request);
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Sends `request` over TLS pinned to `pin`; returns the whole answer.
fn exchange(addr: &str, pin: CertPin, request: &str) -> String {
    let config = mesh_pin::client_config(pin, &[]);
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("wiremesh-coordinator").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    // No close_notify before the close is fine: the answer is complete.
    let _ = tls.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn serves_the_admin_api_over_https_with_its_own_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = serve(tmp.path(), &["--http", "127.0.0.1:0", "--http-tls"])
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let line = loop {
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) if line.contains("admin https://") => break line,
            Ok(line) => log.push(line),
            Err(_) => panic!("no `admin https://` line; log:\n{}", log.join("\n")),
        }
    };
    // `admin https://127.0.0.1:PORT (certificate pin sha256:…)`
    let rest = &line[line.find("admin https://").unwrap() + "admin https://".len()..];
    let (addr, rest) = rest.split_once(' ').unwrap();
    let dir = DataDir::new(tmp.path());
    let pin = dir.load_identity().unwrap().pin;
    assert_eq!(rest, format!("(certificate pin {pin})"), "{line}");
    let token = dir.load_admin_token().unwrap();

    assert_eq!(get(addr, pin, "/api/networks", &token), "HTTP/1.1 200 OK");
    assert_eq!(
        get(addr, pin, "/api/networks", "wrong"),
        "HTTP/1.1 401 Unauthorized"
    );
    // Over TLS the dashboard's session cookie is Secure (besides HttpOnly, SameSite=Strict).
    let body = format!("token={token}");
    let login = exchange(
        addr,
        pin,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {login}"));
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    drop(running);
}

#[test]
fn bad_tls_settings_stop_the_start_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--http-cert", missing, "--http-key", missing],
            format!("coordinator: error: --http-cert {missing}: No such file or directory (os error 2)"),
        ),
        (
            vec!["--http-cert", missing],
            "coordinator: error: --http-cert needs --http-key too (the admin API's PEM certificate and its key go together)".to_owned(),
        ),
        (
            vec!["--http", "0.0.0.0:0"],
            "coordinator: error: --http 0.0.0.0:0 is not a loopback address; pass --http-tls (or http-tls = true, or --http-cert and --http-key) to serve the admin API over HTTPS, or --http-insecure (or http-insecure = true) to serve it without TLS anyway".to_owned(),
        ),
    ] {
        let out = serve(tmp.path(), &args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr, format!("{want}\n"), "{args:?}");
    }
    // Nothing was made: the check comes before the data directory.
    assert!(!tmp.path().join("cert.der").exists());
}
