//! The local API between `meshctl` and `meshd`, over a root-only unix socket.
//!
//! Framing: the client writes one [`Request`] as a single line of JSON, `meshd` answers with
//! one [`Response`] as a single line of JSON and closes the connection.
//!
//! ```text
//! -> {"cmd":"status"}
//! <- {"ok":true,"status":{"interface":"mesh0",...}}
//! <- {"ok":false,"error":"unknown command"}
//! ```

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Key;

/// What `meshctl` asks of `meshd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// The interface, its peers and their counters.
    Status,
    /// Join a network through a coordinator. A node may hold several networks, each on
    /// its own interface (meshd runs one process per network); joining the network it
    /// already holds again updates that membership.
    Join(JoinRequest),
    /// Leave a network: forget its membership and cached netmap, drop its peers (and, for
    /// any network but the first, its interface).
    Leave {
        /// The network to leave (one of those joined).
        network: String,
    },
    /// Probe a peer (disco ping over its current path and every candidate) and report which
    /// paths answered; the first network that knows the peer answers.
    Ping {
        /// Peer name, overlay address, public key or key prefix.
        peer: String,
    },
    /// Report this node's NAT mapping behaviour and whether UDP works, using the
    /// coordinator's two reflectors.
    Netcheck,
}

/// `meshctl join`: either a token (which carries coordinator, pin and network) or a
/// coordinator address and pin (the member then waits as pending for an admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JoinRequest {
    /// The network's name.
    pub network: String,
    /// A `wm1_…` join token.
    pub token: Option<String>,
    /// Coordinator `host:port`, when joining without a token.
    pub coordinator: Option<String>,
    /// The coordinator certificate pin (`sha256:…`), when joining without a token.
    pub pin: Option<crate::control::CertPin>,
}

/// `meshd`'s answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // one per connection; boxing buys nothing
pub enum Response {
    /// The request succeeded.
    Status {
        /// Always true; lets clients tell success from error without knowing the variant.
        ok: bool,
        /// The node's status.
        status: Status,
    },
    /// A ping's result.
    Ping {
        /// Always true.
        ok: bool,
        /// What answered.
        ping: PingReport,
    },
    /// A netcheck's result.
    Netcheck {
        /// Always true.
        ok: bool,
        /// The report.
        netcheck: NetcheckReport,
    },
    /// A request without a result succeeded; `message` says what happened.
    Done {
        /// Always true.
        ok: bool,
        /// One line for the operator.
        message: String,
    },
    /// The request failed; `error` says why in one line.
    Error {
        /// Always false.
        ok: bool,
        /// A one-line reason.
        error: String,
    },
}

impl Response {
    /// An error response.
    pub fn error(error: impl Into<String>) -> Response {
        Response::Error {
            ok: false,
            error: error.into(),
        }
    }
}

/// The node as `meshctl status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Status {
    /// TUN interface name, e.g. `mesh0`.
    pub interface: String,
    /// The node's overlay address with its prefix length, if one is configured.
    pub address: Option<IpNet>,
    /// Its IPv6 overlay address with the IPv6 prefix length, in a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<IpNet>,
    /// The interface MTU.
    pub mtu: u16,
    /// The node's public key.
    pub public_key: Key,
    /// The UDP port WireGuard listens on.
    pub listen_port: u16,
    /// Every configured peer.
    pub peers: Vec<PeerStatus>,
    /// Packets dropped since start, by reason.
    pub dropped: DropCounters,
    /// The network membership, if the node joined one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlStatus>,
    /// The policy filter this node enforces, once it received one (absent: none, so
    /// everything passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterStatus>,
    /// The DNS server for the network's names (absent: off, or a meshd before names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsStatus>,
    /// The node's further networks, one status each (its own interface, key, peers and
    /// membership); the fields above are the first network's, as before several networks.
    /// Only in the answer of the meshd meshctl talks to; empty (absent) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkStatus>,
}

impl Status {
    /// The network this status is about, if it holds a membership.
    pub fn network(&self) -> Option<&str> {
        self.control.as_ref().map(|c| c.network.as_str())
    }
}

