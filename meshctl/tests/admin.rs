//! `meshctl admin` against a fake coordinator admin API (a thread on 127.0.0.1:0 answering
//! canned responses): method, path, headers, JSON body, text and `--json` output, errors.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{assert_error, assert_ok, meshctl, stderr, token_file, FakeCoordinator};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "adm_s3cret-T0ken";
const KEY: &str = "m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs=";
const KEY_IN_PATH: &str = "m9OJrAFVwqGa%2BbJFZnZX5%2BJZChdEygr56p86FYJdDjs%3D";

struct Admin {
    coordinator: FakeCoordinator,
    _dir: tempfile::TempDir,
    token_file: PathBuf,
}

impl Admin {
    fn start(answers: Vec<(u16, Value)>) -> Admin {
        let answers = answers
            .into_iter()
            .map(|(status, body)| {
                let body = if body.is_null() {
                    String::new()
                } else {
                    body.to_string()
                };
                (status, body)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let token_file = token_file(dir.path(), ADMIN_TOKEN);
        Admin {
            coordinator: FakeCoordinator::start(answers),
            _dir: dir,
            token_file,
        }
    }

    /// `meshctl admin --coordinator URL --token-file FILE ARGS…`.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec![
            "admin",
            "--coordinator",
            &self.coordinator.url,
            "--token-file",
            self.token_file.to_str().unwrap(),
        ];
        all.extend(args);
        meshctl(&all, &[])
    }

    /// The paths of every request the coordinator got, all GETs with the admin token.
    fn gets(&self) -> Vec<String> {
        self.coordinator
            .requests()
            .into_iter()
            .map(|r| {
                assert_eq!(r.method, "GET");
                assert_eq!(
                    r.header("authorization"),
                    Some(format!("Bearer {ADMIN_TOKEN}").as_str())
                );
                r.path
            })
            .collect()
    }

    /// Asserts the single request the coordinator got; returns its JSON body, if any.
    fn expect(&self, method: &str, path: &str) -> Option<Value> {
        let r = self.coordinator.request();
        assert_eq!((r.method.as_str(), r.path.as_str()), (method, path));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {ADMIN_TOKEN}").as_str())
        );
        if r.body.is_empty() {
            return None;
        }
        assert_eq!(r.header("content-type"), Some("application/json"));
        Some(r.json())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn network_view() -> Value {
    json!({ "name": "lab", "cidr": "10.9.8.0/24", "mtu": 1400, "keepalive": 25, "members": 2, "version": 7 })
}

fn member_view(name: &str, last_seen: Option<u64>) -> Value {
    member_with_key(name, KEY, last_seen)
}

fn member_with_key(name: &str, key: &str, last_seen: Option<u64>) -> Value {
    json!({
        "public-key": key,
        "fingerprint": &key[..8],
        "name": name,
        "address": "10.9.8.3",
        "authorized": true,
        "online": last_seen.is_some(),
        "last-seen": last_seen,
        "version": "0.1.0",
        "endpoints": ["198.51.100.2:51820"]
    })
}

fn token_view(expires_at: Option<u64>) -> Value {
    json!({
        "id": "tok_1a2b",
        "network": "lab",
        "reusable": true,
        "expires-at": expires_at,
        "revoked": false,
        "uses": 0,
        "created-at": 1_795_295_716
    })
}

#[test]
fn network_create_posts_the_body() {
    let admin = Admin::start(vec![(201, network_view())]);
    let out = admin.run(&[
        "network",
        "create",
        "lab",
        "--cidr",
        "10.9.8.0/24",
        "--mtu",
        "1400",
        "--cidr6",
        "off",
    ]);
    assert_eq!(
        assert_ok(&out),
        "created network lab: 10.9.8.0/24, mtu 1400, keepalive 25s\n"
    );
    let body = admin.expect("POST", "/api/networks").unwrap();
    assert_eq!(
        body,
        json!({ "name": "lab", "cidr": "10.9.8.0/24", "mtu": 1400, "keepalive": null, "dns-domain": null, "cidr6": "off" })
    );
}

#[test]
fn network_list_show_delete() {
    let mut other = network_view();
    other["name"] = json!("prod");
    other["keepalive"] = json!(0);
    other["future-field"] = json!("kept in --json");
    let listing = json!([network_view(), other]);

    let admin = Admin::start(vec![(200, listing.clone())]);
    let out = admin.run(&["network", "list"]);
    assert_eq!(
        assert_ok(&out),
        "\
NAME  CIDR         MTU   KEEPALIVE  MEMBERS  VERSION
lab   10.9.8.0/24  1400  25s        2        7
prod  10.9.8.0/24  1400  off        2        7
"
    );
    admin.expect("GET", "/api/networks");

    let admin = Admin::start(vec![(200, listing.clone())]);
    let text = assert_ok(&admin.run(&["network", "list", "--json"]));
    assert!(text.starts_with("[\n  {\n"), "not pretty: {text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), listing);

    let admin = Admin::start(vec![(200, network_view())]);
    let out = admin.run(&["network", "show", "lab"]);
    assert_eq!(
        assert_ok(&out),
        "network: lab\n  cidr: 10.9.8.0/24\n  mtu: 1400\n  keepalive: 25s\n  members: 2\n  netmap version: 7\n"
    );
    admin.expect("GET", "/api/networks/lab");

    let admin = Admin::start(vec![(204, Value::Null)]);
    assert_eq!(
        assert_ok(&admin.run(&["network", "delete", "lab"])),
        "deleted network lab\n"
    );
    assert_eq!(admin.expect("DELETE", "/api/networks/lab"), None);
}

#[test]
fn members_table_and_json() {
    let listing = json!([
        member_view("web-1", Some(now() - 3 * 86400 - 100)),
        member_with_key("database-primary", &key(2), None),
    ]);
    let admin = Admin::start(vec![(200, listing.clone())]);
    let out = admin.run(&["members", "lab"]);
    assert_eq!(
        assert_ok(&out),
        "\
NAME              FINGERPRINT  ADDRESS   AUTHORIZED  ONLINE  LAST SEEN  VERSION  ROUTES
web-1             m9OJrAFV     10.9.8.3  yes         yes     3d ago     0.1.0    -
database-primary  AAIAAAAA     10.9.8.3  yes         no      never      0.1.0    -
"
    );
    // One page shorter than asked for: the only request.
    admin.expect("GET", "/api/networks/lab/members?limit=500");

    let admin = Admin::start(vec![(200, listing.clone())]);
    let text = assert_ok(&admin.run(&["members", "lab", "--json"]));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), listing);
}

