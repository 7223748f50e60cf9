//! Schema fuzzing (issue 12): schemathesis against the OpenAPI document of a real
//! coordinator on 127.0.0.1, with the admin token, two networks (IPv4 and IPv6), join
//! tokens, and real members: three nodes that joined with a token and hold their sessions
//! (two advertising routes, all approved, plus more approved for node-1) and two pending
//! ones (one advertising a route). The checks: no server error, every answer's status,
//! content type, headers and body as documented, no request the document allows refused
//! ("positive data acceptance") and none it forbids accepted (see [`CHECKS`]).
//!
//! How it reaches real things: the document's examples name network `lab`, member
//! `node-1`, route `10.244.3.0/24`, which this test creates; its links lead from the
//! network list to a network's members and from there to every member operation, and from
//! a created token to revoking it; and the run's configuration binds `{net}`, `{node}`,
//! `{prefix}`, `{id}` and addresses in bodies to real names, keys (both base64 spellings),
//! routes, token ids and free addresses much of the time (schemathesis "dictionaries").
//!
//! Destructive operations must not starve the run: deleting network `lab` or its members
//! early would leave every later operation a 404. So there are three runs, each in every
//! phase (examples, coverage, fuzzing, stateful): every operation but
//! `DELETE /api/networks/{net}` and `DELETE …/members/{node}`; then deleting members (with
//! the network and member lists, whose answers link to it); then deleting networks (with
//! the network list and network creation). The document's network list does not link to
//! deleting its first network; a created network links to its own deletion, so the
//! stateful phase deletes networks it made itself. After each run the audit log must show
//! that the run's operations succeeded on real things (authorising, updating, approving and
//! unapproving routes, revoking tokens; deleting a member; deleting a network).
//!
//! Bounded: a fixed number of examples per operation (`WM_SCHEMA_EXAMPLES`, default 50) and
//! a fixed seed (`WM_SCHEMA_SEED` to explore others; `WM_SCHEMA_CHECKS` replaces the list
//! of checks): about 30 to 40 s on two cores. Needs python3 with schemathesis
//! (`tests/schemathesis-requirements.txt`, installed by `.ci/run`); without it the test
//! fails saying how to install it. No root needed.

use std::time::Instant;

use serde_json::{json, Value};
use wiremesh_tests::schema::{
    join_token, run_logged, schemathesis, toml_list, LoopbackCoordinator, NodeSpec, Nodes,
};

