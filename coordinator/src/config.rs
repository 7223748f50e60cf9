//! Command line and configuration file.
//!
//! `serve` settings come from, lowest first: built-in defaults, the TOML file
//! (`--config`, keys in kebab-case, unknown keys refused), then flags. [`ServeConfig`] is
//! the validated result; every error is one line naming the flag or file.
//!
//! Ports: QUIC control on `--listen` (7443 by default), the two UDP reflectors on the next
//! two ports (7444, 7445) and the UDP relay on the one after (7446), all on the `--listen`
//! IP unless `--reflect`/`--relay` say otherwise. Members are told the reflector and relay
//! addresses with the host of the first `--advertise` (or `--advertise-reflect` /
//! `--advertise-relay` when a NAT or load balancer maps ports differently).
//!
//! The admin API (`--http`, loopback by default) is plain HTTP unless `--http-tls` (HTTPS
//! with the coordinator's own certificate, the one nodes pin) or `--http-cert`/`--http-key`
//! (an operator's PEM files) is given; a non-loopback `--http` needs one of them, or
//! `--http-insecure`. [`ServeConfig::resolve`] also loads the PEM files, so a bad one stops
//! the start before anything is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/wiremesh-coordinator";
/// Default QUIC control address: every address of both families (IPv4 too: the sockets
/// on the IPv6 wildcard are dual-stack, IPv4 only on a kernel without IPv6).
pub const DEFAULT_LISTEN: &str = "[::]:7443";
/// Default admin HTTP address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7480";

/// wiremesh coordinator: networks, members, overlay addresses and netmaps (control plane)
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of `ServeArgs` does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the coordinator (QUIC control endpoint and admin HTTP API).
    Serve(ServeArgs),
    /// Print the certificate pin nodes check (sha256:…).
    Pin(DirArgs),
    /// Print the admin API token.
    AdminToken(DirArgs),
}

/// Flags of `pin` and `admin-token`.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// Configuration file (TOML) to take `data-dir` from.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory [default: /var/lib/wiremesh-coordinator].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Flags of `serve`; unset flags fall back to the file, then to defaults.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML, same keys as the flags in kebab-case).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory: certificate, admin token, database [default: /var/lib/wiremesh-coordinator].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// QUIC control address nodes connect to [default: [::]:7443, both families].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP API address [default: 127.0.0.1:7480].
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<SocketAddr>,
    /// Allow --http on a non-loopback address without TLS.
    #[arg(long)]
    pub http_insecure: bool,
    /// Serve the admin API over HTTPS with the coordinator's own certificate (its pin is
    /// what `coordinator pin` prints).
    #[arg(long)]
    pub http_tls: bool,
    /// Serve the admin API over HTTPS with this PEM certificate chain instead (with
    /// --http-key).
    #[arg(long, value_name = "PATH")]
    pub http_cert: Option<PathBuf>,
    /// The PEM private key of --http-cert.
    #[arg(long, value_name = "PATH")]
    pub http_key: Option<PathBuf>,
    /// Address nodes dial, written into join tokens (repeatable) [default: --listen,
    /// unless that is a wildcard address].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Vec<String>,
    /// UDP reflector address, for endpoint discovery (repeatable; two let nodes classify
    /// their NAT) [default: the --listen IP on the two ports after --listen's].
    #[arg(long, value_name = "ADDR:PORT")]
    pub reflect: Vec<SocketAddr>,
    /// UDP relay address [default: the --listen IP on the third port after --listen's].
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "no_relay")]
    pub relay: Option<SocketAddr>,
    /// Run no relay (members without a direct path then have none).
    #[arg(long)]
    pub no_relay: bool,
    /// Reflector address members are told (repeatable) [default: the host of the first
    /// --advertise with each reflector's port].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_reflect: Vec<String>,
    /// Relay address members are told [default: the host of the first --advertise with
    /// the relay's port].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_relay: Option<String>,
    /// Where state lives: `sled` (the data directory, one coordinator) or
    /// `etcd:http://HOST:2379[,http://HOST2:2379…]` (several coordinators share it)
    /// [default: sled].
    #[arg(long, value_name = "SPEC")]
    pub store: Option<String>,
    /// This coordinator's id among several on one etcd (unique per coordinator)
    /// [default: the host name].
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Key prefix in etcd [default: /wiremesh/].
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// etcd user (with --etcd-password-file).
    #[arg(long, value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password (first line).
    #[arg(long, value_name = "PATH")]
    pub etcd_password_file: Option<PathBuf>,
    /// CA certificate (PEM) of the etcd members (https:// endpoints).
    #[arg(long, value_name = "PATH")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd (with --etcd-key).
    #[arg(long, value_name = "PATH")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM) of --etcd-cert.
    #[arg(long, value_name = "PATH")]
    pub etcd_key: Option<PathBuf>,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// QUIC control address.
    pub listen: Option<SocketAddr>,
    /// Admin HTTP API address.
    pub http: Option<SocketAddr>,
    /// Allow a non-loopback `http` without TLS.
    pub http_insecure: Option<bool>,
    /// Serve the admin API over HTTPS with the coordinator's own certificate.
    pub http_tls: Option<bool>,
    /// PEM certificate chain for the admin API (with `http-key`; implies TLS).
    pub http_cert: Option<PathBuf>,
    /// PEM private key of `http-cert`.
    pub http_key: Option<PathBuf>,
    /// Addresses written into join tokens.
    pub advertise: Option<Vec<String>>,
    /// UDP reflector addresses (an empty list runs none).
    pub reflect: Option<Vec<SocketAddr>>,
    /// UDP relay address.
    pub relay: Option<SocketAddr>,
    /// Run no relay.
    pub no_relay: Option<bool>,
    /// Reflector addresses members are told.
    pub advertise_reflect: Option<Vec<String>>,
    /// Relay address members are told.
    pub advertise_relay: Option<String>,
    /// `sled` or `etcd:URL[,URL…]`.
    pub store: Option<String>,
    /// This coordinator's id.
    pub id: Option<String>,
    /// Key prefix in etcd.
    pub etcd_prefix: Option<String>,
    /// etcd user.
    pub etcd_user: Option<String>,
    /// File with the etcd user's password.
    pub etcd_password_file: Option<PathBuf>,
    /// etcd CA certificate.
    pub etcd_ca: Option<PathBuf>,
    /// etcd client certificate.
    pub etcd_cert: Option<PathBuf>,
    /// etcd client key.
    pub etcd_key: Option<PathBuf>,
}

