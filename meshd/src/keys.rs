//! The node's private key on disk. STUB: being written.

use std::path::{Path, PathBuf};

use mesh_proto::Key;

/// Loads the private key from `explicit`, or from `<state_dir>/node.key`, creating it
/// (mode 0600) on first start. Returns the key and the path it came from.
pub fn load_or_create(explicit: Option<&Path>, state_dir: &Path) -> anyhow::Result<(Key, PathBuf)> {
    let _ = (explicit, state_dir);
    anyhow::bail!("not implemented yet")
}
