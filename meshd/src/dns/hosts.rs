//! A managed block in the hosts file, for systems without systemd-resolved:
//!
//! ```text
//! # BEGIN wiremesh lab
//! 10.9.8.1 alpha.lab.mesh.internal
//! 10.9.8.2 bravo.lab.mesh.internal
//! # END wiremesh lab
//! ```
//!
//! Only the lines from this network's BEGIN marker to its END marker are ever replaced or
//! removed; every other byte of the file stays as it was. The file is replaced atomically
//! (a temporary file in the same directory, the original's mode, `rename`); when it cannot
//! be renamed over (a bind-mounted /etc/hosts in a container), it is rewritten in place.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::Context as _;

/// The marker lines of `network`'s block.
pub fn markers(network: &str) -> (String, String) {
    let n = mesh_proto::dns::label(network);
    (
        format!("# BEGIN wiremesh {n}"),
        format!("# END wiremesh {n}"),
    )
}

/// The block's lines for these names (one line per name and address).
pub fn block(network: &str, hosts: &[(String, Vec<IpAddr>)]) -> String {
    let (begin, end) = markers(network);
    let mut out = format!("{begin}\n");
    for (name, addresses) in hosts {
        for a in addresses {
            out.push_str(&format!("{a} {name}\n"));
        }
    }
    out.push_str(&end);
    out.push('\n');
    out
}

/// `content` with `network`'s block replaced by `new` (a whole block as [`block`] makes
/// it), or removed when `new` is `None`. A file without the block gets it at the end. A
/// BEGIN marker without its END is left alone and the block appended after everything.
pub fn replace(content: &str, network: &str, new: Option<&str>) -> String {
    let (begin, end) = markers(network);
    let lines: Vec<&str> = content.split_inclusive('\n').collect();
    let is = |l: &str, m: &str| l.trim_end_matches(['\n', '\r']) == m;
    let start = lines.iter().position(|l| is(l, &begin));
    let stop = start.and_then(|s| lines[s..].iter().position(|l| is(l, &end)).map(|k| s + k));
    let mut out = String::with_capacity(content.len() + new.map_or(0, str::len));
    match (start, stop) {
        (Some(s), Some(e)) => {
            lines[..s].iter().for_each(|l| out.push_str(l));
            if let Some(b) = new {
                out.push_str(b);
            }
            lines[e + 1..].iter().for_each(|l| out.push_str(l));
        }
        _ => {
            out.push_str(content);
            if let Some(b) = new {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(b);
            }
        }
    }
    out
}

/// Rewrites `path` with `network`'s block set to `new` (or removed); does nothing when
/// that changes nothing. A missing file counts as empty.
pub fn update(path: &Path, network: &str, new: Option<&str>) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let next = replace(&old, network, new);
    if next == old {
        return Ok(());
    }
    write_atomic(path, next.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file}.wiremesh-{}", std::process::id()));
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            // EBUSY/EXDEV: a bind-mounted file cannot be renamed over; write in place.
            if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EXDEV)) {
                std::fs::write(path, bytes)
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<(String, Vec<IpAddr>)> {
        vec![
            (
                "a.lab.mesh.internal".into(),
                vec!["10.9.8.1".parse().unwrap()],
            ),
            (
                "b.lab.mesh.internal".into(),
                vec!["10.9.8.2".parse().unwrap()],
            ),
        ]
    }

    #[test]
    fn the_block_is_appended_replaced_and_removed_leaving_the_rest() {
        let foreign = "127.0.0.1\tlocalhost\n# a comment\r\n::1 ip6-localhost";
        let b = block("lab", &hosts());
        assert_eq!(
            b,
            "# BEGIN wiremesh lab\n10.9.8.1 a.lab.mesh.internal\n10.9.8.2 b.lab.mesh.internal\n# END wiremesh lab\n"
        );
        let with = replace(foreign, "lab", Some(&b));
        assert_eq!(with, format!("{foreign}\n{b}"));
        let other = block("other", &hosts()[..1]);
        let both = replace(&format!("{with}10.0.0.1 x\n"), "other", Some(&other));
        let smaller = block("lab", &hosts()[1..]);
        let replaced = replace(&both, "lab", Some(&smaller));
        assert_eq!(
            replaced,
            format!("{foreign}\n{smaller}10.0.0.1 x\n{other}"),
            "in place, the other network's block and the foreign line kept"
        );
        let removed = replace(&replace(&replaced, "lab", None), "other", None);
        assert_eq!(removed, format!("{foreign}\n10.0.0.1 x\n"));
        // An unterminated block is not ours to cut.
        let broken = "# BEGIN wiremesh lab\n1.2.3.4 keep\n";
        assert_eq!(replace(broken, "lab", None), broken);
    }

    #[test]
    fn update_keeps_the_mode_and_foreign_bytes() {
        let dir = std::env::temp_dir().join(format!("meshd-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        let foreign = "127.0.0.1 localhost\n\n#x\n";
        std::fs::write(&path, foreign).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        update(&path, "lab", Some(&block("lab", &hosts()))).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(std::fs::read_to_string(&path).unwrap().starts_with(foreign));
        update(&path, "lab", None).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), foreign);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