/// Validated `serve` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// QUIC control address.
    pub listen: SocketAddr,
    /// Admin HTTP API address.
    pub http: SocketAddr,
    /// Whether and with what the admin API is served over TLS.
    pub http_tls: HttpTls,
    /// Addresses written into join tokens.
    pub advertise: Vec<String>,
    /// UDP reflector addresses.
    pub reflect: Vec<SocketAddr>,
    /// UDP relay address (`None`: no relay).
    pub relay: Option<SocketAddr>,
    /// Reflector addresses members are told (empty: derived, see
    /// [`ServeConfig::advertised_services`]).
    pub advertise_reflect: Vec<String>,
    /// Relay address members are told (`None`: derived).
    pub advertise_relay: Option<String>,
    /// Where state lives.
    pub store: StoreConfig,
    /// This coordinator's id.
    pub id: String,
}

/// Where the coordinator keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// sled in the data directory (one coordinator).
    Sled,
    /// An etcd cluster several coordinators share.
    Etcd(Box<crate::store::EtcdOptions>),
}

/// How the admin API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTls {
    /// Plain HTTP.
    Off,
    /// HTTPS with the coordinator's own certificate (`DATA_DIR/cert.der`, the QUIC one).
    Identity,
    /// HTTPS with an operator's PEM certificate chain and key.
    Pem {
        /// The certificate chain, end-entity first.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    // The cause is in the message, not chained as `source`: `{e:#}` would print it twice.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line of the error, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The admin API would be reachable from the network without TLS.
    #[error("--http {0} is not a loopback address; pass --http-tls (or http-tls = true, or --http-cert and --http-key) to serve the admin API over HTTPS, or --http-insecure (or http-insecure = true) to serve it without TLS anyway")]
    InsecureHttp(SocketAddr),
    /// Only one of the admin API's certificate and key.
    #[error(
        "{given} needs {missing} too (the admin API's PEM certificate and its key go together)"
    )]
    HttpCertPair {
        /// The one given (`--http-cert` or `http-key` …).
        given: &'static str,
        /// The one missing.
        missing: &'static str,
    },
    /// The admin API's certificate or key is unusable.
    #[error(transparent)]
    HttpTls(#[from] crate::admin::https::TlsError),
    /// No address to put into join tokens.
    #[error("--listen {0} is a wildcard address nodes cannot dial; pass --advertise HOST:PORT (the address nodes reach this coordinator at)")]
    NoAdvertise(SocketAddr),
    /// An advertised address is not `host:port`.
    #[error(
        "--advertise {0:?}: expected HOST:PORT (e.g. coord.example.net:7443 or [2001:db8::1]:7443)"
    )]
    BadAdvertise(String),
    /// An advertised reflector or relay address is not `host:port`.
    #[error("--advertise-{flag} {value:?}: expected HOST:PORT (e.g. coord.example.net:7444)")]
    BadAdvertiseService {
        /// `reflect` or `relay`.
        flag: &'static str,
        /// The value.
        value: String,
    },
    /// The default reflector/relay ports would pass 65535.
    #[error("--listen {0}: the reflector and relay default to the three ports after it, which do not exist; pass --reflect and --relay (or --no-relay)")]
    NoDefaultPorts(SocketAddr),
    /// `--store` is neither `sled` nor `etcd:…`.
    #[error("--store {0}")]
    BadStore(String),
    /// An etcd option without `--store etcd:…`, or half of a pair.
    #[error("{0}")]
    EtcdOption(String),
    /// Two services on one UDP address.
    #[error("UDP address {0} is given twice (--listen, --reflect and --relay must all differ)")]
    AddressClash(SocketAddr),
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        FileConfig::parse(path, &text)
    }

    /// Parses `text`, the contents of `path` (named in errors). Public for the fuzz target
    /// (`fuzz/fuzz_targets/coordinator_config.rs`).
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            line: e
                .span()
                .and_then(|s| text.get(..s.start))
                .map(|before| before.lines().count().max(1)),
            message: e.message().trim().replace('\n', " "),
        })
    }
}

