//! `status`: ask meshd over its unix socket and print the answer like `wg show`.
//!
//! One exchange per run through [`crate::local`]: `{"cmd":"status"}` out, one line of JSON
//! back.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use mesh_proto::api::{
    ControlState, ControlStatus, FilterDropReason, FilterStatus, Request, Response, Status,
};

use crate::local::{self, one_line};

/// Queries meshd at `socket` and prints its status, as text or pretty JSON: every network
/// the node holds, or only `network`'s.
pub fn run(
    socket: &Path,
    json: bool,
    network: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let status = query(socket).map_err(anyhow::Error::msg)?;
    let status = match network {
        None => status,
        Some(name) => match of_network(&status, name) {
            Ok(Some(one)) => one,
            Ok(None) => anyhow::bail!("this node is not a member of {name:?} ({})", held(&status)),
            Err(e) => anyhow::bail!("network {name:?}: {}", one_line(&e)),
        },
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &status)?;
        writeln!(out)?;
    } else {
        out.write_all(render_all(&status).as_bytes())?;
    }
    Ok(())
}

/// The status of `network` in a node's status: the first network's own (without the
/// further networks), or a further network's; `Ok(None)` when the node does not hold it,
/// `Err` with the reason when its meshd did not answer.
pub fn of_network(status: &Status, network: &str) -> Result<Option<Status>, String> {
    if status.network() == Some(network) {
        let mut own = status.clone();
        own.networks.clear();
        return Ok(Some(own));
    }
    match status.networks.iter().find(|n| n.network == network) {
        Some(n) => match (&n.status, &n.error) {
            (Some(s), _) => Ok(Some((**s).clone())),
            (None, e) => Err(e.clone().unwrap_or_else(|| "no status".to_owned())),
        },
        None => Ok(None),
    }
}

/// "member of \"a\", \"b\"" or "member of no network".
fn held(status: &Status) -> String {
    let names: Vec<String> = status
        .network()
        .into_iter()
        .chain(status.networks.iter().map(|n| n.network.as_str()))
        .map(|n| format!("{n:?}"))
        .collect();
    if names.is_empty() {
        "member of no network".to_owned()
    } else {
        format!("member of {}", names.join(", "))
    }
}

/// Every network's section: with one network exactly [`render`]; with several, each
/// under a heading naming network, interface and address.
pub fn render_all(status: &Status) -> String {
    if status.networks.is_empty() {
        return render(status);
    }
    let mut s = String::new();
    let heading = |s: &mut String, network: &str, st: &Status| {
        let mut what = format!("interface {}", st.interface);
        if let Some(a) = st.address {
            what.push_str(&format!(", address {a}"));
        }
        if let Some(a) = st.address6 {
            what.push_str(&format!(", {a}"));
        }
        let _ = writeln!(s, "=== network {network} ({what}) ===");
    };
    heading(&mut s, status.network().unwrap_or("(none)"), status);
    s.push_str(&render(status));
    for n in &status.networks {
        s.push('\n');
        match &n.status {
            Some(st) => {
                heading(&mut s, &n.network, st);
                s.push_str(&render(st));
            }
            None => {
                let _ = writeln!(s, "=== network {} ===", n.network);
                let _ = writeln!(
                    s,
                    "  error: {}",
                    one_line(n.error.as_deref().unwrap_or("no status"))
                );
            }
        }
    }
    s
}

/// One status exchange; the error is a complete one-line message.
pub fn query(socket: &Path) -> Result<Status, String> {
    let line = local::exchange(socket, &Request::Status)?;
    parse_answer(&line).map_err(|e| format!("meshd at {}: {e}", socket.display()))
}

/// Decodes meshd's answer; an error answer becomes `Err` with meshd's reason.
fn parse_answer(line: &[u8]) -> Result<Status, String> {
    match serde_json::from_slice::<Response>(line) {
        Ok(Response::Status { status, .. }) => Ok(status),
        Ok(Response::Error { error, .. }) => Err(one_line(&error)),
        Ok(Response::Done { .. } | Response::Ping { .. } | Response::Netcheck { .. }) => {
            Err("meshd answered without a status".to_owned())
        }
        // `untagged` reports only "did not match any variant"; find out what is wrong.
        Err(_) => {
            let value: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| format!("answer is not JSON: {e}"))?;
            match value.get("status") {
                Some(status) => match serde_json::from_value::<Status>(status.clone()) {
                    Ok(status) => Ok(status),
                    Err(e) => Err(format!("unexpected status: {e}")),
                },
                None => Err("answer has neither `status` nor `error`".to_owned()),
            }
        }
    }
}

