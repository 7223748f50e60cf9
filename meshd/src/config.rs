//! meshd's configuration file (TOML) and its validation.
//!
//! ```toml
//! interface = "mesh0"                # optional, default mesh0
//! listen-port = 51820                # optional, default 51820 (0 = any)
//! address = "10.9.8.1/24"            # optional: this node's overlay address and prefix
//! mtu = 1280                         # optional, default 1280, 576..=9000 (1280.. with IPv6)
//! private-key-file = "/var/lib/meshd/node.key"   # optional; relative = next to this file
//! advertise-routes = ["10.244.3.0/24"]          # optional: prefixes behind this node,
//!                                    # offered to the coordinator (an admin approves them)
//! metrics-listen = "127.0.0.1:9586"  # optional: Prometheus metrics (off by default)
//! peer-idle-after = 60               # optional, seconds, 2..=86400: a network peer
//!                                    # without traffic this long stops costing packets
//! max-filter-entries = 1048576       # optional, 1..=1048576: a policy filter bigger than
//!                                    # this is refused (the node fails closed, says so)
//! dns = true                         # optional, default true: answer for the network's names
//! dns-listen = ["overlay:53"]        # optional: IP:port or overlay:PORT (the overlay address)
//! dns-resolved = "auto"              # optional, auto|on|off: per-link DNS via resolvectl
//! dns-hosts = "auto"                 # optional, auto|on|off: a block in the hosts file
//!                                    # (auto: when resolved is not used)
//! dns-hosts-file = "/etc/hosts"      # optional
//! resolvectl = "resolvectl"          # optional: the program run for dns-resolved
//!
//! [[peer]]
//! public-key = "…44 characters of base64…"
//! preshared-key = "…"                # optional
//! endpoint = "198.51.100.2:51820"    # optional: IP:port, [IPv6]:port or host:port
//! allowed-ips = ["10.9.8.2/32"]
//! persistent-keepalive = 25          # optional, seconds; 0 = off
//! ```
//!
//! Parsing has two steps. serde turns the text into [`RawConfig`] (strings and plain
//! integers, so that type errors stay rare and carry a line number), then [`validate`]
//! turns that into a [`Config`], naming the offending field in every error:
//!
//! ```text
//! /etc/meshd/meshd.toml:7: unknown field `adress`, expected one of `interface`, ...
//! /etc/meshd/meshd.toml: peer[1].public-key: expected 44 base64 characters, got 12
//! ```
//!
//! `peer[N]` counts `[[peer]]` tables from 0, in file order. Every error is one line, so
//! `meshd: error: …` stays one line in the journal.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use mesh_proto::Key;
use serde::Deserialize;

/// Default TUN interface name.
pub const DEFAULT_INTERFACE: &str = "mesh0";
/// Default UDP port.
pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// Default interface MTU. WireGuard over IPv4 adds 60 bytes (IP 20, UDP 8, WireGuard 32),
/// so 1280 fits underlay paths down to 1340 bytes: cloud overlays, PPPoE and tunnels
/// included. It is also IPv6's minimum MTU.
pub const DEFAULT_MTU: u16 = 1280;
/// Smallest accepted MTU: the IPv4 minimum reassembly size (RFC 791).
pub const MIN_MTU: u16 = 576;
/// Smallest MTU an interface with an IPv6 address may have (RFC 8200 section 5).
pub const MIN_MTU_IPV6: u16 = 1280;
/// Largest accepted MTU: jumbo frames.
pub const MAX_MTU: u16 = 9000;
/// Longest interface name Linux accepts (`IFNAMSIZ` - 1 for the NUL).
pub const MAX_INTERFACE_LEN: usize = 15;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// TUN interface name (1..=15 bytes).
    pub interface: String,
    /// UDP port for WireGuard (0 = any).
    pub listen_port: u16,
    /// The node's overlay address and prefix.
    pub address: Option<IpNet>,
    /// Interface MTU.
    pub mtu: u16,
    /// Explicit private key file; None = `<state-dir>/node.key`, generated on first start.
    pub private_key_file: Option<PathBuf>,
    /// Static peers.
    pub peers: Vec<PeerConfig>,
    /// Prefixes behind this node it offers its network (routes take effect once an
    /// admin approves them).
    pub advertise_routes: Vec<IpNet>,
    /// Where to serve Prometheus metrics (`crate::metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// A network peer without traffic this long goes idle (no handshakes, keepalives or
    /// path probes until a packet goes to or comes from it); see `device::peer`.
    pub peer_idle_after: std::time::Duration,
    /// Most entries a policy filter may have here (memory bound); a bigger one fails closed.
    pub max_filter_entries: usize,
    /// The DNS server for the network's names and its integrations (`crate::dns`).
    pub dns: DnsConfig,
}

/// Where and how meshd answers for its network's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Serve names at all (`dns`).
    pub enabled: bool,
    /// Where to listen (`dns-listen`).
    pub listen: Vec<DnsListen>,
    /// systemd-resolved integration (`dns-resolved`).
    pub resolved: Switch,
    /// The hosts-file block (`dns-hosts`).
    pub hosts: Switch,
    /// The hosts file (`dns-hosts-file`).
    pub hosts_file: PathBuf,
    /// The resolvectl program (`resolvectl`): a name looked up in PATH, or a path.
    pub resolvectl: PathBuf,
}

/// One `dns-listen` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsListen {
    /// A fixed address, bound at start.
    Fixed(SocketAddr),
    /// This port on the overlay address, bound when the node has one (again when it moves).
    Overlay(u16),
}