/// A member key from a number (distinct keys, in the order of `n`).
fn key(n: u16) -> String {
    let mut bytes = [0u8; 32];
    bytes[..2].copy_from_slice(&n.to_be_bytes());
    mesh_proto::Key(bytes).to_base64()
}

/// `n` members with keys `key(from)`, `key(from + 1)`, ….
fn members_page(from: u16, n: u16) -> Vec<Value> {
    (from..from + n)
        .map(|i| member_with_key(&format!("node-{i}"), &key(i), None))
        .collect()
}

fn encoded(key: &str) -> String {
    key.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[test]
fn members_are_fetched_a_page_at_a_time() {
    // 500, 500, then 3: three requests, each after the last key of the one before.
    let pages = [
        members_page(0, 500),
        members_page(500, 500),
        members_page(1000, 3),
    ];
    let all: Vec<Value> = pages.iter().flatten().cloned().collect();
    let answers = pages.iter().map(|p| (200, json!(p))).collect();
    let admin = Admin::start(answers);
    let text = assert_ok(&admin.run(&["members", "lab", "--json"]));
    // --json is one array of every member, as without paging.
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!(all));
    assert_eq!(
        admin.gets(),
        [
            "/api/networks/lab/members?limit=500".to_owned(),
            format!(
                "/api/networks/lab/members?limit=500&after={}",
                encoded(&key(499))
            ),
            format!(
                "/api/networks/lab/members?limit=500&after={}",
                encoded(&key(999))
            ),
        ]
    );

    // The table has every member too; --search goes along on every request, encoded.
    let admin = Admin::start(vec![(200, json!(members_page(0, 500))), (200, json!([]))]);
    let text = assert_ok(&admin.run(&["members", "lab", "--search", "node 1&x"]));
    assert_eq!(text.lines().count(), 501, "{text}");
    assert_eq!(
        admin.gets(),
        [
            "/api/networks/lab/members?limit=500&q=node%201%26x".to_owned(),
            format!(
                "/api/networks/lab/members?limit=500&after={}&q=node%201%26x",
                encoded(&key(499))
            ),
        ]
    );
}

