//! `join` and `leave`: hand meshd its network (or take it away), then follow the control
//! status until the node is in, is pending, is refused, or time runs out.
//!
//! The flags are checked here before meshd is asked, so a typo in a token or pin is a
//! one-line error naming the flag rather than a round trip.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use mesh_proto::api::{ControlState, ControlStatus, JoinRequest, Request, Response, Status};
use mesh_proto::control::{CertPin, JoinToken};

use crate::cli::JoinArgs;
use crate::local::{self, one_line};
use crate::{duration, status};

/// How often the status is polled while waiting.
const POLL: Duration = Duration::from_millis(250);

/// `meshctl join`.
pub fn join(socket: &Path, args: &JoinArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let request = join_request(args).map_err(anyhow::Error::msg)?;
    let message = call(socket, &Request::Join(request)).map_err(anyhow::Error::msg)?;
    if !args.json {
        writeln!(out, "{message}")?;
        out.flush()?;
    }
    if args.no_wait {
        if args.json {
            let control = network_view(socket, &args.network)?.and_then(|s| s.control);
            print_json(out, control.as_ref())?;
        }
        return Ok(());
    }

    let deadline = Instant::now() + args.timeout;
    let mut watch = Watch::new(&args.network, args.wait_authorized);
    loop {
        let Some(status) = network_view(socket, &args.network)? else {
            // That network's meshd is (re)starting: ask again.
            if Instant::now() >= deadline {
                bail!(watch.timed_out(args.timeout));
            }
            std::thread::sleep(POLL);
            continue;
        };
        let step = watch.step(&status);
        if let (Some(line), false) = (&step.line, args.json) {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        match step.outcome {
            Outcome::Wait => {}
            Outcome::Done => {
                if args.json {
                    print_json(out, status.control.as_ref())?;
                }
                return Ok(());
            }
            Outcome::Fail(reason) => {
                if args.json {
                    print_json(out, status.control.as_ref())?;
                }
                bail!(reason);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            if args.json {
                print_json(out, status.control.as_ref())?;
            }
            bail!(watch.timed_out(args.timeout));
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

/// The status of `network` (a node holds several, one meshd each), or the node's first
/// one's when it does not hold it (the watch then says so); `None` while that network's
/// meshd does not answer.
fn network_view(socket: &Path, network: &str) -> anyhow::Result<Option<Status>> {
    let status = status::query(socket).map_err(anyhow::Error::msg)?;
    match status::of_network(&status, network) {
        Ok(Some(one)) => Ok(Some(one)),
        Ok(None) => Ok(Some(status)),
        Err(_) => Ok(None),
    }
}

/// `meshctl leave`.
pub fn leave(socket: &Path, network: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let message = call(
        socket,
        &Request::Leave {
            network: network.to_owned(),
        },
    )
    .map_err(anyhow::Error::msg)?;
    writeln!(out, "{message}")?;
    Ok(())
}

fn print_json(out: &mut impl Write, control: Option<&ControlStatus>) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &control)?;
    writeln!(out)?;
    Ok(())
}

/// One request that meshd answers with `Done`; returns its message.
fn call(socket: &Path, request: &Request) -> Result<String, String> {
    let line = local::exchange(socket, request)?;
    match serde_json::from_slice::<Response>(&line) {
        Ok(Response::Done { message, .. }) => Ok(one_line(&message)),
        Ok(Response::Error { error, .. }) => Err(format!("meshd refused: {}", one_line(&error))),
        Ok(Response::Status { .. } | Response::Ping { .. } | Response::Netcheck { .. }) => {
            Err(format!(
                "meshd at {} answered with a report instead of a result",
                socket.display()
            ))
        }
        Err(e) => Err(format!(
            "meshd at {}: unexpected answer: {e}",
            socket.display()
        )),
    }
}

/// Checks the flags and builds the request meshd gets.
pub fn join_request(args: &JoinArgs) -> Result<JoinRequest, String> {
    let network = args.network.clone();
    if network.trim().is_empty() {
        return Err("the network name is empty".to_owned());
    }
    match (&args.token, &args.coordinator, &args.pin) {
        (Some(text), None, None) => {
            let token: JoinToken = text.parse().map_err(|e| format!("--token: {e}"))?;
            if token.network != network {
                return Err(format!(
                    "the token is for network {:?}, not {network:?}",
                    token.network
                ));
            }
            Ok(JoinRequest {
                network,
                token: Some(text.trim().to_owned()),
                coordinator: None,
                pin: None,
            })
        }
        (Some(_), _, _) => Err(
            "--token cannot be used with --coordinator or --pin (the token names the coordinator and its pin)"
                .to_owned(),
        ),
        (None, Some(coordinator), Some(pin)) => {
            check_host_port(coordinator)?;
            let pin: CertPin = pin.parse().map_err(|e| format!("--pin: {e}"))?;
            Ok(JoinRequest {
                network,
                token: None,
                coordinator: Some(coordinator.trim().to_owned()),
                pin: Some(pin),
            })
        }
        (None, Some(_), None) => {
            Err("--coordinator needs --pin sha256:HEX (the coordinator certificate's pin)".to_owned())
        }
        (None, None, Some(_)) => Err("--pin needs --coordinator HOST:PORT".to_owned()),
        (None, None, None) => Err(
            "give --token TOKEN, or --coordinator HOST:PORT with --pin sha256:HEX".to_owned(),
        ),
    }
}

/// `host:port` or `[v6]:port`, port 1..=65535.
fn check_host_port(text: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "--coordinator: expected HOST:PORT (e.g. 203.0.113.1:7443 or [2001:db8::1]:7443), got {text:?}"
        )
    };
    let text = text.trim();
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty() && !host.contains(':') && !host.contains(char::is_whitespace)
    };
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// What to do after one status.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not there yet: poll again.
    Wait,
    /// Finished successfully (connected, or pending without `--wait-authorized`).
    Done,
    /// Finished with this one-line error.
    Fail(String),
}