/// One further network of the node: its status, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NetworkStatus {
    /// The network's name.
    pub network: String,
    /// Its status (absent when `error` says why it is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<Status>>,
    /// Why its meshd did not answer (starting, restarting, stuck).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// meshd's DNS server as `meshctl status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DnsStatus {
    /// The addresses it answers on (IP:port), as bound now.
    #[serde(default)]
    pub listen: Vec<String>,
    /// The zone it answers for, `<network>.<domain>` (absent: no netmap yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// systemd-resolved: the interface configured with this server and `~zone` (absent:
    /// not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// The hosts file holding this network's block (absent: not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_file: Option<String>,
    /// The last integration error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The policy filter as `meshctl status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FilterStatus {
    /// [`crate::policy::NodeFilter::hash`] of the last filter that applied (absent: none
    /// applied yet, so everything passes except peers failed closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Why the last update could not be applied; the peers it concerned are failed closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the filter does with what no rule decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<crate::policy::Action>,
    /// Every network peer is failed closed (a full update could not be applied).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed_all: bool,
    /// The peers failed closed (denied both ways) until an update applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed: Vec<Key>,
    /// Packets from peers that passed the filter.
    #[serde(default)]
    pub allowed_inbound: u64,
    /// Packets to peers that passed the filter.
    #[serde(default)]
    pub allowed_outbound: u64,
    /// Flows recorded now (their return traffic passes).
    #[serde(default)]
    pub flows: u64,
    /// Packets dropped, by direction and by the rule or reason that dropped them: every
    /// rule and reason that dropped something, and always the default.
    #[serde(default)]
    pub drops: Vec<FilterDrop>,
}

/// Packets the filter dropped for one reason in one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FilterDrop {
    /// Which way they went.
    pub direction: FilterDirection,
    /// What dropped them.
    pub reason: FilterDropReason,
    /// The rule's index in the policy (for `rule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// The rule's line in the policy document (for `rule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// How many.
    pub packets: u64,
}

/// A packet's direction, seen from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilterDirection {
    /// From a peer (checked after decryption).
    Inbound,
    /// To a peer (checked before encryption).
    Outbound,
}

impl FilterDirection {
    /// `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterDirection::Inbound => "inbound",
            FilterDirection::Outbound => "outbound",
        }
    }
}

/// Why the filter dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilterDropReason {
    /// A deny rule ([`FilterDrop::rule`], [`FilterDrop::line`]).
    Rule,
    /// No rule decided and the default is deny.
    Default,
    /// The peer is failed closed (an update could not be applied).
    Closed,
    /// A fragment after the first, of a datagram whose first fragment did not pass (or
    /// came later), toward ports the peer's rules do not open entirely.
    Fragment,
    /// Headers that do not parse (truncated, a first fragment without its ports).
    Malformed,
    /// An allowed new flow found the flow table full.
    TableFull,
}

impl FilterDropReason {
    /// The kebab-case word (`rule`, `default`, `closed`, `fragment`, `malformed`,
    /// `table-full`).
    pub fn as_str(self) -> &'static str {
        match self {
            FilterDropReason::Rule => "rule",
            FilterDropReason::Default => "default",
            FilterDropReason::Closed => "closed",
            FilterDropReason::Fragment => "fragment",
            FilterDropReason::Malformed => "malformed",
            FilterDropReason::TableFull => "table-full",
        }
    }
}

/// The node's relation to its coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ControlStatus {
    /// The network joined.
    pub network: String,
    /// Coordinator addresses.
    pub coordinators: Vec<String>,
    /// Where the connection stands.
    pub state: ControlState,
    /// Details for the operator (e.g. why it was denied, the last connection error).
    pub message: Option<String>,
    /// Version of the netmap applied (live or from the cache).
    pub netmap_version: Option<u64>,
    /// The coordinator of the current connection (`host:port`), while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
}

/// Connection state to the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlState {
    /// Trying to connect (or waiting before the next attempt).
    Connecting,
    /// Connected and authenticated, but not authorised yet: an admin must authorise it.
    Pending,
    /// Connected, authorised, receiving netmap updates.
    Connected,
    /// Refused by the coordinator (bad token, deleted); `message` says why.
    Denied,
}