/// A coordinator that does not page answers everything every time: a page with nothing
/// new ends the walk instead of repeating it forever.
#[test]
fn members_from_a_coordinator_that_does_not_page() {
    let everything = members_page(0, 500);
    let admin = Admin::start(vec![(200, json!(everything))]);
    let text = assert_ok(&admin.run(&["members", "lab", "--json"]));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!(everything)
    );
    assert_eq!(admin.gets().len(), 2);
}

#[test]
fn member_commands_encode_the_node() {
    let admin = Admin::start(vec![(200, member_view("web-1", None))]);
    let out = admin.run(&["authorize", "lab", KEY]);
    assert_eq!(
        assert_ok(&out),
        "authorized web-1 (m9OJrAFV) in lab, address 10.9.8.3\n"
    );
    assert_eq!(
        admin.expect(
            "POST",
            &format!("/api/networks/lab/members/{KEY_IN_PATH}/authorize")
        ),
        None
    );

    let admin = Admin::start(vec![(200, member_view("web-1", None))]);
    let out = admin.run(&["deauthorize", "lab", "m9OJrAFV"]);
    assert_eq!(assert_ok(&out), "deauthorized web-1 (m9OJrAFV) in lab\n");
    admin.expect("POST", "/api/networks/lab/members/m9OJrAFV/deauthorize");

    let admin = Admin::start(vec![(200, member_view("web-2", None))]);
    let out = admin.run(&["rename", "lab", "a/b+c", "web-2"]);
    assert_eq!(assert_ok(&out), "renamed m9OJrAFV to web-2 in lab\n");
    let body = admin
        .expect("PATCH", "/api/networks/lab/members/a%2Fb%2Bc")
        .unwrap();
    assert_eq!(body, json!({ "name": "web-2", "address": null }));

    let admin = Admin::start(vec![(200, member_view("web-1", None))]);
    let out = admin.run(&["set-address", "lab", "web-1", "10.9.8.3"]);
    assert_eq!(
        assert_ok(&out),
        "web-1 (m9OJrAFV) in lab now has address 10.9.8.3\n"
    );
    let body = admin
        .expect("PATCH", "/api/networks/lab/members/web-1")
        .unwrap();
    assert_eq!(body, json!({ "name": null, "address": "10.9.8.3" }));

    let admin = Admin::start(vec![(200, member_view("web-1", None))]);
    let text = assert_ok(&admin.run(&["authorize", "lab", "web-1", "--json"]));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        member_view("web-1", None)
    );

    let admin = Admin::start(vec![(204, Value::Null)]);
    let out = admin.run(&["delete-member", "lab", KEY]);
    assert_eq!(assert_ok(&out), format!("deleted member {KEY} from lab\n"));
    admin.expect(
        "DELETE",
        &format!("/api/networks/lab/members/{KEY_IN_PATH}"),
    );
}