/// What one status means: a progress line (when something changed) and what to do next.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    pub line: Option<String>,
    pub outcome: Outcome,
}

/// Follows the control status of one join; prints a line only when something changed.
#[derive(Debug)]
pub struct Watch {
    network: String,
    wait_authorized: bool,
    last: Option<(ControlState, Option<String>)>,
    fingerprint: String,
}

impl Watch {
    pub fn new(network: &str, wait_authorized: bool) -> Watch {
        Watch {
            network: network.to_owned(),
            wait_authorized,
            last: None,
            fingerprint: String::new(),
        }
    }

    pub fn step(&mut self, status: &Status) -> Step {
        self.fingerprint = status.public_key.fingerprint();
        let control = match &status.control {
            Some(c) if c.network == self.network => c,
            other => {
                let now = match other {
                    Some(c) => format!("is now in network {:?}", c.network),
                    None => "has no network".to_owned(),
                };
                return Step {
                    line: None,
                    outcome: Outcome::Fail(format!(
                        "meshd stopped joining {:?}: it {now} (did someone run `meshctl leave` or join another network?)",
                        self.network
                    )),
                };
            }
        };
        // A pending line does not show the message, so only the state counts there.
        let shown_message = match control.state {
            ControlState::Pending => None,
            _ => control.message.clone(),
        };
        let key = (control.state, shown_message);
        let changed = self.last.as_ref() != Some(&key);
        self.last = Some(key);
        let message = control.message.as_deref().map(one_line);
        let network = &self.network;
        let fp = &self.fingerprint;
        let (line, outcome) = match control.state {
            ControlState::Connecting => {
                let mut line = format!("connecting to {}…", control.coordinators.join(", "));
                if let Some(m) = &message {
                    line.push_str(&format!(" ({m})"));
                }
                (Some(line), Outcome::Wait)
            }
            ControlState::Pending => {
                // The coordinator's message says the same; `status` and `--json` show it.
                let line = format!(
                    "waiting for an admin to authorise this node (fingerprint {fp}): meshctl admin … authorize {network} {fp}"
                );
                let outcome = if self.wait_authorized {
                    Outcome::Wait
                } else {
                    Outcome::Done
                };
                (Some(line), outcome)
            }
            ControlState::Connected => {
                let peers = match status.peers.len() {
                    1 => "1 peer".to_owned(),
                    n => format!("{n} peers"),
                };
                let line = match status.address {
                    Some(address) => format!("joined {network} as {address} ({peers})"),
                    None => format!("joined {network} ({peers}; no address yet)"),
                };
                (Some(line), Outcome::Done)
            }
            ControlState::Denied => {
                let reason = message.unwrap_or_else(|| "no reason given".to_owned());
                (
                    None,
                    Outcome::Fail(format!(
                        "the coordinator refused this node in {network}: {reason}"
                    )),
                )
            }
        };
        Step {
            line: line.filter(|_| changed),
            outcome,
        }
    }