impl std::fmt::Display for DnsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsListen::Fixed(a) => write!(f, "{a}"),
            DnsListen::Overlay(port) => write!(f, "overlay:{port}"),
        }
    }
}

/// auto, on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Decided at run time (see the field).
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            listen: vec![DnsListen::Overlay(53)],
            resolved: Switch::Auto,
            hosts: Switch::Auto,
            hosts_file: PathBuf::from("/etc/hosts"),
            resolvectl: PathBuf::from("resolvectl"),
        }
    }
}

/// One static peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// The peer's public key.
    pub public_key: Key,
    /// Optional preshared key (WireGuard's PSK).
    pub preshared_key: Option<Key>,
    /// Where to send until the peer roams.
    pub endpoint: Option<SocketAddr>,
    /// Prefixes routed to and accepted from this peer.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives, if any.
    pub persistent_keepalive: Option<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interface: DEFAULT_INTERFACE.to_owned(),
            listen_port: DEFAULT_LISTEN_PORT,
            address: None,
            mtu: DEFAULT_MTU,
            private_key_file: None,
            peers: Vec::new(),
            advertise_routes: Vec::new(),
            metrics_listen: None,
            peer_idle_after: DEFAULT_PEER_IDLE_AFTER,
            max_filter_entries: MAX_FILTER_ENTRIES,
            dns: DnsConfig::default(),
        }
    }
}

/// Most entries a policy filter may have (over every peer and both directions): the
/// bound and default of `max-filter-entries`. A bigger filter is refused like one that does
/// not hash right (fail closed). A network of 1,000 members with 500 entries per peer stays
/// below it. Here, not in `device::filter`, so that this file stands alone (the fuzz target
/// compiles it in).
pub const MAX_FILTER_ENTRIES: usize = 1 << 20;

/// `peer-idle-after` when the file does not say.
pub const DEFAULT_PEER_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a configuration text is not acceptable. Both variants print as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, an unknown or missing field, or a value of the wrong type.
    #[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Syntax {
        /// 1-based line the TOML parser points at, if it points anywhere.
        line: Option<usize>,
        /// The parser's message, folded onto one line.
        message: String,
    },
    /// A well-formed value that is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's path, e.g. `peer[1].allowed-ips[0]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The error as meshd reports it: `path:LINE: message` for syntax errors,
    /// `path: field: reason` for invalid values.
    pub fn describe(&self, path: &Path) -> String {
        match self {
            ConfigError::Syntax {
                line: Some(line),
                message,
            } => {
                format!("{}:{line}: {message}", path.display())
            }
            ConfigError::Syntax {
                line: None,
                message,
            } => format!("{}: {message}", path.display()),
            ConfigError::Invalid { field, reason } => {
                format!("{}: {field}: {reason}", path.display())
            }
        }
    }
}

impl Config {
    /// Loads `path`; when `path` is the default location and missing, returns defaults.
    pub fn load(path: &Path, is_default: bool) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if is_default && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(e) => anyhow::bail!("{}: {}", path.display(), io_reason(&e)),
        };
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Config::from_toml(&text, base_dir).map_err(|e| anyhow::anyhow!(e.describe(path)))
    }

    /// Parses and validates a configuration text. A relative `private-key-file` is taken
    /// relative to `base_dir` (the directory of the configuration file).
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        validate(raw, base_dir)
    }
}

/// An IO error's reason without Rust's ` (os error N)` suffix, as C tools print it:
/// `No such file or directory`.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if e.raw_os_error().is_some() => text[..i].to_owned(),
        _ => text,
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|span| {
        let end = span.start.min(text.len());
        text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    });
    ConfigError::Syntax {
        line,
        message: one_line(e.message()),
    }
}

/// Folds a possibly multi-line message onto one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The file as written: strings and plain integers, checked by [`validate`].
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawConfig {
    /// TUN interface name: 1..=15 bytes, no `/`, `:`, `%`, whitespace or NUL.
    pub interface: Option<String>,
    /// UDP port WireGuard listens on; 0 lets the kernel pick one.
    pub listen_port: Option<i64>,
    /// This node's overlay address with its prefix length, e.g. `10.9.8.1/24`.
    pub address: Option<String>,
    /// Interface MTU, 576..=9000; at least 1280 when `address` is IPv6.
    pub mtu: Option<i64>,
    /// Private key file (what `wg genkey` writes, mode 0600). Default: `<state-dir>/node.key`.
    pub private_key_file: Option<String>,
    /// Prefixes behind this node (e.g. a pod CIDR) to offer the network: CIDRs with no
    /// host bits, outside `address`'s prefix.
    #[serde(default)]
    pub advertise_routes: Vec<String>,
    /// Address (IP:port) to serve Prometheus metrics on; unset: no metrics.
    pub metrics_listen: Option<String>,
    /// Seconds without traffic after which a network peer goes idle, 2..=86400.
    pub peer_idle_after: Option<i64>,
    /// Most entries a policy filter may have, 1..=1048576.
    pub max_filter_entries: Option<i64>,
    /// Answer DNS queries for the network's names (default true).
    pub dns: Option<bool>,
    /// Where the DNS server listens: `IP:port`, or `overlay:PORT` for the node's overlay
    /// address (default `["overlay:53"]`).
    pub dns_listen: Option<Vec<String>>,
    /// systemd-resolved integration: `auto` (when resolvectl works), `on` or `off`.
    pub dns_resolved: Option<String>,
    /// The hosts-file block: `auto` (when resolved is not used), `on` or `off`.
    pub dns_hosts: Option<String>,
    /// The hosts file the block goes in (default `/etc/hosts`).
    pub dns_hosts_file: Option<String>,
    /// The resolvectl program (default `resolvectl`, looked up in PATH).
    pub resolvectl: Option<String>,
    /// Static peers, one `[[peer]]` table each.
    #[serde(default)]
    pub peer: Vec<RawPeer>,
}

