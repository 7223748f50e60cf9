//! The data plane. STUB being written.
use std::sync::Arc;

use mesh_proto::Key;

use crate::config::Config;

/// Shared handle to the running data plane.
#[derive(Debug)]
pub struct Device {
    listen_port: u16,
}

impl Device {
    pub fn start(config: &Config, private_key: Key) -> anyhow::Result<Arc<Device>> {
        let _ = private_key;
        Ok(Arc::new(Device { listen_port: config.listen_port }))
    }
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }
}

/// Runs the WireGuard timers forever.
pub async fn timers(device: Arc<Device>) {
    let _ = device;
    std::future::pending::<()>().await
}