    /// The error once `--timeout` passed: what the last state and message were.
    pub fn timed_out(&self, timeout: Duration) -> String {
        let after = duration::short(timeout.as_secs());
        let last = match &self.last {
            None => "no status yet".to_owned(),
            Some((state, message)) => {
                let mut s = format!("last state: {}", status::state_name(*state));
                if let Some(m) = message {
                    s.push_str(&format!(" ({})", one_line(m)));
                }
                if *state == ControlState::Pending {
                    s.push_str(&format!(
                        "; an admin must authorise fingerprint {}",
                        self.fingerprint
                    ));
                }
                s
            }
        };
        format!(
            "timed out after {after} waiting to join {}; {last}",
            self.network
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mesh_proto::control::JoinSecret;
    use mesh_proto::Key;

    use super::*;

    const PIN: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn args(
        network: &str,
        token: Option<&str>,
        coordinator: Option<&str>,
        pin: Option<&str>,
    ) -> JoinArgs {
        JoinArgs {
            network: network.to_owned(),
            token: token.map(str::to_owned),
            coordinator: coordinator.map(str::to_owned),
            pin: pin.map(str::to_owned),
            no_wait: false,
            wait_authorized: false,
            timeout: Duration::from_secs(30),
            json: false,
        }
    }

    fn token(network: &str) -> String {
        JoinToken {
            coordinators: vec!["203.0.113.1:7443".to_owned()],
            pin: PIN.parse().unwrap(),
            network: network.to_owned(),
            secret: JoinSecret {
                id: "t1".to_owned(),
                secret: Key([5; 32]),
            },
        }
        .encode()
    }

    #[test]
    fn join_request_validation() {
        let t = token("lab");
        let ok = join_request(&args("lab", Some(&t), None, None)).unwrap();
        assert_eq!(ok.token.as_deref(), Some(t.as_str()));
        let ok = join_request(&args("lab", None, Some("[2001:db8::1]:7443"), Some(PIN))).unwrap();
        assert_eq!(ok.pin.unwrap().to_string(), PIN);

        for (a, want) in [
            (args("lab", Some("nope"), None, None), "--token: not a wiremesh join token (expected wm1_…)"),
            (args("prod", Some(&t), None, None), "the token is for network \"lab\", not \"prod\""),
            (args("lab", Some(&t), Some("h:1"), None), "--token cannot be used with --coordinator or --pin (the token names the coordinator and its pin)"),
            (args("lab", Some(&t), None, Some(PIN)), "--token cannot be used with --coordinator or --pin (the token names the coordinator and its pin)"),
            (args("lab", None, Some("h:1"), None), "--coordinator needs --pin sha256:HEX (the coordinator certificate's pin)"),
            (args("lab", None, None, Some(PIN)), "--pin needs --coordinator HOST:PORT"),
            (args("lab", None, None, None), "give --token TOKEN, or --coordinator HOST:PORT with --pin sha256:HEX"),
            (args("lab", None, Some("h:1"), Some("sha256:12")), "--pin: expected sha256:<64 hex digits>"),
            (args("", Some(&t), None, None), "the network name is empty"),
        ] {
            assert_eq!(join_request(&a).unwrap_err(), want);
        }
        for bad in [
            "h",
            "h:",
            ":7443",
            "h:0",
            "h:70000",
            "::1:7443",
            "[::1:7443",
            "[nope]:1",
            "a b:1",
        ] {
            let err = join_request(&args("lab", None, Some(bad), Some(PIN))).unwrap_err();
            assert!(
                err.starts_with("--coordinator: expected HOST:PORT"),
                "{bad}: {err}"
            );
        }
        for good in [
            "h:1",
            "coord.example.net:7443",
            "203.0.113.1:7443",
            "[::1]:7443",
        ] {
            assert!(
                join_request(&args("lab", None, Some(good), Some(PIN))).is_ok(),
                "{good}"
            );
        }
    }

    fn status(state: Option<(&str, ControlState, Option<&str>)>, peers: usize) -> Status {
        let peer = mesh_proto::api::PeerStatus {
            public_key: Key([1; 32]),
            endpoint: None,
            allowed_ips: vec![],
            latest_handshake_secs: None,
            handshakes: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive: None,
            name: None,
            path: None,
            rtt_ms: None,
        };
        Status {
            address6: None,
            interface: "mesh0".to_owned(),
            address: Some("10.9.8.3/24".parse().unwrap()),
            mtu: 1280,
            public_key: "m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs="
                .parse()
                .unwrap(),
            listen_port: 51820,
            peers: vec![peer; peers],
            dropped: Default::default(),
            control: state.map(|(network, state, message)| ControlStatus {
                network: network.to_owned(),
                coordinators: vec!["203.0.113.1:7443".to_owned()],
                state,
                message: message.map(str::to_owned),
                netmap_version: None,
                coordinator: None,
            }),
            filter: None,
            dns: None,
            networks: Vec::new(),
        }
    }

    fn line(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn watch_prints_changes_only() {
        let mut w = Watch::new("lab", true);
        let connecting = status(Some(("lab", ControlState::Connecting, None)), 0);
        let refused = status(
            Some(("lab", ControlState::Connecting, Some("connection refused"))),
            0,
        );
        let pending = status(Some(("lab", ControlState::Pending, None)), 0);
        let connected = status(Some(("lab", ControlState::Connected, None)), 3);
        assert_eq!(
            w.step(&connecting),
            Step {
                line: line("connecting to 203.0.113.1:7443…"),
                outcome: Outcome::Wait
            }
        );
        assert_eq!(
            w.step(&connecting),
            Step {
                line: None,
                outcome: Outcome::Wait
            }
        );
        assert_eq!(
            w.step(&refused),
            Step {
                line: line("connecting to 203.0.113.1:7443… (connection refused)"),
                outcome: Outcome::Wait
            }
        );
        let want = "waiting for an admin to authorise this node (fingerprint m9OJrAFV): meshctl admin … authorize lab m9OJrAFV";
        assert_eq!(
            w.step(&pending),
            Step {
                line: line(want),
                outcome: Outcome::Wait
            }
        );
        assert_eq!(
            w.step(&pending),
            Step {
                line: None,
                outcome: Outcome::Wait
            }
        );
        assert_eq!(
            w.timed_out(Duration::from_secs(90)),
            "timed out after 1m 30s waiting to join lab; last state: pending; an admin must authorise fingerprint m9OJrAFV"
        );
        assert_eq!(
            w.step(&connected),
            Step {
                line: line("joined lab as 10.9.8.3/24 (3 peers)"),
                outcome: Outcome::Done
            }
        );
    }

    #[test]
    fn watch_outcomes() {
        let pending = status(
            Some(("lab", ControlState::Pending, Some("ask an admin"))),
            0,
        );
        let step = Watch::new("lab", false).step(&pending);
        assert_eq!(step.outcome, Outcome::Done);
        assert!(step.line.unwrap().ends_with("authorize lab m9OJrAFV"));

        let mut one = status(Some(("lab", ControlState::Connected, None)), 1);
        one.address = None;
        assert_eq!(
            Watch::new("lab", false).step(&one).line,
            line("joined lab (1 peer; no address yet)")
        );

        let denied = status(
            Some(("lab", ControlState::Denied, Some("token expired"))),
            0,
        );
        assert_eq!(
            Watch::new("lab", false).step(&denied),
            Step {
                line: None,
                outcome: Outcome::Fail(
                    "the coordinator refused this node in lab: token expired".to_owned()
                )
            }
        );
        for (s, now) in [
            (status(None, 0), "has no network"),
            (
                status(Some(("prod", ControlState::Connected, None)), 0),
                "is now in network \"prod\"",
            ),
        ] {
            assert_eq!(
                Watch::new("lab", false).step(&s).outcome,
                Outcome::Fail(format!("meshd stopped joining \"lab\": it {now} (did someone run `meshctl leave` or join another network?)"))
            );
        }
        let mut w = Watch::new("lab", false);
        assert_eq!(
            w.timed_out(Duration::from_secs(30)),
            "timed out after 30s waiting to join lab; no status yet"
        );
        w.step(&status(
            Some(("lab", ControlState::Connecting, Some("timed out\nagain"))),
            0,
        ));
        assert_eq!(
            w.timed_out(Duration::from_secs(30)),
            "timed out after 30s waiting to join lab; last state: connecting (timed out; again)"
        );
    }
}