#[test]
fn set_endpoint_patches_the_public_endpoint() {
    let mut with_endpoint = member_view("web-1", None);
    with_endpoint["public-endpoint"] = json!("203.0.113.5:51820");
    let admin = Admin::start(vec![(200, with_endpoint.clone())]);
    let out = admin.run(&["set-endpoint", "lab", "web-1", "203.0.113.5:51820"]);
    assert_eq!(
        assert_ok(&out),
        "web-1 (m9OJrAFV) in lab now has public endpoint 203.0.113.5:51820\n"
    );
    let body = admin
        .expect("PATCH", "/api/networks/lab/members/web-1")
        .unwrap();
    assert_eq!(
        body,
        json!({ "name": null, "address": null, "public-endpoint": "203.0.113.5:51820" })
    );

    let admin = Admin::start(vec![(200, member_view("web-1", None))]);
    let out = admin.run(&["set-endpoint", "lab", KEY, "--clear"]);
    assert_eq!(
        assert_ok(&out),
        "web-1 (m9OJrAFV) in lab has no public endpoint\n"
    );
    let body = admin
        .expect("PATCH", &format!("/api/networks/lab/members/{KEY_IN_PATH}"))
        .unwrap();
    assert_eq!(
        body,
        json!({ "name": null, "address": null, "public-endpoint": "0.0.0.0:0" })
    );

    let admin = Admin::start(vec![(200, with_endpoint.clone())]);
    let text = assert_ok(&admin.run(&[
        "set-endpoint",
        "lab",
        "web-1",
        "[2001:db8::5]:51820",
        "--json",
    ]));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), with_endpoint);
    let body = admin
        .expect("PATCH", "/api/networks/lab/members/web-1")
        .unwrap();
    assert_eq!(body["public-endpoint"], json!("[2001:db8::5]:51820"));

    let admin = Admin::start(vec![(
        400,
        json!({ "error": "public-endpoint 203.0.113.5:0: port 0 is not a port peers can send to" }),
    )]);
    assert_error(
        &admin.run(&["set-endpoint", "lab", "web-1", "203.0.113.5:0"]),
        "meshctl: 400 Bad Request: public-endpoint 203.0.113.5:0: port 0 is not a port peers can send to",
    );

    // Neither an address nor --clear, or both: a usage error before any request.
    let admin = Admin::start(vec![(500, Value::Null)]);
    for args in [
        &["set-endpoint", "lab", "web-1"][..],
        &[
            "set-endpoint",
            "lab",
            "web-1",
            "203.0.113.5:51820",
            "--clear",
        ],
        &["set-endpoint", "lab", "web-1", "not-an-address"],
    ] {
        let out = admin.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert!(admin.coordinator.requests().is_empty());
}

#[test]
fn token_create_prints_the_token_alone_on_the_last_line() {
    let expires = now() + 86400;
    let join_token = "wm1_eyJjb29yZGluYXRvcnMiOltdfQ";
    let created = json!({ "token": token_view(Some(expires)), "join-token": join_token });
    let admin = Admin::start(vec![(201, created.clone())]);
    let out = admin.run(&["token", "create", "lab", "--reusable", "--expires", "24h"]);
    let text = assert_ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&join_token), "{text}");
    assert_eq!(lines[0], "token id: tok_1a2b (reusable, network lab)");
    assert!(
        lines[1].starts_with("expires: ")
            && (lines[1].ends_with(" UTC (in 1d)") || lines[1].ends_with(" UTC (in 23h 59m)")),
        "{text}"
    );
    let body = admin.expect("POST", "/api/networks/lab/tokens").unwrap();
    assert_eq!(body, json!({ "reusable": true, "expires-in-secs": 86400 }));

    let created = json!({ "token": token_view(None), "join-token": join_token });
    let admin = Admin::start(vec![(201, created.clone())]);
    let text = assert_ok(&admin.run(&["token", "create", "lab"]));
    assert_eq!(
        text,
        format!("token id: tok_1a2b (reusable, network lab)\nexpires: never\n{join_token}\n")
    );
    let body = admin.expect("POST", "/api/networks/lab/tokens").unwrap();
    assert_eq!(body, json!({ "reusable": false, "expires-in-secs": null }));

    let admin = Admin::start(vec![(201, created.clone())]);
    let text = assert_ok(&admin.run(&["token", "create", "lab", "--json"]));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), created);
}

#[test]
fn token_list_and_revoke() {
    let mut revoked = token_view(Some(1_000_000_000));
    revoked["id"] = json!("tok_old");
    revoked["revoked"] = json!(true);
    let admin = Admin::start(vec![(
        200,
        json!([token_view(Some(4_107_542_399)), revoked]),
    )]);
    let text = assert_ok(&admin.run(&["token", "list", "lab"]));
    assert_eq!(
        text,
        "\
ID        KIND      STATE    USES  EXPIRES                  CREATED
tok_1a2b  reusable  active   0     2100-02-28 23:59:59 UTC  2026-11-21 21:15:16 UTC
tok_old   reusable  revoked  0     2001-09-09 01:46:40 UTC  2026-11-21 21:15:16 UTC
"
    );
    admin.expect("GET", "/api/networks/lab/tokens");

    let admin = Admin::start(vec![(204, Value::Null)]);
    let text = assert_ok(&admin.run(&["token", "revoke", "lab", "tok_1a2b"]));
    assert_eq!(text, "revoked token tok_1a2b of lab\n");
    admin.expect("DELETE", "/api/networks/lab/tokens/tok_1a2b");
}