/// One `[[peer]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawPeer {
    /// The peer's public key, base64 as `wg pubkey` prints it. Required.
    pub public_key: Option<String>,
    /// Optional preshared key, base64 as `wg genpsk` prints it.
    pub preshared_key: Option<String>,
    /// Where to reach the peer: `IP:port`, `[IPv6]:port` or `host:port` (resolved once, at
    /// start).
    pub endpoint: Option<String>,
    /// Prefixes routed to and accepted from this peer; a bare address means a host route.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Seconds between keepalives, 1..=65535; 0 or absent means off.
    pub persistent_keepalive: Option<i64>,
}

/// Checks every field of `raw` and builds the [`Config`]; the first problem found wins.
pub fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigError> {
    let interface = match raw.interface {
        Some(name) => {
            check_interface(&name).map_err(|r| ConfigError::invalid("interface", r))?;
            name
        }
        None => DEFAULT_INTERFACE.to_owned(),
    };
    let listen_port = match raw.listen_port {
        Some(port) => u16::try_from(port).map_err(|_| {
            ConfigError::invalid("listen-port", format!("{port} is out of range 0..=65535"))
        })?,
        None => DEFAULT_LISTEN_PORT,
    };
    let address = match raw.address {
        Some(text) => Some(parse_address(&text).map_err(|r| ConfigError::invalid("address", r))?),
        None => None,
    };
    let mtu = match raw.mtu {
        Some(mtu) => match u16::try_from(mtu) {
            Ok(mtu) if (MIN_MTU..=MAX_MTU).contains(&mtu) => mtu,
            _ => {
                return Err(ConfigError::invalid(
                    "mtu",
                    format!("{mtu} is out of range {MIN_MTU}..={MAX_MTU}"),
                ))
            }
        },
        None => DEFAULT_MTU,
    };
    if let Some(IpNet::V6(net)) = address {
        if mtu < MIN_MTU_IPV6 {
            return Err(ConfigError::invalid(
                "mtu",
                format!("{mtu} is below {MIN_MTU_IPV6}, the minimum for an IPv6 address ({net})"),
            ));
        }
    }
    let metrics_listen = match raw.metrics_listen {
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                "metrics-listen",
                format!("{text:?} is not IP:port (e.g. \"127.0.0.1:9586\")"),
            )
        })?),
        None => None,
    };
    let peer_idle_after = match raw.peer_idle_after {
        Some(secs @ 2..=86_400) => std::time::Duration::from_secs(secs.unsigned_abs()),
        Some(secs) => {
            return Err(ConfigError::invalid(
                "peer-idle-after",
                format!("{secs} is out of range 2..=86400 (seconds)"),
            ))
        }
        None => DEFAULT_PEER_IDLE_AFTER,
    };
    let max = MAX_FILTER_ENTRIES;
    let max_filter_entries = match raw.max_filter_entries {
        None => max,
        Some(n) => match usize::try_from(n) {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(ConfigError::invalid(
                    "max-filter-entries",
                    format!("{n} is out of range 1..={max}"),
                ))
            }
        },
    };
    let dns = validate_dns(
        raw.dns,
        raw.dns_listen,
        raw.dns_resolved,
        raw.dns_hosts,
        raw.dns_hosts_file,
        raw.resolvectl,
        base_dir,
    )?;
    let private_key_file = match raw.private_key_file {
        Some(p) if p.is_empty() => {
            return Err(ConfigError::invalid("private-key-file", "empty path"))
        }
        Some(p) => Some(base_dir.join(p)),
        None => None,
    };

    let mut advertise_routes: Vec<IpNet> = Vec::with_capacity(raw.advertise_routes.len());
    for (k, text) in raw.advertise_routes.iter().enumerate() {
        let field = format!("advertise-routes[{k}]");
        let net = parse_route(text, address).map_err(|r| ConfigError::invalid(&field, r))?;
        if let Some(j) = advertise_routes.iter().position(|r| *r == net) {
            return Err(ConfigError::invalid(
                field,
                format!("{net} is already listed as advertise-routes[{j}]"),
            ));
        }
        advertise_routes.push(net);
    }

    let mut peers = Vec::with_capacity(raw.peer.len());
    let mut keys: HashMap<Key, usize> = HashMap::new();
    let mut claimed: HashMap<IpNet, usize> = HashMap::new();
    for (i, raw_peer) in raw.peer.into_iter().enumerate() {
        let field = |name: &str| format!("peer[{i}].{name}");

        let Some(key_text) = raw_peer.public_key else {
            return Err(ConfigError::invalid(
                field("public-key"),
                "missing; every peer needs one",
            ));
        };
        let public_key: Key = key_text.parse().map_err(|e: mesh_proto::KeyError| {
            ConfigError::invalid(field("public-key"), e.to_string())
        })?;
        if public_key.0 == [0; 32] {
            return Err(ConfigError::invalid(
                field("public-key"),
                "the all-zero key is not a public key",
            ));
        }
        if let Some(j) = keys.insert(public_key, i) {
            return Err(ConfigError::invalid(
                field("public-key"),
                format!("same key as peer[{j}]"),
            ));
        }

        let preshared_key = match raw_peer.preshared_key {
            Some(text) => Some(text.parse().map_err(|e: mesh_proto::KeyError| {
                ConfigError::invalid(field("preshared-key"), e.to_string())
            })?),
            None => None,
        };

        let endpoint = match raw_peer.endpoint {
            Some(text) => Some(
                parse_endpoint(&text).map_err(|r| ConfigError::invalid(field("endpoint"), r))?,
            ),
            None => None,
        };

        let mut allowed_ips = Vec::with_capacity(raw_peer.allowed_ips.len());
        for (k, text) in raw_peer.allowed_ips.iter().enumerate() {
            let field = format!("peer[{i}].allowed-ips[{k}]");
            let net = parse_allowed_ip(text).map_err(|r| ConfigError::invalid(&field, r))?;
            if let Some(owner) = claimed.insert(net, i) {
                let reason = if owner == i {
                    format!("{net} is listed twice")
                } else {
                    format!("{net} is already claimed by peer[{owner}]")
                };
                return Err(ConfigError::invalid(field, reason));
            }
            allowed_ips.push(net);
        }

        let persistent_keepalive = match raw_peer.persistent_keepalive {
            None | Some(0) => None,
            Some(secs) => match u16::try_from(secs) {
                Ok(secs) => Some(secs),
                Err(_) => {
                    return Err(ConfigError::invalid(
                        field("persistent-keepalive"),
                        format!("{secs} is out of range; use 1..=65535 seconds, or 0 for off"),
                    ))
                }
            },
        };

        peers.push(PeerConfig {
            public_key,
            preshared_key,
            endpoint,
            allowed_ips,
            persistent_keepalive,
        });
    }

    Ok(Config {
        interface,
        listen_port,
        address,
        mtu,
        private_key_file,
        peers,
        advertise_routes,
        metrics_listen,
        peer_idle_after,
        max_filter_entries,
        dns,
    })
}