/// One peer as `meshctl status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PeerStatus {
    /// The peer's public key.
    pub public_key: Key,
    /// Where its packets go now (configured, or learned by roaming).
    pub endpoint: Option<SocketAddr>,
    /// Prefixes routed to this peer and accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds since the last completed handshake, if there was one.
    pub latest_handshake_secs: Option<u64>,
    /// Handshakes completed with this peer since meshd started (either side initiating).
    #[serde(default)]
    pub handshakes: u64,
    /// Bytes of decrypted payload received from this peer.
    pub rx_bytes: u64,
    /// Bytes of payload sent to this peer before encryption.
    pub tx_bytes: u64,
    /// Persistent keepalive interval in seconds, if enabled.
    pub persistent_keepalive: Option<u16>,
    /// The peer's name in the network (None for static peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How packets reach it now: `direct` or `relay` (None: no path known yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathType>,
    /// Round-trip time of the current path, from disco probes, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
}

/// How a peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathType {
    /// Straight to one of its addresses (LAN or public).
    Direct,
    /// Through the coordinator's relay.
    Relay,
}

/// Answer to [`Request::Ping`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PingReport {
    /// The peer's public key.
    pub public_key: Key,
    /// One line per probed path that answered.
    pub answers: Vec<PingAnswer>,
    /// The path packets use after the probes.
    pub path: Option<PathType>,
}

/// A path that answered a ping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PingAnswer {
    /// `direct` or `relay`.
    pub path: PathType,
    /// The address that answered (the relay's for relayed answers).
    pub addr: SocketAddr,
    /// Round-trip time in milliseconds.
    pub rtt_ms: f64,
}

/// Answer to [`Request::Netcheck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NetcheckReport {
    /// Whether any reflector answered over UDP.
    pub udp: bool,
    /// What each reflector saw as this node's WireGuard socket address.
    pub reflections: Vec<Reflection>,
    /// `endpoint-independent`, `endpoint-dependent` (symmetric NAT: needs the relay with
    /// other symmetric or port-restricted peers) or `unknown`.
    pub mapping: String,
    /// Whether the node's relay registration is acknowledged.
    pub relay: bool,
}

/// One reflector's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Reflection {
    /// The reflector asked.
    pub reflector: SocketAddr,
    /// The source address it saw, if it answered.
    pub observed: Option<SocketAddr>,
}