/// The status as `wg show` would lay it out, plus address, MTU and drop counters.
///
/// Like `wg show`, a peer's `endpoint` and `persistent keepalive` lines are left out when
/// there is nothing to show.
pub fn render(status: &Status) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "interface: {}", status.interface);
    let _ = writeln!(s, "  public key: {}", status.public_key);
    let _ = writeln!(s, "  listening port: {}", status.listen_port);
    if let Some(address) = status.address {
        let _ = writeln!(s, "  address: {address}");
    }
    if let Some(address6) = status.address6 {
        let _ = writeln!(s, "  ipv6 address: {address6}");
    }
    let _ = writeln!(s, "  mtu: {}", status.mtu);
    if let Some(control) = &status.control {
        render_control(&mut s, control, &status.public_key.fingerprint());
    }
    if let Some(dns) = &status.dns {
        render_dns(&mut s, dns);
    }
    if let Some(filter) = &status.filter {
        render_filter(&mut s, filter);
    }
    for peer in &status.peers {
        let _ = writeln!(s, "\npeer: {}", peer.public_key);
        if let Some(name) = &peer.name {
            let _ = writeln!(s, "  name: {name}");
        }
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(s, "  endpoint: {endpoint}");
        }
        if let Some(path) = peer.path {
            let word = match path {
                mesh_proto::api::PathType::Direct => "direct",
                mesh_proto::api::PathType::Relay => "relay",
            };
            match peer.rtt_ms {
                Some(rtt) => {
                    let _ = writeln!(s, "  path: {word} (rtt {rtt:.1} ms)");
                }
                None => {
                    let _ = writeln!(s, "  path: {word}");
                }
            }
        }
        let allowed = if peer.allowed_ips.is_empty() {
            "(none)".to_owned()
        } else {
            peer.allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "  allowed ips: {allowed}");
        let handshake = match peer.latest_handshake_secs {
            None => "never".to_owned(),
            Some(0) => "now".to_owned(),
            Some(secs) => format!("{} ago", duration(secs)),
        };
        let _ = writeln!(s, "  latest handshake: {handshake}");
        let _ = writeln!(
            s,
            "  transfer: {} received, {} sent",
            bytes(peer.rx_bytes),
            bytes(peer.tx_bytes)
        );
        if let Some(secs) = peer.persistent_keepalive {
            let _ = writeln!(s, "  persistent keepalive: every {}", duration(secs.into()));
        }
    }
    // Every counter meshd sends, named as serialized (`no-route` -> `no route`), sorted so
    // the output does not depend on serde_json's map order; new counters show up unasked.
    let _ = writeln!(s, "\ndropped packets:");
    if let Ok(serde_json::Value::Object(counters)) = serde_json::to_value(&status.dropped) {
        let mut counters: Vec<_> = counters.into_iter().collect();
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, count) in counters {
            let _ = writeln!(s, "  {}: {count}", name.replace('-', " "));
        }
    }
    s
}

/// The membership section: network, coordinators, state, message, netmap version.
fn render_control(s: &mut String, control: &ControlStatus, fingerprint: &str) {
    let _ = writeln!(s, "\nnetwork: {}", control.network);
    let label = if control.coordinators.len() == 1 {
        "coordinator"
    } else {
        "coordinators"
    };
    let _ = writeln!(s, "  {label}: {}", control.coordinators.join(", "));
    let state = state_name(control.state);
    if control.state == ControlState::Pending {
        let _ = writeln!(
            s,
            "  state: {state} (an admin must authorise fingerprint {fingerprint}: \
             meshctl admin … authorize {} {fingerprint})",
            control.network
        );
    } else {
        let _ = writeln!(s, "  state: {state}");
    }
    if let Some(message) = &control.message {
        let _ = writeln!(s, "  message: {}", one_line(message));
    }
    if let Some(version) = control.netmap_version {
        let _ = writeln!(s, "  netmap version: {version}");
    }
}

/// The names section: the zone, where meshd answers, which integration points the host
/// at it.
fn render_dns(s: &mut String, d: &mesh_proto::api::DnsStatus) {
    let _ = writeln!(
        s,
        "\nnames: {}",
        d.zone.as_deref().unwrap_or("(no netmap yet)")
    );
    if !d.listen.is_empty() {
        let _ = writeln!(s, "  dns server: {}", d.listen.join(", "));
    }
    if let Some(i) = &d.resolved {
        let _ = writeln!(s, "  systemd-resolved: on {i}");
    }
    if let Some(f) = &d.hosts_file {
        let _ = writeln!(s, "  hosts block: in {f}");
    }
    if let Some(e) = &d.error {
        let _ = writeln!(s, "  error: {}", one_line(e));
    }
}