/// The data directory of `pin`/`admin-token`.
pub fn data_dir(args: &DirArgs) -> Result<PathBuf, ConfigError> {
    if let Some(d) = &args.data_dir {
        return Ok(d.clone());
    }
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    Ok(file
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)))
}

/// Whether `s` is `host:port` with a non-empty host and a non-zero port.
fn is_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    port_ok && host_ok
}

impl ServeConfig {
    /// Defaults < file < flags, then validation.
    pub fn resolve(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let cfg = ServeConfig::merge(args, file)?;
        if let HttpTls::Pem { cert, key } = &cfg.http_tls {
            crate::admin::https::AdminTls::from_pem_files(cert, key)?;
        }
        Ok(cfg)
    }

    /// Whether the admin API is served over HTTPS (so its cookies can be `Secure`).
    pub fn tls_enabled(&self) -> bool {
        self.http_tls != HttpTls::Off
    }

    /// Defaults < `file` < `args`, then validation: [`ServeConfig::resolve`] without loading
    /// the file and the PEM files (it reads only an etcd password file, and the host name
    /// for the default id). Public for the fuzz target.
    pub fn merge(args: &ServeArgs, file: FileConfig) -> Result<ServeConfig, ConfigError> {
        let store_file = file_store(&file);
        let file_id = file.id.clone();
        let default_addr = |s: &str| s.parse::<SocketAddr>().ok();
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let listen = args
            .listen
            .or(file.listen)
            .or_else(|| default_addr(DEFAULT_LISTEN))
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7443)));
        let http = args
            .http
            .or(file.http)
            .or_else(|| default_addr(DEFAULT_HTTP))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7480)));
        let http_insecure = args.http_insecure || file.http_insecure.unwrap_or(false);
        let advertise = if args.advertise.is_empty() {
            file.advertise.unwrap_or_default()
        } else {
            args.advertise.clone()
        };
        // The certificate and key are a pair: from the flags if either flag is given,
        // else from the file.
        let pair = match (&args.http_cert, &args.http_key) {
            (None, None) => (file.http_cert, file.http_key, ("http-cert", "http-key")),
            (cert, key) => (cert.clone(), key.clone(), ("--http-cert", "--http-key")),
        };
        let http_tls = match pair {
            (Some(cert), Some(key), _) => HttpTls::Pem { cert, key },
            (Some(_), None, (given, missing)) => {
                return Err(ConfigError::HttpCertPair { given, missing })
            }
            (None, Some(_), (missing, given)) => {
                return Err(ConfigError::HttpCertPair { given, missing })
            }
            (None, None, _) if args.http_tls || file.http_tls == Some(true) => HttpTls::Identity,
            (None, None, _) => HttpTls::Off,
        };
        if !http.ip().is_loopback() && !http_insecure && http_tls == HttpTls::Off {
            return Err(ConfigError::InsecureHttp(http));
        }
        for a in &advertise {
            if !is_host_port(a) {
                return Err(ConfigError::BadAdvertise(a.clone()));
            }
        }
        let advertise = if advertise.is_empty() {
            if listen.ip().is_unspecified() {
                return Err(ConfigError::NoAdvertise(listen));
            }
            vec![listen.to_string()]
        } else {
            advertise
        };

        // Default ports: the three after --listen's (or any port when it is 0).
        let after = |n: u16| -> Result<SocketAddr, ConfigError> {
            let port = match listen.port() {
                0 => 0,
                p => p
                    .checked_add(n)
                    .ok_or(ConfigError::NoDefaultPorts(listen))?,
            };
            Ok(SocketAddr::new(listen.ip(), port))
        };
        let reflect = if !args.reflect.is_empty() {
            args.reflect.clone()
        } else if let Some(r) = file.reflect {
            r
        } else {
            vec![after(1)?, after(2)?]
        };
        let relay = if args.no_relay {
            None
        } else if let Some(r) = args.relay {
            Some(r)
        } else if file.no_relay == Some(true) {
            None
        } else {
            Some(file.relay.map_or_else(|| after(3), Ok)?)
        };
        let mut seen = vec![listen];
        for a in reflect.iter().chain(&relay) {
            if a.port() != 0 && seen.contains(a) {
                return Err(ConfigError::AddressClash(*a));
            }
            seen.push(*a);
        }
        let advertise_reflect = if args.advertise_reflect.is_empty() {
            file.advertise_reflect.unwrap_or_default()
        } else {
            args.advertise_reflect.clone()
        };
        let advertise_relay = args.advertise_relay.clone().or(file.advertise_relay);
        for (flag, value) in advertise_reflect
            .iter()
            .map(|v| ("reflect", v))
            .chain(advertise_relay.iter().map(|v| ("relay", v)))
        {
            if !is_host_port(value) {
                return Err(ConfigError::BadAdvertiseService {
                    flag,
                    value: value.clone(),
                });
            }
        }
        let id = args.id.clone().or(file_id).unwrap_or_else(default_id);
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(ConfigError::EtcdOption(format!(
                "--id {id:?}: use 1-64 letters, digits, '-', '.' or '_'"
            )));
        }
        let store = store_config(args, &store_file, id.clone())?;
        Ok(ServeConfig {
            data_dir,
            listen,
            http,
            http_tls,
            advertise,
            reflect,
            relay,
            advertise_reflect,
            advertise_relay,
            store,
            id,
        })
    }

    /// The reflector addresses and relay addresses members are told, given where the
    /// sockets ended up bound: the explicit `advertise-*` settings, or else, for the host
    /// of every advertised control address (each host once, in order: an IPv4 and an IPv6
    /// `--advertise` give both families), each socket's port. The relay list is its
    /// address in each family, the first one what older nodes are told.
    pub fn advertised_services(
        &self,
        reflectors: &[SocketAddr],
        relay: Option<SocketAddr>,
    ) -> (Vec<String>, Vec<String>) {
        let mut hosts: Vec<&str> = Vec::new();
        for a in &self.advertise {
            let host = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        let on_hosts = |port: u16| hosts.iter().map(move |h| format!("{h}:{port}"));
        let reflect = if self.advertise_reflect.is_empty() {
            reflectors.iter().flat_map(|a| on_hosts(a.port())).collect()
        } else {
            self.advertise_reflect.clone()
        };
        let relay = match (relay, &self.advertise_relay) {
            (None, _) => Vec::new(),
            (Some(_), Some(advertised)) => vec![advertised.clone()],
            (Some(a), None) => on_hosts(a.port()).collect(),
        };
        (reflect, relay)
    }
}

