//! meshd: the wiremesh node daemon.
//!
//! Thin by design: parse flags, load config and key, then hand over to [`device::Device`]
//! (the data plane) and [`api`] (the local unix-socket API).

mod api;
mod config;
mod control;
mod device;
mod keys;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

const DEFAULT_CONFIG: &str = "/etc/meshd/meshd.toml";
const DEFAULT_STATE_DIR: &str = "/var/lib/meshd";
const DEFAULT_SOCKET: &str = "/run/meshd/meshd.sock";

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
    let config = config::Config::load(&config_path, is_default)?;
    let (private_key, key_path) =
        keys::load_or_create(config.private_key_file.as_deref(), &cli.state_dir)?;
    tracing::info!(key_file = %key_path.display(), "loaded node key");
    let cache = control::Cache::open(&cli.state_dir)?;
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
        let device =
            device::Device::start(&config, private_key).context("starting the data plane")?;
        tokio::spawn(device::traversal::run(device.clone()));
        let control = control::Control::start(device.clone(), cache, private_key, name)?;
        let _socket = api::serve(&cli.socket, device.clone(), control)
            .with_context(|| format!("listening on {}", cli.socket.display()))?;
        tracing::info!(
            interface = %config.interface,
            port = device.listen_port(),
            public_key = %device.public_key().fingerprint(),
            "meshd up"
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            () = device::timers(device.clone()) => {}
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        // The TUN interface goes away with the process; `_socket` removes the socket file.
        Ok(())
    })
}
