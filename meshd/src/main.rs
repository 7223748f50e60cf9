//! meshd: the wiremesh node daemon.
//!
//! Thin by design: parse flags, load config and key, then hand over to [`device::Device`]
//! (the data plane) and [`api`] (the local unix-socket API). Under systemd
//! (`Type=notify`) it reports readiness with [`notify`]; see [`readiness`] for when.

mod api;
mod config;
mod control;
mod device;
mod dns;
mod keys;
mod metrics;
mod networks;
mod notify;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

const DEFAULT_CONFIG: &str = "/etc/meshd/meshd.toml";
const DEFAULT_STATE_DIR: &str = "/var/lib/meshd";
const DEFAULT_SOCKET: &str = "/run/meshd/meshd.sock";
/// How long readiness waits for the first netmap of a membership without a cached one.
const READY_NETMAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// wiremesh node daemon: WireGuard (boringtun) on a TUN device
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). A missing default file is not an error.
    #[arg(long, env = "MESHD_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the node key and other state.
    #[arg(long, env = "MESHD_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Unix socket for meshctl (created with mode 0600).
    #[arg(long, env = "MESHD_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Name to register with the coordinator (default: the hostname).
    #[arg(long, env = "MESHD_NAME")]
    name: Option<String>,
    /// Serve Prometheus metrics on this address (overrides `metrics-listen`; no
    /// authentication, so keep it on loopback or a private network).
    #[arg(long, env = "MESHD_METRICS", value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// Internal: run as the meshd of this further network, started and supervised by the
    /// node's first meshd ([`networks`]); `--state-dir`, `--socket` and `--interface` are
    /// the network's.
    #[arg(long, hide = true, value_name = "NETWORK", requires = "interface")]
    extra_network: Option<String>,
    /// Internal: the interface of `--extra-network`.
    #[arg(long, hide = true, requires = "extra_network")]
    interface: Option<String>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Cli::parse()) {
        // One line: the chain of contexts, outermost first.
        eprintln!("meshd: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (config_path, is_default) = match &cli.config {
        Some(p) => (p.clone(), false),
        None => (PathBuf::from(DEFAULT_CONFIG), true),
    };
    // Everything that can be wrong with the input is checked before anything is created,
    // so a bad config leaves no half-configured interface behind.
    let mut config = config::Config::load(&config_path, is_default)?;
    if let Some(network) = &cli.extra_network {
        anyhow::ensure!(
            networks::valid_name(network),
            "--extra-network: invalid network name {network:?}"
        );
        extra_network_config(&mut config, &cli);
    }
    let (private_key, key_path) =
        keys::load_or_create(config.private_key_file.as_deref(), &cli.state_dir)?;
    tracing::info!(key_file = %key_path.display(), "loaded node key");
    let cache = control::Cache::open(&cli.state_dir)?;
    // Decided before `Control::start`, which applies a matching cached netmap synchronously.
    let membership = cache.membership()?.map(|m| m.network);
    let cached_netmap = match &membership {
        Some(network) => cache.netmap()?.is_some_and(|n| &n.network.name == network),
        None => false,
    };
    // Bound before the TUN exists, so a port in use fails the start cleanly.
    let metrics = match cli.extra_network {
        Some(_) => None,
        None => cli.metrics.or(config.metrics_listen),
    };
    let metrics_listener = match metrics {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the metrics listener to {addr}"))?;
            l.set_nonblocking(true)
                .context("setting the metrics listener non-blocking")?;
            Some(l)
        }
        None => None,
    };
    // The DNS server's fixed addresses, bound before the TUN exists like the metrics.
    let dns_fixed = if config.dns.enabled {
        Some(dns::server::bind_fixed(&config.dns.listen)?)
    } else {
        None
    };
    let name = match cli.name.clone() {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "node".to_owned()),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("meshd-ctl")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let device = start_device(&config, private_key, &cli)?;
        tokio::spawn(device::traversal::run(device.clone()));
        let control = control::Control::start(device.clone(), cache, private_key, name)?;
        // The first meshd supervises the node's further networks; theirs supervise none.
        let networks = match cli.extra_network {
            Some(_) => None,
            None => Some(networks::Networks::new(networks::Launch {
                exe: std::env::current_exe().context("finding the meshd binary")?,
                config: cli.config.clone(),
                name: cli.name.clone(),
                state_dir: cli.state_dir.clone(),
                socket: cli.socket.clone(),
                interface: config.interface.clone(),
            })),
        };
        let _socket = api::serve(&cli.socket, device.clone(), control, networks.clone())
            .with_context(|| format!("listening on {}", cli.socket.display()))?;
        tracing::info!(
            interface = %config.interface,
            port = device.listen_port(),
            public_key = %device.public_key().fingerprint(),
            network = cli.extra_network.as_deref(),
            "meshd up"
        );
        if let Some(n) = &networks {
            n.restore().await;
        }
        if let Some(l) = metrics_listener {
            let l =
                tokio::net::TcpListener::from_std(l).context("registering the metrics listener")?;
            tracing::info!(addr = ?l.local_addr().ok(), "serving metrics");
            let dev = device.clone();
            tokio::spawn(metrics::serve(l, move || metrics::render(&dev.status())));
        }
        let integration = match dns_fixed {
            Some(fixed) => {
                let names = device.names().clone();
                tokio::spawn(dns::server::run(
                    names.clone(),
                    fixed,
                    config.dns.listen.clone(),
                ));
                let integration =
                    std::sync::Arc::new(parking_lot::Mutex::new(dns::Integration::new(
                        config.interface.clone(),
                        config.dns.clone(),
                        names.clone(),
                    )));
                tokio::spawn(dns::integrate(names, integration.clone()));
                Some(integration)
            }
            None => None,
        };
        tokio::spawn(readiness(device.clone(), membership, cached_netmap));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            () = device::timers(device.clone()) => {}
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        if let Some(n) = &networks {
            // Each network's meshd undoes its own integrations; their interfaces go with them.
            n.shutdown().await;
        }
        if let Some(i) = integration {
            // Undo the resolver integrations (resolvectl revert, the hosts block).
            let _ = tokio::task::spawn_blocking(move || i.lock().stop()).await;
        }
        // The TUN interface goes away with the process; `_socket` removes the socket file.
        Ok(())
    })
}

