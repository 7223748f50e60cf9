//! `meshctl ping` and `meshctl netcheck`: meshd probes, we print.

use std::io::Write;
use std::path::Path;

use anyhow::bail;
use mesh_proto::api::{NetcheckReport, PathType, PingReport, Request, Response};

use crate::local::{self, one_line};

fn word(p: PathType) -> &'static str {
    match p {
        PathType::Direct => "direct",
        PathType::Relay => "relay",
    }
}

fn ask(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    let line = local::exchange(socket, request).map_err(anyhow::Error::msg)?;
    match serde_json::from_slice::<Response>(&line) {
        Ok(Response::Error { error, .. }) => bail!("meshd refused: {}", one_line(&error)),
        Ok(r) => Ok(r),
        Err(e) => bail!("meshd at {}: unexpected answer: {e}", socket.display()),
    }
}

/// `meshctl ping PEER [--json]`.
pub fn ping(socket: &Path, peer: &str, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let Response::Ping { ping, .. } = ask(
        socket,
        &Request::Ping {
            peer: peer.to_owned(),
        },
    )?
    else {
        bail!("meshd answered something other than a ping report");
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &ping)?;
        writeln!(out)?;
        return Ok(());
    }
    out.write_all(render_ping(&ping).as_bytes())?;
    if ping.answers.is_empty() {
        bail!("no path to {} answered", ping.public_key.fingerprint());
    }
    Ok(())
}

/// The text form of a ping report.
pub fn render_ping(ping: &PingReport) -> String {
    let mut s = String::new();
    for a in &ping.answers {
        s.push_str(&format!(
            "pong from {} via {} {} in {:.1} ms\n",
            ping.public_key.fingerprint(),
            word(a.path),
            a.addr,
            a.rtt_ms
        ));
    }
    match ping.path {
        Some(p) => s.push_str(&format!("traffic goes {}\n", word(p))),
        None => s.push_str("no path in use\n"),
    }
    s
}

/// `meshctl netcheck [--json]`.
pub fn netcheck(socket: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let Response::Netcheck { netcheck, .. } = ask(socket, &Request::Netcheck)? else {
        bail!("meshd answered something other than a netcheck report");
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &netcheck)?;
        writeln!(out)?;
    } else {
        out.write_all(render_netcheck(&netcheck).as_bytes())?;
    }
    Ok(())
}

/// The text form of a netcheck report.
pub fn render_netcheck(n: &NetcheckReport) -> String {
    let mut s = format!(
        "UDP: {}\n",
        if n.udp {
            "works"
        } else {
            "no reflector answered"
        }
    );
    for r in &n.reflections {
        match r.observed {
            Some(o) => s.push_str(&format!(
                "reflector {}: sees this node as {o}\n",
                r.reflector
            )),
            None => s.push_str(&format!("reflector {}: no answer\n", r.reflector)),
        }
    }
    let meaning = match n.mapping.as_str() {
        "endpoint-independent" => "endpoint-independent (peers can punch through)",
        "endpoint-dependent" => {
            "endpoint-dependent (symmetric NAT: peers behind symmetric or port-restricted NATs go through the relay)"
        }
        _ => "unknown",
    };
    s.push_str(&format!("NAT mapping: {meaning}\n"));
    s.push_str(&format!(
        "relay: {}\n",
        if n.relay {
            "registered"
        } else {
            "not registered"
        }
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::api::{PingAnswer, Reflection};
    use mesh_proto::Key;

    #[test]
    fn renders_ping() {
        let report = PingReport {
            public_key: Key([0; 32]),
            answers: vec![PingAnswer {
                path: PathType::Direct,
                addr: "198.51.100.2:51820".parse().unwrap(),
                rtt_ms: 0.42,
            }],
            path: Some(PathType::Direct),
        };
        assert_eq!(
            render_ping(&report),
            "pong from AAAAAAAA via direct 198.51.100.2:51820 in 0.4 ms\ntraffic goes direct\n"
        );
    }

    #[test]
    fn renders_netcheck() {
        let report = NetcheckReport {
            udp: true,
            reflections: vec![
                Reflection {
                    reflector: "192.0.2.10:7444".parse().unwrap(),
                    observed: Some("203.0.113.5:4000".parse().unwrap()),
                },
                Reflection {
                    reflector: "192.0.2.10:7445".parse().unwrap(),
                    observed: None,
                },
            ],
            mapping: "endpoint-dependent".into(),
            relay: false,
        };
        let text = render_netcheck(&report);
        assert!(text.contains("UDP: works"));
        assert!(text.contains("sees this node as 203.0.113.5:4000"));
        assert!(text.contains("7445: no answer"));
        assert!(text.contains("symmetric NAT"));
        assert!(text.contains("relay: not registered"));
    }
}