/// The `dns*` keys.
fn validate_dns(
    enabled: Option<bool>,
    listen: Option<Vec<String>>,
    resolved: Option<String>,
    hosts: Option<String>,
    hosts_file: Option<String>,
    resolvectl: Option<String>,
    base_dir: &Path,
) -> Result<DnsConfig, ConfigError> {
    let defaults = DnsConfig::default();
    let switch = |field: &str, v: Option<String>| match v.as_deref() {
        None | Some("auto") => Ok(Switch::Auto),
        Some("on") => Ok(Switch::On),
        Some("off") => Ok(Switch::Off),
        Some(other) => Err(ConfigError::invalid(
            field,
            format!("{other:?} is not one of auto, on, off"),
        )),
    };
    let listen = match listen {
        None => defaults.listen,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (k, text) in list.iter().enumerate() {
                let field = format!("dns-listen[{k}]");
                let entry = if let Some(port) = text.strip_prefix("overlay:") {
                    DnsListen::Overlay(port.parse::<u16>().map_err(|_| {
                        ConfigError::invalid(&field, format!("{port:?} is not a port"))
                    })?)
                } else {
                    DnsListen::Fixed(text.parse::<SocketAddr>().map_err(|_| {
                        ConfigError::invalid(
                            &field,
                            format!(
                                "{text:?} is not IP:port or overlay:PORT (e.g. \"127.0.0.54:53\")"
                            ),
                        )
                    })?)
                };
                if out.contains(&entry) {
                    return Err(ConfigError::invalid(
                        field,
                        format!("{text:?} is listed twice"),
                    ));
                }
                out.push(entry);
            }
            out
        }
    };
    // A program name without '/' is looked up in PATH; a file name is next to the config.
    let path = |field: &str, v: Option<String>, default: PathBuf, program: bool| match v {
        Some(p) if p.is_empty() => Err(ConfigError::invalid(field, "empty path")),
        Some(p) if program && !p.contains('/') => Ok(PathBuf::from(p)),
        Some(p) => Ok(base_dir.join(p)),
        None => Ok(default),
    };
    Ok(DnsConfig {
        enabled: enabled.unwrap_or(true),
        listen,
        resolved: switch("dns-resolved", resolved)?,
        hosts: switch("dns-hosts", hosts)?,
        hosts_file: path("dns-hosts-file", hosts_file, defaults.hosts_file, false)?,
        resolvectl: path("resolvectl", resolvectl, defaults.resolvectl, true)?,
    })
}

