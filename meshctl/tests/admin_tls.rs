//! `meshctl admin` over https against a fake coordinator with a self-signed certificate:
//! the pin from --admin-pin, MESHCTL_ADMIN_PIN or the coordinator's data dir; wrong pins,
//! missing pins and the wrong scheme are one-line errors.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{assert_error, assert_ok, meshctl, token_file, FakeCoordinator};
use serde_json::json;

const ADMIN_TOKEN: &str = "adm_s3cret-T0ken";
const OTHER_PIN: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

fn networks() -> Vec<(u16, String)> {
    let network = json!({ "name": "lab", "cidr": "10.9.8.0/24", "mtu": 1400, "keepalive": 25, "members": 2, "version": 7 });
    vec![(200, json!([network]).to_string())]
}

/// `meshctl admin --coordinator URL --token-file FILE [extra…] network list`.
fn list(url: &str, token: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut args = vec![
        "admin",
        "--coordinator",
        url,
        "--token-file",
        token.to_str().unwrap(),
    ];
    args.extend(extra);
    args.extend(["network", "list"]);
    meshctl(&args, env)
}

const TABLE: &str = "\
NAME  CIDR         MTU   KEEPALIVE  MEMBERS  VERSION
lab   10.9.8.0/24  1400  25s        2        7
";

#[test]
fn https_with_the_pin_from_the_flag_or_the_environment() {
    let coordinator = FakeCoordinator::start_tls(networks());
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), ADMIN_TOKEN);
    let pin = coordinator.pin.clone().unwrap();

    let out = list(&coordinator.url, &token, &["--admin-pin", &pin], &[]);
    assert_eq!(assert_ok(&out), TABLE);
    let out = list(
        &coordinator.url,
        &token,
        &[],
        &[("MESHCTL_ADMIN_PIN", &pin)],
    );
    assert_eq!(assert_ok(&out), TABLE);
    let requests = coordinator.requests();
    assert_eq!(requests.len(), 2);
    for r in requests {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/api/networks")
        );
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {ADMIN_TOKEN}").as_str())
        );
    }
}

#[test]
fn https_pins_the_certificate_in_the_coordinators_data_dir() {
    let coordinator = FakeCoordinator::start_tls(networks());
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), ADMIN_TOKEN);

    // Without a pin, https is refused before anything is sent.
    let out = list(&coordinator.url, &token, &[], &[]);
    assert_error(
        &out,
        &format!("meshctl: --coordinator {}: https needs the admin API certificate's pin: give --admin-pin sha256:… (`coordinator pin` prints it for the coordinator's own certificate), or a --token-file in the coordinator's data dir", coordinator.url),
    );
    assert!(coordinator.requests().is_empty());

    // DIR/admin.token and DIR/cert.der, as `coordinator serve --http-tls` leaves them.
    std::fs::write(dir.path().join("cert.der"), &coordinator.cert_der).unwrap();
    let out = list(&coordinator.url, &token, &[], &[]);
    assert_eq!(assert_ok(&out), TABLE);
    assert_eq!(coordinator.requests().len(), 1);
}

#[test]
fn a_wrong_pin_stops_before_the_token_is_sent() {
    let coordinator = FakeCoordinator::start_tls(networks());
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), ADMIN_TOKEN);
    let pin = coordinator.pin.clone().unwrap();

    let out = list(&coordinator.url, &token, &["--admin-pin", OTHER_PIN], &[]);
    assert_error(
        &out,
        &format!(
            "meshctl: the coordinator at {} presented certificate {pin}, not the pinned {OTHER_PIN} (from --admin-pin)",
            coordinator.url
        ),
    );
    // A stale certificate in the data dir names the file.
    std::fs::write(dir.path().join("cert.der"), b"another certificate").unwrap();
    let out = list(&coordinator.url, &token, &[], &[]);
    let stale = mesh_proto::control::CertPin::of_der(b"another certificate");
    assert_error(
        &out,
        &format!(
            "meshctl: the coordinator at {} presented certificate {pin}, not the pinned {stale} (from {})",
            coordinator.url,
            dir.path().join("cert.der").display()
        ),
    );
    assert!(coordinator.requests().is_empty());

    let out = list(&coordinator.url, &token, &["--admin-pin", "sha256:12"], &[]);
    assert_error(
        &out,
        "meshctl: --admin-pin: expected sha256:<64 hex digits>",
    );
}

#[test]
fn the_wrong_scheme_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), ADMIN_TOKEN);

    // https:// to a plain HTTP server.
    let plain = FakeCoordinator::start(networks());
    let https_url = plain.url.replacen("http://", "https://", 1);
    let out = list(&https_url, &token, &["--admin-pin", OTHER_PIN], &[]);
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!(
            "meshctl: TLS handshake with the coordinator at {https_url} failed: "
        )) && err.ends_with("(does it serve plain http? then use http://)\n"),
        "{err}"
    );

    // http:// to an HTTPS server: never a success, and a hint.
    let tls = FakeCoordinator::start_tls(networks());
    let http_url = tls.url.replacen("https://", "http://", 1);
    let out = list(&http_url, &token, &[], &[]);
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!(
            "meshctl: talking to the coordinator at {http_url}: "
        )) && err.ends_with("(does it serve https? then use https:// and --admin-pin)\n"),
        "{err}"
    );
    assert!(tls.requests().is_empty());

    // A pin with http:// is a mistake, not silently ignored.
    let out = list(&http_url, &token, &["--admin-pin", OTHER_PIN], &[]);
    assert_error(
        &out,
        &format!(
            "meshctl: --admin-pin: a pin is for https:// admin URLs, and {http_url} is plain http"
        ),
    );
}
