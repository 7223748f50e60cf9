//! meshctl: the wiremesh command line.
//!
//! Key tools that behave exactly like `wg genkey` / `wg pubkey`; `status`, `join` and
//! `leave`, which talk to the local `meshd` over its unix socket (see [`mesh_proto::api`]);
//! and `admin`, a client of the coordinator's admin HTTP API (see [`mesh_proto::admin`]).
//!
//! Kept thin: flags in [`cli`], the local API client in [`local`], the commands in [`keys`],
//! [`status`], [`join`] and [`admin`]; shell completions and man pages in [`docs`].
//! Every error is printed as one line, `meshctl: …`, with exit code 1.

mod admin;
mod cli;
mod docs;
mod duration;
mod join;
mod k8s;
mod keys;
mod local;
mod probe;
mod status;
mod table;

use std::io::{self, Write as _};

use clap::Parser as _;

use crate::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // `meshctl status | head -1`: the reader left; that is not an error worth a line.
        if e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        {
            std::process::exit(0);
        }
        eprintln!("meshctl: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Genkey => keys::genkey(&mut out)?,
        Command::Pubkey => keys::pubkey(&mut io::stdin().lock(), &mut out)?,
        Command::Status { json, network } => {
            status::run(&cli.connect.socket, json, network.as_deref(), &mut out)?
        }
        Command::Join(args) => join::join(&cli.connect.socket, &args, &mut out)?,
        Command::Leave { network } => join::leave(&cli.connect.socket, &network, &mut out)?,
        Command::Admin(args) => admin::run(args, &mut out)?,
        Command::Ping { peer, json } => probe::ping(&cli.connect.socket, &peer, json, &mut out)?,
        Command::Netcheck { json } => probe::netcheck(&cli.connect.socket, json, &mut out)?,
        Command::K8s { json } => k8s::run(&cli.connect.socket, json, &mut out)?,
        Command::Completions { shell } => docs::completions(shell, &mut out),
        Command::Man { dir } => docs::man_pages(&dir)?,
    }
    out.flush()?;
    Ok(())
}