/// The checks: every one schemathesis 4.32.5 has. Those the issue asks for are
/// `not_a_server_error`, `response_schema_conformance` and `positive_data_acceptance` (no
/// request the document allows refused); the others hold too: `negative_data_rejection`
/// (no request it forbids accepted: the document is exactly as strict as the handlers),
/// status codes, content types and headers as documented, 401 without the token
/// (`ignored_auth`), 405 with `Allow` for other methods, nothing reachable after deletion
/// (`use_after_free`) and what was created reachable (`ensure_resource_availability`).
///
/// One decision: a policy document (and `why`'s member descriptions) is a language of its
/// own, which no JSON Schema describes; the handlers refuse a document that does not parse
/// or fails its own tests with 422 (documented), so `positive_data_acceptance` takes 422
/// from those three operations and nothing else.
const CHECKS: &str = "all";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[test]
fn schemathesis_finds_no_server_error_no_schema_violation_and_no_valid_request_refused() {
    // First, so that a machine without it fails at once and says why.
    schemathesis().unwrap_or_else(|e| panic!("{e:#}"));
    let coord = LoopbackCoordinator::start().unwrap_or_else(|e| panic!("{e:#}"));
    let api = |method: &str, path: &str, body: Option<Value>| {
        coord
            .api(method, path, body.as_ref())
            .unwrap_or_else(|e| panic!("{e:#}"))
    };
    api(
        "POST",
        "/api/networks",
        Some(json!({ "name": "lab", "cidr": "10.9.8.0/24" })),
    );
    api(
        "POST",
        "/api/networks",
        Some(json!({ "name": "lab-6", "cidr": "fd00:9::/64", "mtu": 1420 })),
    );
    let created = api(
        "POST",
        "/api/networks/lab/tokens",
        Some(json!({ "reusable": true })),
    );
    let token = join_token(&created).unwrap();
    let mut token_ids = vec![created["token"]["id"].as_str().unwrap().to_owned()];
    for body in [json!({}), json!({ "expires-in-secs": 3600 })] {
        let t = api("POST", "/api/networks/lab/tokens", Some(body));
        token_ids.push(t["token"]["id"].as_str().unwrap().to_owned());
    }
    let node = |name: &str, routes: &[&str], with_token: bool| NodeSpec {
        name: name.to_owned(),
        routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
        with_token,
    };
    let specs = [
        node("node-1", &["10.244.3.0/24"], true),
        node("node-2", &["10.244.4.0/24", "fd00:44::/64"], true),
        node("node-3", &[], true),
        node("pending-1", &["10.244.5.0/24"], false),
        node("pending-2", &[], false),
    ];
    let start = Instant::now();
    let _nodes =
        Nodes::join(coord.listen, &token, "lab", &specs).unwrap_or_else(|e| panic!("{e:#}"));
    // Every advertised route of a joined member approved, and eight more for node-1 (an
    // approval need not wait for the advertisement): unapproving has plenty to do.
    let node1_routes: Vec<String> = std::iter::once("10.244.3.0/24".to_owned())
        .chain((0..8).map(|i| format!("10.245.{i}.0/24")))
        .collect();
    let approvals = node1_routes
        .iter()
        .map(|r| ("node-1", r.as_str()))
        .chain([("node-2", "10.244.4.0/24"), ("node-2", "fd00:44::/64")]);
    for (node, route) in approvals {
        let route = route.replace(':', "%3A").replace('/', "%2F");
        let path = format!("/api/networks/lab/members/{node}/routes/{route}/approve");
        api("POST", &path, None);
    }
    let members = api("GET", "/api/networks/lab/members", None);
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), specs.len(), "{members:?}");
    assert_eq!(
        members.iter().filter(|m| m["authorized"] == true).count(),
        3,
        "{members:?}"
    );
    assert!(members
        .iter()
        .filter(|m| m["authorized"] == true)
        .all(|m| m["online"] == true));
    eprintln!(
        "fixture: networks lab and lab-6, {} members, {} tokens ({} ms)",
        members.len(),
        token_ids.len(),
        start.elapsed().as_millis()
    );

    // Real values for the path parameters, much of the time.
    let mut refs: Vec<String> = Vec::new();
    for m in members {
        let key = m["public-key"].as_str().unwrap();
        refs.push(m["name"].as_str().unwrap().to_owned());
        refs.push(key.to_owned());
        refs.push(key.replace('+', "-").replace('/', "_").replace('=', ""));
    }
    let routes: Vec<String> = [
        "10.244.3.0/24",
        "10.244.4.0/24",
        "fd00:44::/64",
        "10.244.5.0/24",
    ]
    .map(str::to_owned)
    .into();
    // The route operations mostly on node-1 and its approved routes, so that unapproving
    // them (and approving them again) succeeds in every run; addresses in `PATCH` bodies
    // mostly free ones inside `lab`, so that readdressing does.
    let node1 = members.iter().find(|m| m["name"] == "node-1").unwrap();
    let key = node1["public-key"].as_str().unwrap();
    let node1_refs = [
        key.to_owned(),
        key.replace('+', "-").replace('/', "_").replace('=', ""),
    ];
    let addresses: Vec<String> = (100..120).map(|i| format!("10.9.8.{i}")).collect();
    let config = format!(
        "[dictionaries.networks]\nvalues = {}\n\n\
         [dictionaries.lab]\nvalues = [\"lab\"]\n\n\
         [dictionaries.members]\nvalues = {}\n\n\
         [dictionaries.node-1]\nvalues = {}\n\n\
         [dictionaries.node-1-routes]\nvalues = {}\n\n\
         [dictionaries.routes]\nvalues = {}\n\n\
         [dictionaries.tokens]\nvalues = {}\n\n\
         [dictionaries.addresses]\nvalues = {}\n\n\
         [parameters]\n\
         \"path.net\" = {{ dictionary = \"networks\", probability = 0.8 }}\n\
         \"path.node\" = {{ dictionary = \"members\", probability = 0.7 }}\n\
         \"path.prefix\" = {{ dictionary = \"routes\", probability = 0.5 }}\n\
         \"path.id\" = {{ dictionary = \"tokens\", probability = 0.7 }}\n\
         \"body.address\" = {{ dictionary = \"addresses\", probability = 0.7 }}\n\n\
         [[operations]]\n\
         include-operation-id = [\"set_policy\", \"check_policy\", \"why\"]\n\
         checks.positive_data_acceptance.expected-statuses = \
         [\"2xx\", \"401\", \"403\", \"404\", \"409\", \"422\", \"429\"]\n\n\
         [[operations]]\n\
         include-operation-id = [\"approve_route\", \"unapprove_route\"]\n\
         parameters = {{ \"path.net\" = {{ dictionary = \"lab\", probability = 0.9 }}, \
         \"path.node\" = {{ dictionary = \"node-1\", probability = 0.8 }}, \
         \"path.prefix\" = {{ dictionary = \"node-1-routes\", probability = 0.8 }} }}\n",
        toml_list(&["lab".to_owned(), "lab-6".to_owned()]),
        toml_list(&refs),
        toml_list(&node1_refs),
        toml_list(&node1_routes),
        toml_list(&routes),
        toml_list(&token_ids),
        toml_list(&addresses),
    );
    let config_path = coord.dir().join("schemathesis.toml");
    std::fs::write(&config_path, &config).unwrap();

    let examples = env_or("WM_SCHEMA_EXAMPLES", "50");
    let seed = env_or("WM_SCHEMA_SEED", "12");
    let checks = env_or("WM_SCHEMA_CHECKS", CHECKS);
    let auth = format!("Authorization: Bearer {}", coord.token);
    let run = |name: &str, filter: &[&str]| {
        let mut cmd = schemathesis().unwrap();
        cmd.arg("--config-file")
            .arg(&config_path)
            .arg("run")
            .arg(coord.openapi_url())
            .args(["--checks", &checks])
            .args(["--header", &auth])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--max-examples", &examples])
            .args(["--seed", &seed])
            // One worker: with two, Python 3.11's `ast.parse` (hypothesis describing its
            // filters) fails now and then ("AST constructor recursion depth mismatch").
            .args(["--workers", "1"])
            .args(["--request-timeout", "20"])
            .args(["--generation-database", "none"])
            .args(["--max-failures", "20"])
            .arg("--no-color")
            .args(filter);
        let start = Instant::now();
        let (out, log) = run_logged(cmd, coord.dir(), name).unwrap();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // What it found and how much it did: its closing sections.
        let tail = ["=== WARNINGS", "=== SUMMARY"]
            .iter()
            .find_map(|h| text.find(h))
            .map_or("", |at| &text[at..]);
        eprintln!(
            "schemathesis {name}: exit {:?} in {:.1} s\n{tail}",
            out.status.code(),
            start.elapsed().as_secs_f64(),
        );
        assert!(
            out.status.success(),
            "schemathesis ({name}) found problems (seed {seed}):\n{text}\n---- coordinator log ----\n{}",
            coord.log_tail(40)
        );
    };

    // 1. Everything but the deletions, which would take the fixture away.
    run(
        "all-but-deletions",
        &[
            "--exclude-operation-id",
            "delete_network",
            "--exclude-operation-id",
            "delete_member",
        ],
    );
    // It reached real members, routes and tokens: the audit log has what succeeded.
    let done = || -> Vec<String> {
        api("GET", "/api/audit?limit=10000", None)
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect()
    };
    let actions = done();
    let mut counts = std::collections::BTreeMap::new();
    for a in &actions {
        *counts.entry(a.as_str()).or_insert(0) += 1;
    }
    eprintln!("what succeeded (audit log): {counts:?}");
    for want in [
        "network.create",
        "member.authorize",
        "member.deauthorize",
        "route.approve",
        "route.unapprove",
        "token.create",
        "token.revoke",
        "policy.set",
        "member.tags",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "no successful {want} in the first run: {actions:?}"
        );
    }
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with("member.set-") || a == "member.rename"),
        "no successful member update in the first run"
    );
    // 2. Deleting members, then 3. networks, each with the operations whose answers link
    // to it (deleting network `lab` first would leave no member to delete).
    for (name, ops, want) in [
        (
            "member-deletions",
            ["delete_member", "list_members", "list_networks"],
            "member.delete",
        ),
        (
            "network-deletions",
            ["delete_network", "create_network", "list_networks"],
            "network.delete",
        ),
    ] {
        let only: Vec<&str> = ops
            .iter()
            .flat_map(|op| ["--include-operation-id", op])
            .collect();
        run(name, &only);
        assert!(
            done().iter().any(|a| a == want),
            "no successful {want} in the run {name}"
        );
    }
}
