//! Prometheus metrics on an optional local address (`metrics-listen` in the config or
//! `--metrics ADDR`; off by default).
//!
//! A tiny HTTP/1.1 responder: it reads one request head (at most [`MAX_REQUEST`] bytes,
//! within [`READ_TIMEOUT`]), answers `GET /metrics` with the text format 0.0.4 rendered
//! from [`Device::status`](crate::device::Device::status), anything else with 404 (405 for
//! another method on `/metrics`), and closes the connection. No authentication: bind it to
//! loopback or a private address.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `wiremesh_peers` | gauge | configured peers |
//! | `wiremesh_peer_rx_bytes{peer,name}` | counter | payload bytes received from a peer |
//! | `wiremesh_peer_tx_bytes{peer,name}` | counter | payload bytes sent to a peer |
//! | `wiremesh_peer_latest_handshake_age_seconds{peer,name}` | gauge | since the last handshake (absent: none yet) |
//! | `wiremesh_peer_handshakes_total{peer,name}` | counter | handshakes completed |
//! | `wiremesh_peer_path{peer,name,path}` | gauge | 1 for the path in use (`direct`/`relay`), else 0 |
//! | `wiremesh_dropped_packets_total{reason}` | counter | packets dropped, by reason |
//! | `wiremesh_node_filter_info{hash,default,state}` | gauge | 1; the policy filter in force (`state`: `ok` or `failed-closed`) |
//! | `wiremesh_node_filter_drops_total{direction,rule}` | counter | packets the filter dropped |
//! | `wiremesh_node_filter_allowed_total{direction}` | counter | packets the filter let through |
//! | `wiremesh_node_filter_flows` | gauge | flows recorded (their answers pass) |
//!
//! `peer` is the key's fingerprint, `name` the peer's name in the network (empty for static
//! peers). The filter families appear once the node has a filter; `direction` is `inbound`
//! or `outbound`, `rule` the deny rule's index in the policy (`meshctl status` shows its
//! line) or the reason: `default`, `closed` (the peer is failed closed), `fragment`,
//! `malformed`, `table-full`.

use std::fmt::Write as _;
use std::time::Duration;

use mesh_proto::api::{FilterDropReason, FilterStatus, PathType, PeerStatus, Status};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The metrics page for `status`.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let peers: Vec<(String, String, &PeerStatus)> = status
        .peers
        .iter()
        .map(|p| {
            (
                escape(&p.public_key.fingerprint()),
                escape(p.name.as_deref().unwrap_or("")),
                p,
            )
        })
        .collect();
    family(&mut out, "wiremesh_peers", "gauge", "Configured peers.");
    let _ = writeln!(out, "wiremesh_peers {}", peers.len());
    // One sample per peer: (name, type, help, value; None leaves the peer out).
    type Value = fn(&PeerStatus) -> Option<u64>;
    let per_peer: [(&str, &str, &str, Value); 4] = [
        (
            "wiremesh_peer_rx_bytes",
            "counter",
            "Payload bytes received from the peer.",
            |p| Some(p.rx_bytes),
        ),
        (
            "wiremesh_peer_tx_bytes",
            "counter",
            "Payload bytes sent to the peer.",
            |p| Some(p.tx_bytes),
        ),
        (
            "wiremesh_peer_latest_handshake_age_seconds",
            "gauge",
            "Seconds since the last completed handshake with the peer (absent: none yet).",
            |p| p.latest_handshake_secs,
        ),
        (
            "wiremesh_peer_handshakes_total",
            "counter",
            "Handshakes completed with the peer since meshd started.",
            |p| Some(p.handshakes),
        ),
    ];
    for (metric, kind, help, value) in per_peer {
        family(&mut out, metric, kind, help);
        for (fp, name, p) in &peers {
            if let Some(v) = value(p) {
                let _ = writeln!(out, "{metric}{{peer=\"{fp}\",name=\"{name}\"}} {v}");
            }
        }
    }
    family(
        &mut out,
        "wiremesh_peer_path",
        "gauge",
        "1 for the path packets to the peer take now, 0 for the others.",
    );
    for (fp, name, p) in &peers {
        for (label, ty) in [("direct", PathType::Direct), ("relay", PathType::Relay)] {
            let _ = writeln!(
                out,
                "wiremesh_peer_path{{peer=\"{fp}\",name=\"{name}\",path=\"{label}\"}} {}",
                u8::from(p.path == Some(ty))
            );
        }
    }
    family(
        &mut out,
        "wiremesh_dropped_packets_total",
        "counter",
        "Packets dropped since start, by reason.",
    );
    let d = &status.dropped;
    for (reason, v) in [
        ("no-route", d.no_route),
        ("no-endpoint", d.no_endpoint),
        ("bad-source", d.bad_source),
        ("invalid", d.invalid),
        ("unknown-peer", d.unknown_peer),
        ("not-local", d.not_local),
    ] {
        let _ = writeln!(
            out,
            "wiremesh_dropped_packets_total{{reason=\"{reason}\"}} {v}"
        );
    }
    if let Some(f) = &status.filter {
        render_filter(&mut out, f);
    }
    out
}

