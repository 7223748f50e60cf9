//! The node's private key on disk.
//!
//! The file holds one base64 key and a newline, exactly what `wg genkey` writes, so a key
//! made by either tool works with the other. It must be mode 0600 (or stricter): a key
//! that others can read is refused, as innernet and `wg-quick` do, rather than used.
//!
//! Without `private-key-file` in the config, the key lives at `<state-dir>/node.key` and is
//! generated on first start: written to a temporary file created 0600 in the same
//! directory, fsynced, then renamed into place, so a crash never leaves a partial key.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use mesh_proto::Key;

use crate::config::io_reason;

/// The key file's name inside the state directory.
pub const KEY_FILE_NAME: &str = "node.key";

/// Loads the private key from `explicit`, or from `<state_dir>/node.key`, creating it
/// (mode 0600) on first start. Returns the key and the path it came from.
pub fn load_or_create(explicit: Option<&Path>, state_dir: &Path) -> anyhow::Result<(Key, PathBuf)> {
    if let Some(path) = explicit {
        let key = read_key(path, "private-key-file")?;
        return Ok((key, path.to_owned()));
    }
    let path = state_dir.join(KEY_FILE_NAME);
    match fs::symlink_metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = create_key(state_dir, &path)?;
            tracing::info!(
                key_file = %path.display(),
                public_key = %key.public_key().fingerprint(),
                "generated a new node key"
            );
            return Ok((key, path));
        }
        Err(e) => anyhow::bail!("private key file {}: {}", path.display(), io_reason(&e)),
    }
    let key = read_key(&path, "private key file")?;
    Ok((key, path))
}

/// Reads and checks one key file; `what` names it in errors that are about finding it.
fn read_key(path: &Path, what: &str) -> anyhow::Result<Key> {
    let file = File::open(path)
        .map_err(|e| anyhow::anyhow!("{what} {}: {}", path.display(), io_reason(&e)))?;
    let meta = file
        .metadata()
        .map_err(|e| anyhow::anyhow!("{what} {}: {}", path.display(), io_reason(&e)))?;
    if !meta.is_file() {
        anyhow::bail!("{what} {}: not a regular file", path.display());
    }
    check_mode(path, meta.permissions().mode())?;
    // A key is 45 bytes; anything much longer is not a key file.
    let mut text = String::new();
    file.take(1024)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("{what} {}: {}", path.display(), io_reason(&e)))?;
    text.parse::<Key>().map_err(|e| {
        anyhow::anyhow!(
            "private key file {}: {e}; expected one key as `wg genkey` writes it",
            path.display()
        )
    })
}

/// Refuses a key file that anyone but its owner may read or write.
fn check_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "private key file {0} is mode {1:04o}; run chmod 600 {0}",
            path.display(),
            mode & 0o7777
        );
    }
    Ok(())
}

/// Generates a key and writes it to `path` atomically (temp file, fsync, rename, fsync dir).
fn create_key(state_dir: &Path, path: &Path) -> anyhow::Result<Key> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| {
            anyhow::anyhow!(
                "creating state directory {}: {}",
                state_dir.display(),
                io_reason(&e)
            )
        })?;

    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow::anyhow!("drawing random bytes for a new key: {e}"))?;
    let key = Key::clamp_private(bytes);

    let tmp = state_dir.join(format!(".{KEY_FILE_NAME}.tmp.{}", std::process::id()));
    let write = || -> io::Result<()> {
        // A leftover from a crash of an earlier process with the same pid.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{}\n", key.to_base64()).as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(state_dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::anyhow!(
            "writing new private key file {}: {}",
            path.display(),
            io_reason(&e)
        )
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn err(result: anyhow::Result<(Key, PathBuf)>) -> String {
        let e = format!("{:#}", result.unwrap_err());
        assert!(!e.contains('\n'), "{e:?}");
        e
    }

    #[test]
    fn generates_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/meshd");
        let (key, path) = load_or_create(None, &state).unwrap();
        assert_eq!(path, state.join("node.key"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&state), 0o700);
        // Clamped, and stored the way `wg genkey` prints it.
        assert_eq!(key, Key::clamp_private(key.0));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", key.to_base64())
        );
        // No temp file left behind.
        assert_eq!(fs::read_dir(&state).unwrap().count(), 1);

        let (again, again_path) = load_or_create(None, &state).unwrap();
        assert_eq!(again, key);
        assert_eq!(again_path, path);
    }

    #[test]
    fn explicit_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg.key");
        // What `wg genkey` writes.
        let text = "YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=\n";
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let state = dir.path().join("unused");
        let (key, from) = load_or_create(Some(&path), &state).unwrap();
        assert_eq!(key.to_base64(), text.trim_end());
        assert_eq!(from, path);
        assert!(
            !state.exists(),
            "an explicit key must not create the state directory"
        );
        // Stricter than 0600 is fine.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(load_or_create(Some(&path), &state).unwrap().0, key);
    }

    #[test]
    fn rejections() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let shown = p.display().to_string();
        let good = "YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=\n";
        let two = format!("{good}{good}");
        #[rustfmt::skip]
        let cases: Vec<(&str, Option<&str>, u32, String)> = vec![
            ("missing", None, 0,
                format!("private-key-file {shown}: No such file or directory")),
            ("mode 0644", Some(good), 0o644,
                format!("private key file {shown} is mode 0644; run chmod 600 {shown}")),
            ("mode 0640", Some(good), 0o640,
                format!("private key file {shown} is mode 0640; run chmod 600 {shown}")),
            ("mode 0602", Some(good), 0o602,
                format!("private key file {shown} is mode 0602; run chmod 600 {shown}")),
            ("empty", Some(""), 0o600,
                format!("private key file {shown}: expected 44 base64 characters, got 0; expected one key as `wg genkey` writes it")),
            ("short", Some("abc\n"), 0o600,
                format!("private key file {shown}: expected 44 base64 characters, got 3; expected one key as `wg genkey` writes it")),
            ("two keys", Some(&two), 0o600,
                format!("private key file {shown}: expected 44 base64 characters, got 89; expected one key as `wg genkey` writes it")),
            ("not base64", Some("!Anz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=\n"), 0o600,
                format!("private key file {shown}: not valid base64; expected one key as `wg genkey` writes it")),
        ];
        for (name, content, perm, want) in cases {
            let _ = fs::remove_file(&p);
            if let Some(content) = content {
                fs::write(&p, content).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(perm)).unwrap();
            }
            let got = err(load_or_create(Some(&p), dir.path()));
            assert_eq!(got, want, "{name}");
        }
        // A directory is not a key file.
        let got = err(load_or_create(Some(dir.path()), dir.path()));
        assert_eq!(
            got,
            format!(
                "private-key-file {}: not a regular file",
                dir.path().display()
            )
        );
    }

    #[test]
    fn generated_file_checked_like_explicit_one() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = load_or_create(None, dir.path()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let shown = path.display();
        assert_eq!(
            err(load_or_create(None, dir.path())),
            format!("private key file {shown} is mode 0644; run chmod 600 {shown}")
        );
        fs::write(&path, "garbage\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            err(load_or_create(None, dir.path())),
            format!("private key file {shown}: expected 44 base64 characters, got 7; expected one key as `wg genkey` writes it")
        );
    }
}
