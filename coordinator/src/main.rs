//! The `coordinator` binary: parse the command line, set up logging, run a subcommand.
//! Everything else lives in the library (`coordinator::*`); `serve.rs` wires it together.

mod serve;

use anyhow::Context as _;
use clap::Parser as _;
use coordinator::config::{self, Cli, Command, ServeConfig};
use coordinator::identity::DataDir;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COORDINATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("coordinator: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let cfg = ServeConfig::resolve(&args)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("coordinator")
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve::serve(cfg))
        }
        Command::Pin(args) => {
            let dir = DataDir::new(config::data_dir(&args)?);
            println!("{}", dir.load_identity()?.pin);
            Ok(())
        }
        Command::AdminToken(args) => {
            let dir = DataDir::new(config::data_dir(&args)?);
            println!("{}", dir.load_admin_token()?);
            Ok(())
        }
    }
}