/// The store settings of the file, apart from the rest.
struct FileStore {
    store: Option<String>,
    prefix: Option<String>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

fn file_store(file: &FileConfig) -> FileStore {
    FileStore {
        store: file.store.clone(),
        prefix: file.etcd_prefix.clone(),
        user: file.etcd_user.clone(),
        password_file: file.etcd_password_file.clone(),
        ca: file.etcd_ca.clone(),
        cert: file.etcd_cert.clone(),
        key: file.etcd_key.clone(),
    }
}

/// The host name (the default coordinator id), or `coordinator` when it is unusable.
fn default_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "coordinator".into())
}

/// `--store` and the `--etcd-*` options (flags over file).
fn store_config(
    args: &ServeArgs,
    file: &FileStore,
    id: String,
) -> Result<StoreConfig, ConfigError> {
    let spec = args
        .store
        .clone()
        .or_else(|| file.store.clone())
        .unwrap_or_else(|| "sled".into());
    let prefix = args.etcd_prefix.clone().or_else(|| file.prefix.clone());
    let user = args.etcd_user.clone().or_else(|| file.user.clone());
    let password_file = args
        .etcd_password_file
        .clone()
        .or_else(|| file.password_file.clone());
    let ca = args.etcd_ca.clone().or_else(|| file.ca.clone());
    let cert = args.etcd_cert.clone().or_else(|| file.cert.clone());
    let key = args.etcd_key.clone().or_else(|| file.key.clone());
    if spec == "sled" {
        let etcd_given = prefix.is_some()
            || user.is_some()
            || password_file.is_some()
            || ca.is_some()
            || cert.is_some()
            || key.is_some();
        if etcd_given {
            return Err(ConfigError::EtcdOption(
                "the --etcd-* options need --store etcd:URL[,URL…]".into(),
            ));
        }
        return Ok(StoreConfig::Sled);
    }
    let Some(list) = spec.strip_prefix("etcd:") else {
        return Err(ConfigError::BadStore(format!(
            "{spec:?}: expected sled or etcd:http://HOST:2379[,http://HOST2:2379…]"
        )));
    };
    let endpoints = crate::store::EtcdOptions::parse_endpoints(list)
        .map_err(|e| ConfigError::BadStore(format!("{spec:?}: {e}")))?;
    let mut opts = crate::store::EtcdOptions::new(endpoints, id);
    if let Some(p) = prefix {
        if !p.starts_with('/') || !p.ends_with('/') {
            return Err(ConfigError::EtcdOption(format!(
                "--etcd-prefix {p:?}: must start and end with '/', e.g. /wiremesh/"
            )));
        }
        opts.prefix = p;
    }
    opts.user = match (user, password_file) {
        (Some(u), Some(f)) => {
            let text = std::fs::read_to_string(&f).map_err(|error| ConfigError::Read {
                path: f.clone(),
                error,
            })?;
            let password = text.lines().next().unwrap_or("").to_owned();
            Some((u, password))
        }
        (None, None) => None,
        _ => {
            return Err(ConfigError::EtcdOption(
                "--etcd-user and --etcd-password-file go together".into(),
            ))
        }
    };
    opts.cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::EtcdOption(
                "--etcd-cert and --etcd-key go together".into(),
            ))
        }
    };
    opts.ca = ca;
    Ok(StoreConfig::Etcd(Box::new(opts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("coordinator").chain(args.iter().copied()))
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        match parse_cli(&[&["serve"], args].concat()).unwrap().command {
            Command::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(Path::new("c.toml"), text).unwrap()
    }

    #[test]
    fn defaults_file_flags_precedence() {
        // Defaults alone: 0.0.0.0 cannot be advertised.
        let err = ServeConfig::merge(&serve_args(&[]), FileConfig::default()).unwrap_err();
        assert!(matches!(err, ConfigError::NoAdvertise(_)), "{err}");

        let c = ServeConfig::merge(
            &serve_args(&["--advertise", "coord.example:7443"]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.http.to_string(), DEFAULT_HTTP);
        assert_eq!(c.advertise, vec!["coord.example:7443"]);

        let f =
            file("data-dir = \"/srv/c\"\nlisten = \"192.0.2.1:7000\"\nhttp = \"127.0.0.1:9000\"\n");
        let c = ServeConfig::merge(&serve_args(&[]), f).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/c"));
        assert_eq!(c.advertise, vec!["192.0.2.1:7000"]);
        assert_eq!(c.http.port(), 9000);

        let f = file(
            "data-dir = \"/srv/c\"\nlisten = \"192.0.2.1:7000\"\nadvertise = [\"a.example:1\"]\n",
        );
        let c = ServeConfig::merge(
            &serve_args(&[
                "--data-dir",
                "/x",
                "--advertise",
                "b.example:2",
                "--advertise",
                "[2001:db8::1]:3",
            ]),
            f,
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.advertise, vec!["b.example:2", "[2001:db8::1]:3"]);
    }

    #[test]
    fn service_ports_default_after_listen() {
        let c = ServeConfig::merge(
            &serve_args(&["--advertise", "coord.example:7443"]),
            FileConfig::default(),
        )
        .unwrap();
        let ports: Vec<u16> = c.reflect.iter().map(|a| a.port()).collect();
        assert_eq!(ports, vec![7444, 7445]);
        assert_eq!(c.relay, Some("[::]:7446".parse().unwrap()));
        let (reflect, relay) = c.advertised_services(&c.reflect, c.relay);
        assert_eq!(reflect, vec!["coord.example:7444", "coord.example:7445"]);
        assert_eq!(relay, vec!["coord.example:7446"]);

        // IPv6 hosts keep their brackets; ports are the bound ones.
        let c = ServeConfig::merge(
            &serve_args(&["--listen", "[2001:db8::1]:0"]),
            FileConfig::default(),
        )
        .unwrap();
        assert!(c.reflect.iter().all(|a| a.port() == 0));
        let bound: Vec<SocketAddr> = vec!["[2001:db8::1]:5000".parse().unwrap()];
        let (reflect, relay) =
            c.advertised_services(&bound, Some("[2001:db8::1]:5001".parse().unwrap()));
        assert_eq!(reflect, vec!["[2001:db8::1]:5000"]);
        assert_eq!(relay, vec!["[2001:db8::1]:5001"]);

        // Both families advertised: every service on each host, each host once.
        let c = ServeConfig::merge(
            &serve_args(&[
                "--listen",
                "[::]:7443",
                "--advertise",
                "192.0.2.1:7443",
                "--advertise",
                "[2001:db8::1]:7443",
                "--advertise",
                "192.0.2.1:8443",
            ]),
            FileConfig::default(),
        )
        .unwrap();
        let (reflect, relay) = c.advertised_services(&c.reflect, c.relay);
        assert_eq!(
            reflect,
            vec![
                "192.0.2.1:7444",
                "[2001:db8::1]:7444",
                "192.0.2.1:7445",
                "[2001:db8::1]:7445"
            ]
        );
        assert_eq!(relay, vec!["192.0.2.1:7446", "[2001:db8::1]:7446"]);

        // Flags over file, --no-relay over everything, explicit advertised addresses.
        let f = file(
            "listen = \"192.0.2.1:9000\"\nreflect = [\"192.0.2.1:3478\"]\nrelay = \"192.0.2.1:3479\"\nadvertise-relay = \"relay.example:443\"\n",
        );
        let c = ServeConfig::merge(&serve_args(&[]), f).unwrap();
        assert_eq!(c.reflect, vec!["192.0.2.1:3478".parse().unwrap()]);
        assert_eq!(c.relay, Some("192.0.2.1:3479".parse().unwrap()));
        let (_, relay) = c.advertised_services(&c.reflect, c.relay);
        assert_eq!(relay, vec!["relay.example:443"]);
        let c = ServeConfig::merge(
            &serve_args(&[
                "--no-relay",
                "--reflect",
                "192.0.2.1:1",
                "--reflect",
                "192.0.2.1:2",
                "--advertise-reflect",
                "r.example:1",
            ]),
            file("listen = \"192.0.2.1:9000\"\nrelay = \"192.0.2.1:3479\"\n"),
        )
        .unwrap();
        assert_eq!(c.relay, None);
        assert_eq!(c.reflect.len(), 2);
        assert_eq!(
            c.advertised_services(&c.reflect, None),
            (vec!["r.example:1".to_owned()], vec![])
        );
        let c = ServeConfig::merge(
            &serve_args(&["--relay", "192.0.2.1:7"]),
            file("listen = \"192.0.2.1:9000\"\nno-relay = true\n"),
        )
        .unwrap();
        assert_eq!(c.relay, Some("192.0.2.1:7".parse().unwrap()));
        let c = ServeConfig::merge(
            &serve_args(&[]),
            file("listen = \"192.0.2.1:9000\"\nno-relay = true\nreflect = []\n"),
        )
        .unwrap();
        assert!(c.relay.is_none() && c.reflect.is_empty());
    }

    #[test]
    fn refuses_bad_service_settings() {
        assert!(parse_cli(&["serve", "--relay", "127.0.0.1:1", "--no-relay"]).is_err());
        let err = ServeConfig::merge(
            &serve_args(&["--listen", "127.0.0.1:65534"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::NoDefaultPorts(_)), "{err}");
        let err = ServeConfig::merge(
            &serve_args(&["--listen", "127.0.0.1:7443", "--reflect", "127.0.0.1:7443"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::AddressClash(_)), "{err}");
        let err = ServeConfig::merge(
            &serve_args(&["--listen", "127.0.0.1:7443", "--relay", "127.0.0.1:7444"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "UDP address 127.0.0.1:7444 is given twice (--listen, --reflect and --relay must all differ)"
        );
        let err = ServeConfig::merge(
            &serve_args(&["--listen", "127.0.0.1:7443", "--advertise-relay", "nope"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::BadAdvertiseService { flag: "relay", .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_bad_settings() {
        let err = ServeConfig::merge(
            &serve_args(&["--http", "0.0.0.0:7480", "--listen", "127.0.0.1:7443"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--http 0.0.0.0:7480 is not a loopback address; pass --http-tls (or http-tls = true, or --http-cert and --http-key) to serve the admin API over HTTPS, or --http-insecure (or http-insecure = true) to serve it without TLS anyway"
        );
        assert!(ServeConfig::merge(
            &serve_args(&[
                "--http",
                "0.0.0.0:7480",
                "--http-insecure",
                "--listen",
                "127.0.0.1:7443"
            ]),
            FileConfig::default(),
        )
        .is_ok());
        for bad in ["nohost", ":7443", "host:0", "host:x", "ho st:1"] {
            let err = ServeConfig::merge(&serve_args(&["--advertise", bad]), FileConfig::default())
                .unwrap_err();
            assert!(matches!(err, ConfigError::BadAdvertise(_)), "{bad}: {err}");
        }
        assert!(parse_cli(&["serve", "--listen", "nope"]).is_err());
    }

    #[test]
    fn admin_tls_settings() {
        let local = ["--listen", "127.0.0.1:7443"];
        let merge = |args: &[&str], text: &str| {
            ServeConfig::merge(&serve_args(&[&local[..], args].concat()), file(text))
        };
        let c = merge(&[], "").unwrap();
        assert_eq!(c.http_tls, HttpTls::Off);
        assert!(!c.tls_enabled());
        for (args, text) in [(&["--http-tls"][..], ""), (&[], "http-tls = true")] {
            let c = merge(args, text).unwrap();
            assert_eq!(c.http_tls, HttpTls::Identity, "{args:?} {text}");
            assert!(c.tls_enabled());
        }
        assert_eq!(
            merge(&[], "http-tls = false").unwrap().http_tls,
            HttpTls::Off
        );
        // A certificate implies TLS; flags replace the file's pair as a whole.
        let pem = HttpTls::Pem {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
        };
        let c = merge(&["--http-cert", "/c.pem", "--http-key", "/k.pem"], "").unwrap();
        assert_eq!(c.http_tls, pem);
        assert!(c.tls_enabled());
        let c = merge(
            &[],
            "http-cert = \"/c.pem\"\nhttp-key = \"/k.pem\"\nhttp-tls = true",
        )
        .unwrap();
        assert_eq!(c.http_tls, pem);
        let c = merge(
            &["--http-cert", "/c.pem", "--http-key", "/k.pem"],
            "http-cert = \"/old.pem\"\nhttp-key = \"/old-key.pem\"",
        )
        .unwrap();
        assert_eq!(c.http_tls, pem);

        // Any TLS lets the admin API off loopback; plain HTTP needs --http-insecure.
        for args in [
            &["--http", "0.0.0.0:7480", "--http-tls"][..],
            &[
                "--http",
                "[::]:7480",
                "--http-cert",
                "/c",
                "--http-key",
                "/k",
            ],
            &["--http", "192.0.2.1:7480", "--http-insecure"],
        ] {
            assert!(merge(args, "").is_ok(), "{args:?}");
        }
        assert!(merge(&[], "http = \"0.0.0.0:7480\"\nhttp-tls = true").is_ok());
        let err = merge(&["--http", "0.0.0.0:7480"], "http-tls = false").unwrap_err();
        assert!(matches!(err, ConfigError::InsecureHttp(_)), "{err}");

        // Both or neither.
        for (args, text, want) in [
            (
                &["--http-cert", "/c"][..],
                "",
                "--http-cert needs --http-key too",
            ),
            (
                &["--http-key", "/k"],
                "",
                "--http-key needs --http-cert too",
            ),
            (&[], "http-cert = \"/c\"", "http-cert needs http-key too"),
            (&[], "http-key = \"/k\"", "http-key needs http-cert too"),
            (
                &["--http-cert", "/c"],
                "http-cert = \"/c\"\nhttp-key = \"/k\"",
                "--http-cert needs --http-key too",
            ),
        ] {
            let err = merge(args, text).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("{want} (the admin API's PEM certificate and its key go together)"),
                "{args:?} {text}"
            );
        }
    }

    #[test]
    fn admin_tls_files_are_checked_at_resolve() {
        let tmp = tempfile::tempdir().unwrap();
        let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
        let resolve = |cert: &Path, key: &Path| {
            ServeConfig::resolve(&serve_args(&[
                "--listen",
                "127.0.0.1:7443",
                "--http-cert",
                cert.to_str().unwrap(),
                "--http-key",
                key.to_str().unwrap(),
            ]))
        };
        let err = resolve(&cert, &key).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "--http-cert {}: No such file or directory (os error 2)",
                cert.display()
            )
        );
        let made = rcgen::generate_simple_self_signed(vec!["admin.example".to_owned()]).unwrap();
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, "not a key\n").unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let err = resolve(&cert, &key).unwrap_err().to_string();
        assert!(
            err.starts_with("--http-key ") && err.contains("no PEM private key"),
            "{err}"
        );
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let c = resolve(&cert, &key).unwrap();
        assert!(c.tls_enabled());
        assert!(matches!(c.http_tls, HttpTls::Pem { .. }));
    }

    #[test]
    fn file_errors_are_one_line() {
        let err = FileConfig::parse(Path::new("c.toml"), "listen = \"127.0.0.1:1\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:"), "{err}");
        assert!(err.contains("unknown field `bogus`"), "{err}");
        assert!(!err.contains('\n'));
        let err = FileConfig::parse(Path::new("c.toml"), "listen = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:1: "), "{err}");
    }

    #[test]
    fn subcommands() {
        assert!(matches!(
            parse_cli(&["pin", "--data-dir", "/d"]).unwrap().command,
            Command::Pin(DirArgs {
                data_dir: Some(_),
                ..
            })
        ));
        let Command::AdminToken(a) = parse_cli(&["admin-token"]).unwrap().command else {
            panic!("admin-token");
        };
        assert_eq!(data_dir(&a).unwrap(), PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn store_is_sled_or_etcd_and_etcd_options_are_checked() {
        let base = ["--advertise", "coord.example:7443"];
        let with = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            ServeConfig::merge(&serve_args(&a), FileConfig::default())
        };
        assert_eq!(with(&[]).unwrap().store, StoreConfig::Sled);
        let c = with(&[
            "--store",
            "etcd:http://10.0.0.1:2379,http://10.0.0.2:2379",
            "--id",
            "c1",
            "--etcd-prefix",
            "/wm-a/",
        ])
        .unwrap();
        let StoreConfig::Etcd(opts) = c.store else {
            panic!("not etcd");
        };
        assert_eq!(opts.endpoints.len(), 2);
        assert_eq!(opts.prefix, "/wm-a/");
        assert_eq!((opts.id.as_str(), c.id.as_str()), ("c1", "c1"));
        for (extra, want) in [
            (&["--store", "zookeeper:x"][..], "--store"),
            (&["--store", "etcd:10.0.0.1:2379"][..], "http://"),
            (&["--etcd-prefix", "/x/"][..], "need --store etcd"),
            (
                &["--store", "etcd:http://h:1", "--etcd-prefix", "x"][..],
                "start and end",
            ),
            (
                &["--store", "etcd:http://h:1", "--etcd-cert", "/c"][..],
                "go together",
            ),
            (
                &["--store", "etcd:http://h:1", "--etcd-user", "u"][..],
                "go together",
            ),
            (&["--id", "a b"][..], "--id"),
        ] {
            let e = with(extra).unwrap_err().to_string();
            assert!(e.contains(want), "{extra:?}: {e}");
        }
        let f = file("store = \"etcd:http://10.0.0.1:2379\"\nid = \"c2\"\n");
        let c = ServeConfig::merge(&serve_args(&base), f).unwrap();
        assert!(matches!(c.store, StoreConfig::Etcd(_)));
        assert_eq!(c.id, "c2");
    }
}