/// The policy filter's families (see the module docs).
fn render_filter(out: &mut String, f: &FilterStatus) {
    family(
        out,
        "wiremesh_node_filter_info",
        "gauge",
        "The policy filter in force: its hash, its default, and whether the last update applied (ok) or peers are failed closed.",
    );
    let _ = writeln!(
        out,
        "wiremesh_node_filter_info{{hash=\"{}\",default=\"{}\",state=\"{}\"}} 1",
        escape(f.hash.as_deref().unwrap_or("")),
        f.default.map_or_else(String::new, |d| d.to_string()),
        if f.error.is_some() || f.closed_all || !f.closed.is_empty() {
            "failed-closed"
        } else {
            "ok"
        }
    );
    family(
        out,
        "wiremesh_node_filter_drops_total",
        "counter",
        "Packets the policy filter dropped, by direction and by deny rule (its index) or reason.",
    );
    for d in &f.drops {
        let rule = match (d.reason, d.rule) {
            (FilterDropReason::Rule, Some(rule)) => rule.to_string(),
            (reason, _) => reason.as_str().to_owned(),
        };
        let _ = writeln!(
            out,
            "wiremesh_node_filter_drops_total{{direction=\"{}\",rule=\"{rule}\"}} {}",
            d.direction.as_str(),
            d.packets
        );
    }
    family(
        out,
        "wiremesh_node_filter_allowed_total",
        "counter",
        "Packets the policy filter let through, by direction.",
    );
    for (direction, v) in [
        ("inbound", f.allowed_inbound),
        ("outbound", f.allowed_outbound),
    ] {
        let _ = writeln!(
            out,
            "wiremesh_node_filter_allowed_total{{direction=\"{direction}\"}} {v}"
        );
    }
    family(
        out,
        "wiremesh_node_filter_flows",
        "gauge",
        "Flows the policy filter records now (their answers pass).",
    );
    let _ = writeln!(out, "wiremesh_node_filter_flows {}", f.flows);
}

/// Answers metrics requests on `listener` until the task is dropped; `page` renders the
/// page for each `GET /metrics`.
pub async fn serve<F>(listener: TcpListener, page: F)
where
    F: Fn() -> String + Send + Sync + Clone + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let page = page.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, page).await {
                tracing::debug!("metrics: {e}");
            }
        });
    }
}

/// Reads the request head (bounded, with a deadline) and answers.
async fn answer<F: Fn() -> String>(mut stream: TcpStream, page: F) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let head: Result<std::io::Result<bool>, _> = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if len == buf.len() {
                return Ok(false);
            }
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                return Ok(false);
            }
            len += n;
        }
    })
    .await;
    let complete =
        head.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let line = buf[..len]
        .split(|b| *b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
        .unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = if !complete {
        ("400 Bad Request", "text/plain", "bad request\n".to_owned())
    } else if path != "/metrics" {
        ("404 Not Found", "text/plain", "not found\n".to_owned())
    } else if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_owned(),
        )
    } else {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", page())
    };
    let mut res = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        res.push_str(&body);
    }
    stream.write_all(res.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests;