/// The policy filter section: hash and default, why an update failed and which peers are
/// failed closed, what passed, and the drops by direction and rule (with its line) or
/// reason. Drops of zero are left out.
fn render_filter(s: &mut String, f: &FilterStatus) {
    let hash = f.hash.as_deref().unwrap_or("none (everything allowed)");
    match f.default {
        Some(d) => {
            let _ = writeln!(s, "\npolicy filter: {hash} (default {d})");
        }
        None => {
            let _ = writeln!(s, "\npolicy filter: {hash}");
        }
    }
    if let Some(error) = &f.error {
        let _ = writeln!(s, "  error: {}", one_line(error));
    }
    if f.closed_all {
        let _ = writeln!(s, "  failed closed: every peer");
    } else if !f.closed.is_empty() {
        let peers: Vec<String> = f.closed.iter().map(|k| k.fingerprint()).collect();
        let _ = writeln!(s, "  failed closed: {}", peers.join(", "));
    }
    let _ = writeln!(
        s,
        "  allowed: {} inbound, {} outbound; flows: {}",
        f.allowed_inbound, f.allowed_outbound, f.flows
    );
    let drops: Vec<_> = f.drops.iter().filter(|d| d.packets > 0).collect();
    if drops.is_empty() {
        let _ = writeln!(s, "  dropped: none");
        return;
    }
    let _ = writeln!(s, "  dropped:");
    for d in drops {
        let why = match (d.reason, d.rule, d.line) {
            (FilterDropReason::Rule, Some(rule), Some(line)) => {
                format!("rule {rule} (line {line})")
            }
            (FilterDropReason::Rule, Some(rule), None) => format!("rule {rule}"),
            (reason, _, _) => reason.as_str().replace('-', " "),
        };
        let _ = writeln!(s, "    {} {why}: {}", d.direction.as_str(), d.packets);
    }
}

/// A control state as meshd serializes it (`connecting`, `pending`, …).
pub fn state_name(state: ControlState) -> &'static str {
    match state {
        ControlState::Connecting => "connecting",
        ControlState::Pending => "pending",
        ControlState::Connected => "connected",
        ControlState::Denied => "denied",
    }
}

