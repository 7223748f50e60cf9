//! meshd's configuration file (TOML) and its validation.
//!
//! STUB: the real parser is being written; the types below are the contract.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use mesh_proto::Key;

/// Default TUN interface name.
pub const DEFAULT_INTERFACE: &str = "mesh0";
/// Default UDP port.
pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// Default interface MTU: fits a 1280-byte IPv6 minimum path after WireGuard overhead? No:
/// 1280 is the safe overlay MTU across clouds whose underlay MTU may be as low as 1360.
pub const DEFAULT_MTU: u16 = 1280;

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
        }
    }
}

impl Config {
    /// Loads `path`; when `path` is the default location and missing, returns defaults.
    pub fn load(path: &Path, is_default: bool) -> anyhow::Result<Config> {
        if is_default && !path.exists() {
            return Ok(Config::default());
        }
        anyhow::bail!("{}: config parsing not implemented yet", path.display())
    }
}