/// The config of a further network's meshd: the primary's file minus what belongs to the
/// node as a whole (static peers, the fixed address, advertised routes, metrics, fixed DNS
/// addresses, an explicit key file: each network has its own key in its state directory),
/// on the interface the primary chose, on the port bound last time (any at first).
fn extra_network_config(config: &mut config::Config, cli: &Cli) {
    if let Some(interface) = &cli.interface {
        config.interface.clone_from(interface);
    }
    config.listen_port = std::fs::read_to_string(cli.state_dir.join(networks::LISTEN_PORT))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    config.address = None;
    config.peers.clear();
    config.advertise_routes.clear();
    config.metrics_listen = None;
    config.private_key_file = None;
    config
        .dns
        .listen
        .retain(|l| matches!(l, config::DnsListen::Overlay(_)));
}

/// Starts the data plane. A further network's meshd that finds the port it bound last
/// time taken takes any, and remembers the port it got (best effort).
fn start_device(
    config: &config::Config,
    private_key: mesh_proto::Key,
    cli: &Cli,
) -> anyhow::Result<std::sync::Arc<device::Device>> {
    let started = match device::Device::start(config, private_key) {
        Err(e) if cli.extra_network.is_some() && config.listen_port != 0 => {
            tracing::info!(
                port = config.listen_port,
                "the last port is not free ({e:#}); taking any"
            );
            let mut any = config.clone();
            any.listen_port = 0;
            device::Device::start(&any, private_key)
        }
        other => other,
    }
    .context("starting the data plane")?;
    if cli.extra_network.is_some() {
        let file = cli.state_dir.join(networks::LISTEN_PORT);
        if let Err(e) = std::fs::write(&file, format!("{}\n", started.listen_port())) {
            tracing::warn!("writing {}: {e}", file.display());
        }
    }
    Ok(started)
}

/// Tells systemd (`READY=1`) that this node is usable: called once the interface is up, the
/// local API listens and a cached netmap, if any, is applied.
///
/// - No membership (static peers only, or not joined yet): ready now.
/// - A membership with a cached netmap: `Control::start` has applied it: ready now.
/// - A membership without a cache (first start after `meshctl join`): wait until the
///   first live netmap is applied (control state `Connected`), the coordinator answers
///   pending/denied (no netmap will come soon), or [`READY_NETMAP_TIMEOUT`] passes; then
///   ready in any case, with a `STATUS=` that says which, so that an unreachable
///   coordinator never keeps the unit from starting.
async fn readiness(
    device: std::sync::Arc<device::Device>,
    membership: Option<String>,
    cached_netmap: bool,
) {
    use mesh_proto::api::ControlState;
    let iface = device.interface().to_owned();
    let status = match membership {
        None => format!("{iface} up, no network membership"),
        Some(network) if cached_netmap => {
            format!("{iface} up, network {network}: cached netmap applied")
        }
        Some(network) => {
            let deadline = tokio::time::Instant::now() + READY_NETMAP_TIMEOUT;
            if let Err(e) = notify::status(&format!(
                "{iface} up, network {network}: waiting for the first netmap"
            )) {
                tracing::warn!("NOTIFY_SOCKET: {e}");
            }
            loop {
                let state = device.status().control.map(|c| c.state);
                match state {
                    Some(ControlState::Connected) => {
                        break format!("{iface} up, network {network}: netmap applied");
                    }
                    Some(ControlState::Pending) => {
                        break format!("{iface} up, network {network}: pending authorisation");
                    }
                    Some(ControlState::Denied) => {
                        break format!("{iface} up, network {network}: refused by the coordinator");
                    }
                    Some(ControlState::Connecting) | None => {}
                }
                if tokio::time::Instant::now() >= deadline {
                    break format!(
                        "{iface} up, network {network}: no netmap after {}s, still connecting",
                        READY_NETMAP_TIMEOUT.as_secs()
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    match notify::ready(&status) {
        Ok(true) => tracing::info!(%status, "notified systemd: ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!("NOTIFY_SOCKET: {e}"),
    }
}
