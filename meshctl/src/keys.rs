//! `genkey` and `pubkey`: byte-for-byte what `wg genkey` and `wg pubkey` print.

use std::io::{self, Read, Write};
use std::os::fd::AsFd as _;
use std::os::unix::fs::PermissionsExt as _;

use mesh_proto::Key;

/// Longest stdin `pubkey` reads; a key is 44 characters and a newline.
const MAX_INPUT: u64 = 1024;

/// Writes a new clamped private key and a newline.
pub fn genkey(out: &mut impl Write) -> anyhow::Result<()> {
    warn_if_stdout_world_accessible();
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow::anyhow!("drawing random bytes for a new key: {e}"))?;
    writeln!(out, "{}", Key::clamp_private(bytes))?;
    Ok(())
}

/// Reads a private key from `input` and writes its public key and a newline.
pub fn pubkey(input: &mut impl Read, out: &mut impl Write) -> anyhow::Result<()> {
    let mut text = String::new();
    input
        .take(MAX_INPUT)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("reading a private key from stdin: {e}"))?;
    let private: Key = text
        .parse()
        .map_err(|e| anyhow::anyhow!("stdin does not hold a private key: {e}"))?;
    writeln!(out, "{}", private.public_key())?;
    Ok(())
}

/// `wg genkey` warns when its output lands in a file others can read; so do we.
fn warn_if_stdout_world_accessible() {
    let Ok(fd) = io::stdout().as_fd().try_clone_to_owned() else {
        return;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return;
    };
    if meta.is_file() && meta.permissions().mode() & 0o007 != 0 {
        eprintln!("meshctl: warning: writing a private key to a world-accessible file; consider umask 077");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn genkey_is_clamped_base64_line() {
        let mut out = Vec::new();
        genkey(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.len(), 45);
        assert!(text.ends_with('\n'));
        let key: Key = text.parse().unwrap();
        assert_eq!(key, Key::clamp_private(key.0));
    }

    #[test]
    fn pubkey_known_answer() {
        // `echo YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0= | wg pubkey`
        let mut out = Vec::new();
        pubkey(
            &mut &b"YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=\n"[..],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs=\n");
    }

    #[test]
    fn pubkey_rejects_bad_input() {
        for (input, want) in [
            (
                &b""[..],
                "stdin does not hold a private key: expected 44 base64 characters, got 0",
            ),
            (
                b"abc\n",
                "stdin does not hold a private key: expected 44 base64 characters, got 3",
            ),
            (
                b"!Anz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=\n",
                "stdin does not hold a private key: not valid base64",
            ),
        ] {
            let err = pubkey(&mut &input[..], &mut Vec::new()).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
        let err = pubkey(&mut &[0xffu8, 0xfe][..], &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("reading a private key from stdin: "),
            "{err}"
        );
    }
}
