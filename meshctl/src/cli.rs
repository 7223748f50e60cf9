//! Flags and subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Where meshd listens unless told otherwise (meshd's `--socket` default).
pub const DEFAULT_SOCKET: &str = "/run/meshd/meshd.sock";

/// wiremesh command line: node status and keys
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the local meshd.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// meshd's local API socket.
    #[arg(long, global = true, value_name = "PATH", env = "MESHCTL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new private key in base64, like `wg genkey`.
    Genkey,
    /// Read a private key on stdin and print its public key, like `wg pubkey`.
    Pubkey,
    /// Show the interface, its peers and counters, like `wg show`.
    Status {
        /// Print the status as JSON (the field names meshd sends).
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn socket_is_global() {
        let before = Cli::try_parse_from(["meshctl", "--socket", "/a", "status"]);
        let after = Cli::try_parse_from(["meshctl", "status", "--json", "--socket", "/b"]);
        let (Ok(before), Ok(after)) = (before, after) else {
            panic!("--socket not accepted")
        };
        assert_eq!(before.connect.socket, PathBuf::from("/a"));
        assert_eq!(after.connect.socket, PathBuf::from("/b"));
        assert!(matches!(after.command, Command::Status { json: true }));
    }
}