#[test]
fn api_errors_are_one_line() {
    let admin = Admin::start(vec![(
        401,
        json!({ "error": "missing or wrong bearer token" }),
    )]);
    assert_error(
        &admin.run(&["network", "list"]),
        "meshctl: 401 Unauthorized: the coordinator rejected the admin token (check --token-file)",
    );

    let admin = Admin::start(vec![(404, json!({ "error": "no network \"nope\"" }))]);
    assert_error(
        &admin.run(&["members", "nope"]),
        "meshctl: 404 Not Found: no network \"nope\"",
    );

    let admin = Admin::start(vec![(
        409,
        json!({ "error": "10.9.8.3 is in use by web-1" }),
    )]);
    assert_error(
        &admin.run(&["set-address", "lab", "db", "10.9.8.3", "--json"]),
        "meshctl: 409 Conflict: 10.9.8.3 is in use by web-1",
    );

    let admin = Admin::start(vec![(200, json!({ "surprise": true }))]);
    let out = admin.run(&["members", "lab"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("meshctl: the coordinator answered with an unexpected body: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreachable_coordinator_gives_a_hint() {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), ADMIN_TOKEN);
    let url = format!("http://127.0.0.1:{port}");
    let out = meshctl(
        &[
            "admin",
            "--coordinator",
            &url,
            "--token-file",
            file.to_str().unwrap(),
            "network",
            "list",
        ],
        &[],
    );
    assert_error(
        &out,
        &format!("meshctl: cannot reach the coordinator at {url}: Connection refused (is the coordinator running? check --coordinator)"),
    );
}

#[test]
fn settings_from_environment_and_their_absence() {
    let admin = Admin::start(vec![(200, json!([]))]);
    let out = meshctl(
        &["admin", "network", "list"],
        &[
            ("MESHCTL_ADMIN_URL", &format!("{}/", admin.coordinator.url)),
            (
                "MESHCTL_ADMIN_TOKEN_FILE",
                admin.token_file.to_str().unwrap(),
            ),
        ],
    );
    assert_eq!(
        assert_ok(&out),
        "NAME  CIDR  MTU  KEEPALIVE  MEMBERS  VERSION\n"
    );
    admin.expect("GET", "/api/networks");

    let out = meshctl(
        &["admin", "--token-file", "/nonexistent", "network", "list"],
        &[],
    );
    assert_error(
        &out,
        "meshctl: admin needs the coordinator's admin URL: give --coordinator URL or set MESHCTL_ADMIN_URL",
    );
    let out = meshctl(
        &[
            "admin",
            "network",
            "list",
            "--coordinator",
            "http://127.0.0.1:1",
        ],
        &[],
    );
    assert_error(
        &out,
        "meshctl: admin needs the admin token: give --token-file FILE or set MESHCTL_ADMIN_TOKEN_FILE",
    );
    let out = meshctl(
        &[
            "admin",
            "--coordinator",
            "http://127.0.0.1:1",
            "--token-file",
            "/nonexistent/admin.token",
            "network",
            "list",
        ],
        &[],
    );
    assert_error(
        &out,
        "meshctl: reading the admin token from /nonexistent/admin.token: No such file or directory",
    );
}

#[test]
fn readable_token_file_is_a_warning() {
    let admin = Admin::start(vec![(200, json!([]))]);
    std::fs::set_permissions(&admin.token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = admin.run(&["network", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "meshctl: warning: {} is accessible to group or others (mode 0644); chmod 600 it\n",
            admin.token_file.display()
        )
    );
    admin.expect("GET", "/api/networks");
}

fn policy_view(document: Option<&str>, rules: usize, tests: usize) -> Value {
    json!({
        "document": document,
        "default": if document.is_some() { "deny" } else { "allow" },
        "rules": rules,
        "tests": tests
    })
}

/// Issue 13: `meshctl admin policy set|test|get|clear|why` and `tag`.
#[test]
fn policy_commands_send_the_document_and_say_what_happened() {
    let doc =
        "default = \"deny\"\n[[rule]]\nfrom = [\"tag:ops\"]\nto = [\"*\"]\nports = [\"tcp/22\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, doc).unwrap();
    let file = file.to_str().unwrap();

    let admin = Admin::start(vec![(200, policy_view(Some(doc), 1, 0))]);
    let text = assert_ok(&admin.run(&["policy", "set", "lab", file]));
    assert_eq!(
        text,
        "policy of lab set: default deny, 1 rule, 0 tests (all pass)\n"
    );
    let body = admin.expect("PUT", "/api/networks/lab/policy").unwrap();
    assert_eq!(body, json!({ "document": doc }));

    let admin = Admin::start(vec![(200, policy_view(Some(doc), 1, 0))]);
    let text = assert_ok(&admin.run(&["policy", "test", "lab", file]));
    assert_eq!(
        text,
        "ok: default deny, 1 rule, 0 tests (all pass); not set\n"
    );
    let body = admin
        .expect("POST", "/api/networks/lab/policy/check")
        .unwrap();
    assert_eq!(body, json!({ "document": doc }));

    // Refused: the coordinator's line and reason, exit 1.
    let admin = Admin::start(vec![(
        422,
        json!({ "error": "policy line 4: group:nope is not defined under [groups]" }),
    )]);
    assert_error(
        &admin.run(&["policy", "set", "lab", file]),
        "meshctl: 422 Unprocessable Entity: policy line 4: group:nope is not defined under [groups]",
    );

    // get prints the document as it is (to edit and set again); --json the view.
    let admin = Admin::start(vec![(200, policy_view(Some(doc), 1, 0))]);
    assert_eq!(assert_ok(&admin.run(&["policy", "get", "lab"])), doc);
    assert_eq!(admin.gets(), ["/api/networks/lab/policy"]);
    let admin = Admin::start(vec![(200, policy_view(None, 0, 0))]);
    assert_eq!(
        assert_ok(&admin.run(&["policy", "get", "lab"])),
        "no policy: everything allowed between members\n"
    );
    let admin = Admin::start(vec![(200, policy_view(None, 0, 0))]);
    let json: Value =
        serde_json::from_str(&assert_ok(&admin.run(&["policy", "get", "lab", "--json"]))).unwrap();
    assert_eq!(json, policy_view(None, 0, 0));

    let admin = Admin::start(vec![(200, policy_view(None, 0, 0))]);
    assert_eq!(
        assert_ok(&admin.run(&["policy", "clear", "lab"])),
        "policy of lab removed: everything allowed between members\n"
    );
    assert_eq!(admin.expect("DELETE", "/api/networks/lab/policy"), None);

    let admin = Admin::start(vec![(
        200,
        json!({ "action": "deny", "line": 7, "rule": "deny tag:ops -> * : tcp/10250" }),
    )]);
    assert_eq!(
        assert_ok(&admin.run(&["policy", "why", "lab", "laptop", "tag:control", "tcp/10250"])),
        "deny: rule at line 7: deny tag:ops -> * : tcp/10250\n"
    );
    assert_eq!(
        admin.gets(),
        ["/api/networks/lab/policy/why?from=laptop&to=tag%3Acontrol&port=tcp%2F10250"]
    );

    let mut tagged = member_view("web-1", None);
    tagged["tags"] = json!(["control", "worker"]);
    let admin = Admin::start(vec![(200, tagged)]);
    assert_eq!(
        assert_ok(&admin.run(&["tag", "lab", "web-1", "control", "tag:worker"])),
        "web-1 in lab: control worker\n"
    );
    let body = admin
        .expect("PUT", "/api/networks/lab/members/web-1/tags")
        .unwrap();
    assert_eq!(body, json!({ "tags": ["control", "tag:worker"] }));

    // A missing file: said before anything is sent.
    let admin = Admin::start(vec![]);
    let out = admin.run(&["policy", "set", "lab", "/nonexistent/policy.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/policy.toml"),
        "{}",
        stderr(&out)
    );
    assert!(admin.coordinator.requests().is_empty());

    // Token tags travel in the body.
    let created = json!({ "token": token_view(None), "join-token": "wm1_x" });
    let admin = Admin::start(vec![(201, created)]);
    assert_ok(&admin.run(&["token", "create", "lab", "--tag", "worker", "--tag", "ops"]));
    let body = admin.expect("POST", "/api/networks/lab/tokens").unwrap();
    assert_eq!(
        body,
        json!({ "reusable": false, "expires-in-secs": null, "tags": ["worker", "ops"] })
    );
}
