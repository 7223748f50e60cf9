//! systemd-resolved, through its command-line client: the mesh interface gets this node's
//! DNS server as its per-link server and `~<network>.<domain>` as a routing-only domain
//! (queries for the zone go to meshd, nothing else does); `revert` undoes both. Never
//! touches /etc/resolv.conf.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};

/// The commands that point `interface`'s resolver at `server` (an address, or
/// `address:port` when the port is not 53) for `zone`.
pub fn set_commands(interface: &str, server: &str, zone: &str) -> Vec<Vec<String>> {
    vec![
        vec!["dns".into(), interface.into(), server.into()],
        vec!["domain".into(), interface.into(), format!("~{zone}")],
    ]
}

/// The command that undoes [`set_commands`].
pub fn revert_command(interface: &str) -> Vec<String> {
    vec!["revert".into(), interface.into()]
}

/// Runs `program args…`; an error carries its stderr.
pub fn run(program: &Path, args: &[String]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{} {}: {} {}",
            program.display(),
            args.join(" "),
            out.status,
            stderr.trim()
        );
    }
    Ok(())
}
