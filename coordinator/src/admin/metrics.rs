//! `GET /metrics`: the coordinator's counters in the Prometheus text format (0.0.4),
//! rendered by hand.
//!
//! Served on the admin HTTP listener behind the same bearer token as the API (configure
//! Prometheus with `authorization: {credentials_file: DIR/admin.token}`).
//!
//! | metric | type | what |
//! |---|---|---|
//! | `wiremesh_members{network}` | gauge | members (authorised or pending) |
//! | `wiremesh_members_authorized{network}` | gauge | authorised members |
//! | `wiremesh_members_online{network}` | gauge | members holding a control connection |
//! | `wiremesh_joins_total` | counter | nodes admitted (each successful session start) |
//! | `wiremesh_netmap_pushes_total` | counter | netmaps and change sets sent to members |
//! | `wiremesh_join_failures_total` | counter | joins refused for their token or network |
//! | `wiremesh_join_rate_limited_total` | counter | joins refused: their source failed too often |
//! | `wiremesh_handshakes_refused_total{reason}` | counter | QUIC connection attempts refused |
//! | `wiremesh_reflector_requests_total` | counter | reflection requests received |
//! | `wiremesh_reflector_answered_total` | counter | reflection responses sent |
//! | `wiremesh_reflector_dropped_total{reason}` | counter | reflector drops |
//! | `wiremesh_relay_registrations_total` | counter | relay REGISTERs accepted |
//! | `wiremesh_relay_forwarded_packets_total` | counter | datagrams relayed |
//! | `wiremesh_relay_forwarded_bytes_total` | counter | payload bytes relayed |
//! | `wiremesh_relay_dropped_total{reason}` | counter | relay drops |

use std::fmt::Write as _;

use crate::control::state::Coordinator;

/// Content type of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct Page(String);

/// `value` as a label value: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Page {
    /// Starts a metric family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.0
    }
}

/// The whole page.
pub async fn render(coord: &Coordinator) -> String {
    let mut p = Page::default();
    let counts = coord.member_counts().await;
    for (name, help, pick) in [
        (
            "wiremesh_members",
            "Members of the network, authorised or pending.",
            0,
        ),
        (
            "wiremesh_members_authorized",
            "Authorised members of the network.",
            1,
        ),
        (
            "wiremesh_members_online",
            "Members holding a control connection now.",
            2,
        ),
    ] {
        p.family(name, "gauge", help);
        for (net, total, authorized, online) in &counts {
            let v = [total, authorized, online][pick];
            p.sample(name, &[("network", net)], v);
        }
    }
    p.family(
        "wiremesh_coordinator_info",
        "gauge",
        "The coordinator that answered (its id) and its store.",
    );
    let health = coord.store_health();
    p.sample(
        "wiremesh_coordinator_info",
        &[("id", coord.id()), ("store", &coord.store_name())],
        1,
    );
    p.single(
        "wiremesh_store_healthy",
        "gauge",
        "1 while the store takes writes (etcd: this coordinator reaches its quorum), else 0.",
        u64::from(health.ok),
    );
    p.single(
        "wiremesh_coordinators_live",
        "gauge",
        "Coordinators registered in the shared store (this one included), 0 for a store of one.",
        coord.coordinators().len() as u64,
    );
    let c = coord.control_stats();
    p.single(
        "wiremesh_store_races_total",
        "counter",
        "Writes redone because another coordinator changed the network first.",
        c.races.get(),
    );
    p.single(
        "wiremesh_joins_total",
        "counter",
        "Nodes admitted (successful control session starts).",
        c.joins.get(),
    );
    p.single(
        "wiremesh_netmap_pushes_total",
        "counter",
        "Netmaps and change sets sent to members.",
        c.netmap_pushes.get(),
    );
    p.single(
        "wiremesh_join_failures_total",
        "counter",
        "Joins refused for their token or network (bad secret, unknown token or network).",
        c.join_failures.get(),
    );
    p.single(
        "wiremesh_join_rate_limited_total",
        "counter",
        "Joins with a token refused unheard: their source failed too often.",
        c.join_rate_limited.get(),
    );
    p.family(
        "wiremesh_handshakes_refused_total",
        "counter",
        "QUIC connection attempts refused, by reason.",
    );
    for (reason, v) in [
        ("rate-limited", c.handshakes_rate_limited.get()),
        ("too-many-connections", c.handshakes_refused_full.get()),
    ] {
        p.sample(
            "wiremesh_handshakes_refused_total",
            &[("reason", reason)],
            v,
        );
    }

    let nat = coord.stats().read();
    let (f, r) = (nat.reflector, nat.relay);
    p.single(
        "wiremesh_reflector_requests_total",
        "counter",
        "Reflection requests received.",
        f.requests,
    );
    p.single(
        "wiremesh_reflector_answered_total",
        "counter",
        "Reflection responses sent.",
        f.answered,
    );
    p.family(
        "wiremesh_reflector_dropped_total",
        "counter",
        "Reflector datagrams dropped, by reason.",
    );
    for (reason, v) in [
        ("rate-limited", f.rate_limited),
        ("invalid", f.invalid),
        ("send-failed", f.send_failed),
    ] {
        p.sample("wiremesh_reflector_dropped_total", &[("reason", reason)], v);
    }
    p.single(
        "wiremesh_relay_registrations_total",
        "counter",
        "Relay REGISTERs accepted.",
        r.registered,
    );
    p.single(
        "wiremesh_relay_challenges_total",
        "counter",
        "Relay HELLOs answered with a cookie.",
        r.challenged,
    );
    p.single(
        "wiremesh_relay_forwarded_packets_total",
        "counter",
        "Datagrams the relay forwarded.",
        r.forwarded_packets,
    );
    p.single(
        "wiremesh_relay_forwarded_bytes_total",
        "counter",
        "Payload bytes the relay forwarded.",
        r.forwarded_bytes,
    );
    p.single(
        "wiremesh_relay_expired_total",
        "counter",
        "Relay registrations expired.",
        r.expired,
    );
    p.family(
        "wiremesh_relay_dropped_total",
        "counter",
        "Relay datagrams dropped, by reason.",
    );
    for (reason, v) in [
        ("malformed", r.dropped_malformed),
        ("stale-cookie", r.dropped_stale_cookie),
        ("bad-token", r.dropped_bad_token),
        ("not-member", r.dropped_not_member),
        ("unregistered-source", r.dropped_unregistered_source),
        ("sender-unauthorized", r.dropped_sender_unauthorized),
        ("other-network", r.dropped_other_network),
        (
            "unregistered-destination",
            r.dropped_unregistered_destination,
        ),
        ("send-failed", r.send_failed),
    ] {
        p.sample("wiremesh_relay_dropped_total", &[("reason", reason)], v);
    }
    p.finish()
}

#[cfg(test)]
mod tests;
