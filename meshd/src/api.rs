//! Local API server. STUB being written.
use std::path::Path;
use std::sync::Arc;

use crate::device::Device;

pub fn serve(path: &Path, device: Arc<Device>) -> anyhow::Result<()> {
    let _ = (path, device);
    Ok(())
}
