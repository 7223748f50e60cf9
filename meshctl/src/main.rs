//! meshctl: the wiremesh command line.
//!
//! Key tools that behave exactly like `wg genkey` / `wg pubkey`, and `status`, which asks
//! the local `meshd` over its unix socket (see [`mesh_proto::api`]) and prints the answer
//! like `wg show`, or as JSON.
//!
//! Kept thin: flags in [`cli`], the commands in [`keys`] and [`status`]. Every error is
//! printed as one line, `meshctl: …`, with exit code 1.

mod cli;
mod keys;
mod status;

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
        Command::Status { json } => status::run(&cli.connect.socket, json, &mut out)?,
    }
    out.flush()?;
    Ok(())
}