/// `wg show`'s durations: `1 day, 2 hours, 1 minute, 5 seconds`, zero parts left out.
fn duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (365 * 86400, "year"),
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut left = secs;
    let mut parts = Vec::new();
    for (size, name) in UNITS {
        let n = left / size;
        left %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if parts.is_empty() {
        "0 seconds".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `wg show`'s byte counts: `512 B`, then KiB to TiB with two decimals.
fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    // Precision loss above 2^53 bytes is far below the two decimals shown.
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.2} KiB", f / KIB)
    } else if f < KIB * KIB * KIB {
        format!("{:.2} MiB", f / (KIB * KIB))
    } else if f < KIB * KIB * KIB * KIB {
        format!("{:.2} GiB", f / (KIB * KIB * KIB))
    } else {
        format!("{:.2} TiB", f / (KIB * KIB * KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn durations() {
        for (secs, want) in [
            (1, "1 second"),
            (12, "12 seconds"),
            (60, "1 minute"),
            (62, "1 minute, 2 seconds"),
            (3600 + 120, "1 hour, 2 minutes"),
            (2 * 86400 + 1, "2 days, 1 second"),
            (366 * 86400, "1 year, 1 day"),
        ] {
            assert_eq!(duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn byte_counts() {
        for (n, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.00 KiB"),
            (1536, "1.50 KiB"),
            (1_289_748, "1.23 MiB"),
            (4_781_506, "4.56 MiB"),
            (5 << 30, "5.00 GiB"),
            (3 << 40, "3.00 TiB"),
        ] {
            assert_eq!(bytes(n), want, "{n}");
        }
    }

    #[test]
    fn control_section() {
        let control =
            |state, message: Option<&str>, coordinators: &[&str], version| ControlStatus {
                network: "lab".to_owned(),
                coordinators: coordinators.iter().map(|c| (*c).to_owned()).collect(),
                state,
                message: message.map(str::to_owned),
                netmap_version: version,
                coordinator: None,
            };
        let mut s = String::new();
        render_control(
            &mut s,
            &control(
                ControlState::Connected,
                None,
                &["203.0.113.1:7443"],
                Some(7),
            ),
            "m9OJrAFV",
        );
        assert_eq!(
            s,
            "\nnetwork: lab\n  coordinator: 203.0.113.1:7443\n  state: connected\n  netmap version: 7\n"
        );
        let mut s = String::new();
        render_control(
            &mut s,
            &control(
                ControlState::Pending,
                Some("wait\nfor it"),
                &["a:1", "b:2"],
                None,
            ),
            "m9OJrAFV",
        );
        assert_eq!(
            s,
            "\nnetwork: lab\n  coordinators: a:1, b:2\n  state: pending (an admin must authorise fingerprint m9OJrAFV: meshctl admin … authorize lab m9OJrAFV)\n  message: wait; for it\n"
        );
        for state in [
            ControlState::Connecting,
            ControlState::Pending,
            ControlState::Connected,
            ControlState::Denied,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state_name(state));
        }
    }

    /// A node in two networks: one section per network, each under a heading; one network
    /// alone picks out; a further network that did not answer is an error line.
    #[test]
    fn several_networks() {
        let one = r#"{"interface":"mesh0","address":"10.9.8.1/24","mtu":1280,"public-key":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=","listen-port":51820,"peers":[],"dropped":{"no-route":0,"bad-source":0,"invalid":0,"unknown-peer":0,"no-endpoint":0},"control":{"network":"a","coordinators":["203.0.113.1:7443"],"state":"connected","message":null,"netmap-version":3}}"#;
        let primary: Status = serde_json::from_str(one).unwrap();
        // One network: exactly as before.
        assert_eq!(render_all(&primary), render(&primary));
        let mut b = primary.clone();
        b.interface = "mesh1".into();
        b.address = Some("10.7.0.2/24".parse().unwrap());
        if let Some(c) = b.control.as_mut() {
            c.network = "b".into();
        }
        let mut node = primary.clone();
        node.networks = vec![
            mesh_proto::api::NetworkStatus {
                network: "b".into(),
                status: Some(Box::new(b.clone())),
                error: None,
            },
            mesh_proto::api::NetworkStatus {
                network: "c".into(),
                status: None,
                error: Some("no answer\nwithin 1.5s".into()),
            },
        ];
        let text = render_all(&node);
        assert!(
            text.starts_with(
                "=== network a (interface mesh0, address 10.9.8.1/24) ===\ninterface: mesh0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\n=== network b (interface mesh1, address 10.7.0.2/24) ===\ninterface: mesh1\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("\n=== network c ===\n  error: no answer; within 1.5s\n"),
            "{text}"
        );
        assert_eq!(of_network(&node, "a").unwrap(), Some(primary));
        assert_eq!(of_network(&node, "b").unwrap(), Some(b));
        assert!(of_network(&node, "c").is_err());
        assert_eq!(of_network(&node, "d").unwrap(), None);
        assert_eq!(held(&node), r#"member of "a", "b", "c""#);
    }

    #[test]
    fn filter_section() {
        use mesh_proto::api::{FilterDirection, FilterDrop};
        let drop = |direction, reason, rule: Option<u32>, packets| FilterDrop {
            direction,
            reason,
            rule,
            line: rule.map(|r| r + 10),
            packets,
        };
        let mut f = FilterStatus {
            hash: Some("0123456789abcdef".to_owned()),
            error: None,
            default: Some(mesh_proto::policy::Action::Deny),
            closed_all: false,
            closed: vec![],
            allowed_inbound: 4,
            allowed_outbound: 5,
            flows: 2,
            drops: vec![
                drop(FilterDirection::Inbound, FilterDropReason::Rule, Some(3), 7),
                drop(FilterDirection::Inbound, FilterDropReason::Default, None, 2),
                drop(
                    FilterDirection::Outbound,
                    FilterDropReason::Default,
                    None,
                    0,
                ),
                drop(
                    FilterDirection::Outbound,
                    FilterDropReason::TableFull,
                    None,
                    1,
                ),
            ],
        };
        let mut s = String::new();
        render_filter(&mut s, &f);
        assert_eq!(
            s,
            "\npolicy filter: 0123456789abcdef (default deny)\n  allowed: 4 inbound, 5 outbound; flows: 2\n  dropped:\n    inbound rule 3 (line 13): 7\n    inbound default: 2\n    outbound table full: 1\n"
        );
        f.error = Some("the filter after the update hashes to a,\nnot b".to_owned());
        f.closed = vec![mesh_proto::Key([1; 32])];
        f.drops.clear();
        let mut s = String::new();
        render_filter(&mut s, &f);
        let fp = mesh_proto::Key([1; 32]).fingerprint();
        assert_eq!(
            s,
            format!("\npolicy filter: 0123456789abcdef (default deny)\n  error: the filter after the update hashes to a,; not b\n  failed closed: {fp}\n  allowed: 4 inbound, 5 outbound; flows: 2\n  dropped: none\n")
        );
    }

    #[test]
    fn answers() {
        assert_eq!(
            parse_answer(br#"{"ok":false,"error":"busy\nnow"}"#),
            Err("busy; now".to_owned())
        );
        assert_eq!(
            parse_answer(b"hello"),
            Err("answer is not JSON: expected value at line 1 column 1".to_owned())
        );
        assert_eq!(
            parse_answer(br#"{"ok":true}"#),
            Err("answer has neither `status` nor `error`".to_owned())
        );
        let err = parse_answer(br#"{"ok":true,"status":{"interface":"mesh0"}}"#).unwrap_err();
        assert!(err.starts_with("unexpected status: missing field"), "{err}");
    }
}