/// An advertised route: a CIDR (prefix length required) with no host bits, not
/// overlapping this node's own overlay prefix.
fn parse_route(text: &str, address: Option<IpNet>) -> Result<IpNet, String> {
    let net: IpNet = match text.parse() {
        Ok(net) => net,
        Err(_) if text.parse::<IpAddr>().is_ok() => {
            return Err(format!(
                "{text:?} has no prefix length; write it as CIDR, e.g. \"{text}/24\""
            ));
        }
        Err(_) => return Err(format!("invalid CIDR {text:?}")),
    };
    if net.trunc() != net {
        return Err(format!(
            "{net} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    if let Some(own) = address {
        let own = own.trunc();
        if own.contains(&net) || net.contains(&own) {
            return Err(format!("{net} overlaps this node's overlay prefix {own}"));
        }
    }
    Ok(net)
}

/// Linux's `dev_valid_name`, plus `%` (which the kernel would expand to a number).
fn check_interface(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".to_owned());
    }
    if name.len() > MAX_INTERFACE_LEN {
        return Err(format!(
            "name {name:?} is {} bytes, the limit is {MAX_INTERFACE_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("name {name:?} is reserved"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| matches!(c, '/' | ':' | '%' | '\0') || c.is_whitespace())
    {
        return Err(format!(
            "name {name:?} contains {c:?}, which interface names cannot"
        ));
    }
    Ok(())
}

/// The node's own address: CIDR with the host part kept, e.g. `10.9.8.1/24`.
fn parse_address(text: &str) -> Result<IpNet, String> {
    let net: IpNet = match text.parse() {
        Ok(net) => net,
        Err(_) if text.parse::<IpAddr>().is_ok() => {
            return Err(format!(
                "{text:?} has no prefix length; write it as CIDR, e.g. \"{text}/24\""
            ));
        }
        Err(_) => return Err(format!("invalid CIDR {text:?}")),
    };
    let addr = net.addr();
    if addr.is_multicast() || addr.is_unspecified() {
        return Err(format!("{net} is not a unicast host address"));
    }
    // In /31, /32, /127 and /128 every address is a host address (RFC 3021).
    if net.prefix_len() + 1 < net.max_prefix_len() {
        if addr == net.network() {
            return Err(format!("{net} is the network address, not a host address"));
        }
        if net.addr().is_ipv4() && addr == net.broadcast() {
            return Err(format!(
                "{net} is the broadcast address, not a host address"
            ));
        }
    }
    Ok(net)
}

/// A peer's allowed IP: a canonical prefix (no host bits), or a bare address as a host route.
fn parse_allowed_ip(text: &str) -> Result<IpNet, String> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => return Err(format!("invalid CIDR {text:?}")),
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{net} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `IP:port`, `[IPv6]:port`, or `host:port` resolved now with the system resolver.
fn parse_endpoint(text: &str) -> Result<SocketAddr, String> {
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let Some((host, port)) = text.rsplit_once(':') else {
                return Err(format!(
                    "{text:?} has no port; expected IP:port, [IPv6]:port or host:port"
                ));
            };
            if host.is_empty() {
                return Err(format!(
                    "{text:?} has no host; expected IP:port, [IPv6]:port or host:port"
                ));
            }
            if host.starts_with('[') || host.contains(':') {
                return Err(format!(
                    "invalid endpoint {text:?}; IPv6 endpoints are written [address]:port"
                ));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| format!("invalid port {port:?} in {text:?}"))?;
            let mut addrs = (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {host:?}: {}", io_reason(&e)))?;
            addrs
                .next()
                .ok_or_else(|| format!("{host:?} resolved to no addresses"))?
        }
    };
    if addr.port() == 0 {
        return Err(format!("{text:?}: port 0 cannot be sent to"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const PATH: &str = "/etc/meshd/meshd.toml";

    fn key(byte: u8) -> String {
        Key([byte; 32]).to_base64()
    }

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("/etc/meshd")).map_err(|e| e.describe(Path::new(PATH)))
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn full_file() {
        let text = format!(
            r#"
interface = "wm1"
listen-port = 0
address = "10.9.8.1/24"
mtu = 1420
private-key-file = "keys/node.key"

[[peer]]
public-key = "{a}"
preshared-key = "{psk}"
endpoint = "198.51.100.2:51820"
allowed-ips = ["10.9.8.2/32", "192.168.7.0/24"]
persistent-keepalive = 25

[[peer]]
public-key = "{b}"
endpoint = "[2001:db8::2]:51821"
allowed-ips = ["10.9.8.3", "fd00::/64"]
persistent-keepalive = 0

[[peer]]
public-key = "{c}"
endpoint = "localhost:7"
"#,
            a = key(1),
            b = key(2),
            c = key(3),
            psk = key(9),
        );
        let config = parse(&text).unwrap();
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(config.interface, "wm1");
        assert_eq!(config.listen_port, 0);
        assert_eq!(config.address, Some(net("10.9.8.1/24")));
        assert_eq!(config.mtu, 1420);
        assert_eq!(
            config.private_key_file,
            Some(PathBuf::from("/etc/meshd/keys/node.key"))
        );
        assert_eq!(
            config.peers[0],
            PeerConfig {
                public_key: Key([1; 32]),
                preshared_key: Some(Key([9; 32])),
                endpoint: Some("198.51.100.2:51820".parse().unwrap()),
                allowed_ips: vec![net("10.9.8.2/32"), net("192.168.7.0/24")],
                persistent_keepalive: Some(25),
            }
        );
        assert_eq!(
            config.peers[1],
            PeerConfig {
                public_key: Key([2; 32]),
                preshared_key: None,
                endpoint: Some("[2001:db8::2]:51821".parse().unwrap()),
                allowed_ips: vec![net("10.9.8.3/32"), net("fd00::/64")],
                persistent_keepalive: None,
            }
        );
        let local = config.peers[2].endpoint.unwrap();
        assert!(local.ip().is_loopback(), "{local}");
        assert_eq!(local.port(), 7);
        assert!(config.peers[2].allowed_ips.is_empty());
    }

    #[test]
    fn accepted_edge_values() {
        let ok = |text: &str| {
            parse(text).unwrap_or_else(|e| panic!("{text:?} rejected: {e}"));
        };
        ok(r#"interface = "a""#);
        ok(r#"interface = "fifteen-bytes-x""#);
        ok("mtu = 576");
        ok("mtu = 9000");
        ok("listen-port = 65535");
        ok(r#"address = "10.9.8.0/31""#);
        ok(r#"address = "10.9.8.7/32""#);
        ok(r#"address = "fd00::1/64"
mtu = 1280"#);
        ok(r#"advertise-routes = []"#);
        assert_eq!(parse("").unwrap().dns, DnsConfig::default());
        let dns = parse(
            "dns-listen = [\"127.0.0.54:53\", \"overlay:5353\"]\ndns-resolved = \"off\"\ndns-hosts = \"on\"\ndns-hosts-file = \"/tmp/h\"\nresolvectl = \"/bin/fake\"",
        )
        .unwrap()
        .dns;
        assert_eq!(
            dns.listen,
            [
                DnsListen::Fixed("127.0.0.54:53".parse().unwrap()),
                DnsListen::Overlay(5353)
            ]
        );
        assert_eq!((dns.resolved, dns.hosts), (Switch::Off, Switch::On));
        assert_eq!(dns.hosts_file, PathBuf::from("/tmp/h"));
        assert_eq!(dns.resolvectl, PathBuf::from("/bin/fake"));
        for (text, want) in [
            (
                "dns-listen = [\"localhost:53\"]",
                "dns-listen[0]: \"localhost:53\" is not IP:port",
            ),
            (
                "dns-listen = [\"overlay:x\"]",
                "dns-listen[0]: \"x\" is not a port",
            ),
            (
                "dns-resolved = \"yes\"",
                "dns-resolved: \"yes\" is not one of auto, on, off",
            ),
            (
                "dns-hosts = \"\"",
                "dns-hosts: \"\" is not one of auto, on, off",
            ),
            ("dns-hosts-file = \"\"", "dns-hosts-file: empty path"),
            ("dns = 1", "expected a boolean"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert_eq!(parse("").unwrap().metrics_listen, None);
        assert_eq!(parse("").unwrap().max_filter_entries, MAX_FILTER_ENTRIES);
        assert_eq!(
            parse("max-filter-entries = 8").unwrap().max_filter_entries,
            8
        );
        for bad in [
            "max-filter-entries = 0",
            "max-filter-entries = 1048577",
            "max-filter-entries = -1",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("max-filter-entries") && e.contains("1..=1048576"),
                "{e}"
            );
        }
        assert_eq!(parse("").unwrap().peer_idle_after, DEFAULT_PEER_IDLE_AFTER);
        assert_eq!(
            parse("peer-idle-after = 5").unwrap().peer_idle_after,
            std::time::Duration::from_secs(5)
        );
        for bad in [
            "peer-idle-after = 1",
            "peer-idle-after = 0",
            "peer-idle-after = 86401",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("peer-idle-after") && e.contains("2..=86400"),
                "{e}"
            );
        }
        assert_eq!(
            parse(r#"metrics-listen = "127.0.0.1:9586""#)
                .unwrap()
                .metrics_listen,
            Some("127.0.0.1:9586".parse().unwrap())
        );
        assert_eq!(
            parse(r#"metrics-listen = "localhost""#)
                .unwrap_err()
                .to_string(),
            "/etc/meshd/meshd.toml: metrics-listen: \"localhost\" is not IP:port (e.g. \"127.0.0.1:9586\")"
        );
        ok(r#"address = "10.9.8.1/24"
advertise-routes = ["10.244.3.0/24", "fd00:244:3::/64", "10.9.9.0/24"]"#);
        ok(&format!(
            "[[peer]]\npublic-key = \"{}\"\npersistent-keepalive = 65535",
            key(1)
        ));
        ok(&format!(
            "[[peer]]\npublic-key = \"{}\"\nallowed-ips = [\"0.0.0.0/0\", \"::/0\"]",
            key(1)
        ));
    }

    #[test]
    fn errors_name_the_field() {
        let (a, b) = (key(1), key(2));
        let peer = |body: &str| format!("[[peer]]\npublic-key = \"{a}\"\n{body}\n");
        #[rustfmt::skip]
        let cases: Vec<(&str, String, String)> = vec![
            // TOML syntax and shape: path:LINE: message.
            ("syntax", "mtu = 1280\nmtu = = 3\n".into(),
                format!("{PATH}:2: ")),
            ("unknown field", "mtu = 1280\n\nadress = \"10.9.8.1/24\"\n".into(),
                format!("{PATH}:3: unknown field `adress`, expected one of `interface`, `listen-port`, `address`, `mtu`, `private-key-file`, `advertise-routes`, `metrics-listen`, `peer-idle-after`, `max-filter-entries`, `dns`, `dns-listen`, `dns-resolved`, `dns-hosts`, `dns-hosts-file`, `resolvectl`, `peer`")),
            ("unknown peer field", format!("[[peer]]\npublic-key = \"{a}\"\nallowed-ip = []\n"),
                format!("{PATH}:3: unknown field `allowed-ip`")),
            ("wrong type", "mtu = \"big\"\n".into(),
                format!("{PATH}:1: invalid type: string \"big\", expected i64")),
            // interface
            ("interface too long", r#"interface = "xxxxxxxxxxxxxxxxx""#.into(),
                format!("{PATH}: interface: name \"xxxxxxxxxxxxxxxxx\" is 17 bytes, the limit is 15")),
            ("interface empty", r#"interface = """#.into(),
                format!("{PATH}: interface: name is empty")),
            ("interface slash", r#"interface = "a/b""#.into(),
                format!("{PATH}: interface: name \"a/b\" contains '/', which interface names cannot")),
            ("interface space", r#"interface = "a b""#.into(),
                format!("{PATH}: interface: name \"a b\" contains ' ', which interface names cannot")),
            ("interface nul", r#"interface = "a\u0000b""#.into(),
                format!("{PATH}: interface: name \"a\\0b\" contains '\\0', which interface names cannot")),
            ("interface newline", r#"interface = "a\nb""#.into(),
                format!("{PATH}: interface: name \"a\\nb\" contains '\\n', which interface names cannot")),
            ("interface dot", r#"interface = "..""#.into(),
                format!("{PATH}: interface: name \"..\" is reserved")),
            // ports and mtu
            ("listen-port high", "listen-port = 65536".into(),
                format!("{PATH}: listen-port: 65536 is out of range 0..=65535")),
            ("listen-port negative", "listen-port = -1".into(),
                format!("{PATH}: listen-port: -1 is out of range 0..=65535")),
            ("mtu low", "mtu = 575".into(),
                format!("{PATH}: mtu: 575 is out of range 576..=9000")),
            ("mtu high", "mtu = 9001".into(),
                format!("{PATH}: mtu: 9001 is out of range 576..=9000")),
            ("mtu ipv6", "address = \"fd00::1/64\"\nmtu = 1279".into(),
                format!("{PATH}: mtu: 1279 is below 1280, the minimum for an IPv6 address (fd00::1/64)")),
            // address
            ("address bad octet", r#"address = "10.9.8.300/24""#.into(),
                format!("{PATH}: address: invalid CIDR \"10.9.8.300/24\"")),
            ("address bad prefix", r#"address = "10.9.8.1/33""#.into(),
                format!("{PATH}: address: invalid CIDR \"10.9.8.1/33\"")),
            ("address no prefix", r#"address = "10.9.8.1""#.into(),
                format!("{PATH}: address: \"10.9.8.1\" has no prefix length; write it as CIDR, e.g. \"10.9.8.1/24\"")),
            ("address network", r#"address = "10.9.8.0/24""#.into(),
                format!("{PATH}: address: 10.9.8.0/24 is the network address, not a host address")),
            ("address broadcast", r#"address = "10.9.8.255/24""#.into(),
                format!("{PATH}: address: 10.9.8.255/24 is the broadcast address, not a host address")),
            ("address multicast", r#"address = "224.0.0.1/24""#.into(),
                format!("{PATH}: address: 224.0.0.1/24 is not a unicast host address")),
            ("private-key-file empty", r#"private-key-file = """#.into(),
                format!("{PATH}: private-key-file: empty path")),
            // advertise-routes
            ("advertise-routes bad", r#"advertise-routes = ["10.244.3.0/24", "10.244.300.0/24"]"#.into(),
                format!("{PATH}: advertise-routes[1]: invalid CIDR \"10.244.300.0/24\"")),
            ("advertise-routes no prefix", r#"advertise-routes = ["10.244.3.0"]"#.into(),
                format!("{PATH}: advertise-routes[0]: \"10.244.3.0\" has no prefix length; write it as CIDR, e.g. \"10.244.3.0/24\"")),
            ("advertise-routes host bits", r#"advertise-routes = ["10.244.3.1/24"]"#.into(),
                format!("{PATH}: advertise-routes[0]: 10.244.3.1/24 has host bits set; did you mean 10.244.3.0/24?")),
            ("advertise-routes twice", r#"advertise-routes = ["10.244.3.0/24", "fd00:1::/64", "10.244.3.0/24"]"#.into(),
                format!("{PATH}: advertise-routes[2]: 10.244.3.0/24 is already listed as advertise-routes[0]")),
            ("advertise-routes overlay", "address = \"10.9.8.1/24\"\nadvertise-routes = [\"10.9.0.0/16\"]".into(),
                format!("{PATH}: advertise-routes[0]: 10.9.0.0/16 overlaps this node's overlay prefix 10.9.8.0/24")),
            ("advertise-routes type", "advertise-routes = \"10.244.3.0/24\"".into(),
                format!("{PATH}:1: invalid type: string \"10.244.3.0/24\", expected a sequence")),
            // peer keys
            ("public-key missing", "[[peer]]\n[[peer]]\npublic-key = \"abcdefghijkl\"".into(),
                format!("{PATH}: peer[0].public-key: missing; every peer needs one")),
            ("public-key length", format!("[[peer]]\npublic-key = \"{a}\"\n[[peer]]\npublic-key = \"abcdefghijkl\""),
                format!("{PATH}: peer[1].public-key: expected 44 base64 characters, got 12")),
            ("public-key empty", "[[peer]]\npublic-key = \"\"".into(),
                format!("{PATH}: peer[0].public-key: expected 44 base64 characters, got 0")),
            ("public-key base64", "[[peer]]\npublic-key = \"!Anz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=\"".into(),
                format!("{PATH}: peer[0].public-key: not valid base64")),
            ("public-key zero", format!("[[peer]]\npublic-key = \"{}\"", key(0)),
                format!("{PATH}: peer[0].public-key: the all-zero key is not a public key")),
            ("public-key duplicate", format!("[[peer]]\npublic-key = \"{a}\"\n[[peer]]\npublic-key = \"{b}\"\n[[peer]]\npublic-key = \"{a}\""),
                format!("{PATH}: peer[2].public-key: same key as peer[0]")),
            ("preshared-key", peer("preshared-key = \"short\""),
                format!("{PATH}: peer[0].preshared-key: expected 44 base64 characters, got 5")),
            // endpoint
            ("endpoint no port", peer("endpoint = \"198.51.100.2\""),
                format!("{PATH}: peer[0].endpoint: \"198.51.100.2\" has no port; expected IP:port, [IPv6]:port or host:port")),
            ("endpoint bad port", peer("endpoint = \"198.51.100.2:99999\""),
                format!("{PATH}: peer[0].endpoint: invalid port \"99999\" in \"198.51.100.2:99999\"")),
            ("endpoint port 0", peer("endpoint = \"198.51.100.2:0\""),
                format!("{PATH}: peer[0].endpoint: \"198.51.100.2:0\": port 0 cannot be sent to")),
            ("endpoint bare v6", peer("endpoint = \"2001:db8::2:51820\""),
                format!("{PATH}: peer[0].endpoint: invalid endpoint \"2001:db8::2:51820\"; IPv6 endpoints are written [address]:port")),
            ("endpoint no host", peer("endpoint = \":51820\""),
                format!("{PATH}: peer[0].endpoint: \":51820\" has no host; expected IP:port, [IPv6]:port or host:port")),
            ("endpoint unresolvable", peer("endpoint = \"no-such-host.invalid:51820\""),
                format!("{PATH}: peer[0].endpoint: cannot resolve \"no-such-host.invalid\": ")),
            // allowed-ips
            ("allowed-ips bad", peer("allowed-ips = [\"10.9.8.2/32\", \"10.9.8.300/32\"]"),
                format!("{PATH}: peer[0].allowed-ips[1]: invalid CIDR \"10.9.8.300/32\"")),
            ("allowed-ips host bits", peer("allowed-ips = [\"10.9.8.5/24\"]"),
                format!("{PATH}: peer[0].allowed-ips[0]: 10.9.8.5/24 has host bits set; did you mean 10.9.8.0/24?")),
            ("allowed-ips twice", peer("allowed-ips = [\"10.9.8.2/32\", \"10.9.8.2\"]"),
                format!("{PATH}: peer[0].allowed-ips[1]: 10.9.8.2/32 is listed twice")),
            ("allowed-ips claimed", format!("[[peer]]\npublic-key = \"{a}\"\nallowed-ips = [\"10.9.8.0/24\"]\n[[peer]]\npublic-key = \"{b}\"\nallowed-ips = [\"10.9.9.0/24\", \"10.9.8.0/24\"]"),
                format!("{PATH}: peer[1].allowed-ips[1]: 10.9.8.0/24 is already claimed by peer[0]")),
            // keepalive
            ("keepalive high", peer("persistent-keepalive = 65536"),
                format!("{PATH}: peer[0].persistent-keepalive: 65536 is out of range; use 1..=65535 seconds, or 0 for off")),
            ("keepalive negative", peer("persistent-keepalive = -5"),
                format!("{PATH}: peer[0].persistent-keepalive: -5 is out of range; use 1..=65535 seconds, or 0 for off")),
        ];
        for (name, text, want) in cases {
            let got = match parse(&text) {
                Ok(config) => panic!("{name}: accepted: {config:?}"),
                Err(e) => e,
            };
            assert!(
                !got.contains('\n'),
                "{name}: error is not one line: {got:?}"
            );
            assert!(got.starts_with(&want), "{name}:\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn syntax_errors_are_one_line() {
        for text in [
            "[[peer]\n",
            "a = [1,\n",
            "mtu = 1280\n\"unterminated\n",
            "x = 1\nx = 2\n",
            "= 3",
        ] {
            let err = parse(text).unwrap_err();
            assert!(!err.contains('\n'), "{text:?}: {err:?}");
            assert!(err.starts_with(&format!("{PATH}:")), "{text:?}: {err:?}");
        }
    }

    #[test]
    fn load_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("meshd.toml");
        // A missing default file means defaults; a missing explicit file is an error.
        assert_eq!(Config::load(&missing, true).unwrap(), Config::default());
        let err = format!("{:#}", Config::load(&missing, false).unwrap_err());
        assert_eq!(
            err,
            format!("{}: No such file or directory", missing.display())
        );
        // Unreadable: a directory where the file should be, even at the default location.
        let err = format!("{:#}", Config::load(dir.path(), true).unwrap_err());
        assert_eq!(err, format!("{}: Is a directory", dir.path().display()));

        std::fs::write(&missing, "mtu = 1400\nprivate-key-file = \"node.key\"\n").unwrap();
        let config = Config::load(&missing, false).unwrap();
        assert_eq!(config.mtu, 1400);
        assert_eq!(config.private_key_file, Some(dir.path().join("node.key")));

        std::fs::write(&missing, "mtu = 1400\nmtu = 1500\n").unwrap();
        let err = format!("{:#}", Config::load(&missing, false).unwrap_err());
        assert!(
            err.starts_with(&format!("{}:2: ", missing.display())),
            "{err}"
        );

        std::fs::write(&missing, b"mtu = \xff\n").unwrap();
        let err = format!("{:#}", Config::load(&missing, false).unwrap_err());
        assert!(
            err.starts_with(&format!("{}: ", missing.display())),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
