//! Shell completions and man pages, generated from the clap definition in [`crate::cli`]
//! so they never drift from the real flags. The Debian package ships both (see
//! `packaging/check.sh`, which writes them before `cargo deb`).

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::{Cli, Shell};

/// `meshctl completions SHELL`: the completion script on `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "meshctl", out);
}

/// `meshctl man DIR`: `meshctl.1` plus `meshctl-SUB.1` for every subcommand.
pub fn man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("netcheck"), "{shell:?}");
            assert!(text.contains("join"), "{shell:?}");
        }
    }

    #[test]
    fn man_pages_cover_subcommands() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(dir.path()).unwrap();
        let main = std::fs::read_to_string(dir.path().join("meshctl.1")).unwrap();
        assert!(main.contains(".TH meshctl"), "{main}");
        assert!(dir.path().join("meshctl-join.1").exists());
        assert!(dir.path().join("meshctl-admin-network-create.1").exists());
        assert!(
            !dir.path().join("meshctl-man.1").exists(),
            "hidden stays hidden"
        );
    }
}