/// Packets `meshd` dropped, by reason. All counters only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DropCounters {
    /// Outbound packets whose destination is in no peer's allowed IPs.
    pub no_route: u64,
    /// Decrypted packets whose inner source is not in the sending peer's allowed IPs.
    pub bad_source: u64,
    /// Datagrams that are not WireGuard, fail authentication, or name no known session.
    pub invalid: u64,
    /// Handshake initiations from a public key that is not a configured peer.
    pub unknown_peer: u64,
    /// Outbound packets for a peer whose endpoint is not known yet.
    pub no_endpoint: u64,
    /// Decrypted packets from a network peer addressed to neither this node's overlay
    /// addresses nor a prefix it advertises: the node does not forward them (networks
    /// stay apart on a node that holds several and forwards IP). Absent from meshds
    /// before the check: 0.
    #[serde(default)]
    pub not_local: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"status"}"#).unwrap();
        assert_eq!(r, Request::Status);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"nope"}"#).is_err());
    }

    #[test]
    fn floats_round_trip_exactly() {
        // Found by fuzz/fuzz_targets/api_response.rs: serde_json's default float parser
        // read this RTT one unit in the last place away from what it printed back.
        let found = r#"{"ok":true,"ping":{"public-key":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=","answers":[{"path":"relay","addr":"192.0.2.1:7446","rtt-ms":205555555555555555555555555555555555.5}],"path":"relay"}}"#;
        let response: Response = serde_json::from_str(found).unwrap();
        let text = serde_json::to_string(&response).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), response);
        for rtt in [0.1, 0.3, 20.5, 123.456, 2.055_555_555_555_555_4e35] {
            let text = serde_json::to_string(&rtt).unwrap();
            assert_eq!(serde_json::from_str::<f64>(&text).unwrap(), rtt, "{text}");
        }
    }

    /// A status from a meshd without filters reads with `filter: None`; one with a filter
    /// round-trips, and leaves out what is empty.
    #[test]
    fn filter_status_is_optional_and_round_trips() {
        let old = r#"{"interface":"mesh0","address":null,"mtu":1280,"public-key":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=","listen-port":51820,"peers":[],"dropped":{"no-route":0,"bad-source":0,"invalid":0,"unknown-peer":0,"no-endpoint":0}}"#;
        let mut status: Status = serde_json::from_str(old).unwrap();
        assert_eq!(status.filter, None);
        // What changed since: the `not-local` drop counter, always written.
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            old.replace(r#""no-endpoint":0}"#, r#""no-endpoint":0,"not-local":0}"#)
        );
        status.filter = Some(FilterStatus {
            hash: Some("0123456789abcdef".into()),
            error: None,
            default: Some(crate::policy::Action::Deny),
            closed_all: false,
            closed: vec![],
            allowed_inbound: 1,
            allowed_outbound: 2,
            flows: 3,
            drops: vec![FilterDrop {
                direction: FilterDirection::Inbound,
                reason: FilterDropReason::Rule,
                rule: Some(4),
                line: Some(17),
                packets: 5,
            }],
        });
        let text = serde_json::to_string(&status).unwrap();
        assert!(
            text.ends_with(r#""filter":{"hash":"0123456789abcdef","default":"deny","allowed-inbound":1,"allowed-outbound":2,"flows":3,"drops":[{"direction":"inbound","reason":"rule","rule":4,"line":17,"packets":5}]}}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), status);
        for r in [
            FilterDropReason::Rule,
            FilterDropReason::Default,
            FilterDropReason::Closed,
            FilterDropReason::Fragment,
            FilterDropReason::Malformed,
            FilterDropReason::TableFull,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    /// Requests as meshctl before several networks wrote them still parse, and read the
    /// same; a status from a meshd before several networks parses with no further
    /// networks and no `not-local` drops, and one with networks round-trips.
    #[test]
    fn wire_forms_before_several_networks() {
        let join =
            r#"{"cmd":"join","network":"lab","token":"wm1_x","coordinator":null,"pin":null}"#;
        let r: Request = serde_json::from_str(join).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), join);
        let leave = r#"{"cmd":"leave","network":"lab"}"#;
        let r: Request = serde_json::from_str(leave).unwrap();
        assert_eq!(
            r,
            Request::Leave {
                network: "lab".into()
            }
        );
        assert_eq!(serde_json::to_string(&r).unwrap(), leave);
        let ping = r#"{"cmd":"ping","peer":"web"}"#;
        let r: Request = serde_json::from_str(ping).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), ping);

        let old = r#"{"ok":true,"status":{"interface":"mesh0","address":"10.9.8.1/24","mtu":1280,"public-key":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=","listen-port":51820,"peers":[],"dropped":{"no-route":1,"bad-source":2,"invalid":3,"unknown-peer":4,"no-endpoint":5}}}"#;
        let Response::Status { status, .. } = serde_json::from_str(old).unwrap() else {
            panic!("not a status");
        };
        assert!(status.networks.is_empty());
        assert_eq!(status.dropped.not_local, 0);
        assert_eq!(status.dropped.no_endpoint, 5);
        let mut status = status;
        status.dropped.not_local = 0;
        let mut child = status.clone();
        child.interface = "mesh1".into();
        status.networks = vec![
            NetworkStatus {
                network: "b".into(),
                status: Some(Box::new(child)),
                error: None,
            },
            NetworkStatus {
                network: "c".into(),
                status: None,
                error: Some("not answering".into()),
            },
        ];
        let response = Response::Status { ok: true, status };
        let text = serde_json::to_string(&response).unwrap();
        assert!(
            text.contains(r#""networks":[{"network":"b","status":{"interface":"mesh1""#),
            "{text}"
        );
        assert!(
            text.contains(r#"{"network":"c","error":"not answering"}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), response);
    }

    #[test]
    fn error_response_round_trips() {
        let text = serde_json::to_string(&Response::error("boom")).unwrap();
        assert_eq!(text, r#"{"ok":false,"error":"boom"}"#);
        let back: Response = serde_json::from_str(&text).unwrap();
        assert_eq!(back, Response::error("boom"));
    }
}
