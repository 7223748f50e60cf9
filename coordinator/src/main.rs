//! The wiremesh coordinator. An empty shell until the control-plane issue: it parses its
//! command line so packaging and CI can already build and run it.

use clap::Parser;

/// wiremesh coordinator (control plane; not implemented yet)
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("the coordinator is not implemented yet; run meshd with static peers (see README)")
}
