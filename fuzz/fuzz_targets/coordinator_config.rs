//! The coordinator's configuration file (`coordinator::config`): `FileConfig::parse` (TOML,
//! kebab-case, unknown keys refused) then `ServeConfig::merge` with no flags (defaults <
//! file, then validation). The one thing changed: an `etcd-password-file` is pointed at a
//! path that does not exist, so the target never reads a file the input names. Every error
//! must be one line.
#![no_main]

use std::path::{Path, PathBuf};

use coordinator::config::{FileConfig, ServeArgs, ServeConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // read_to_string refuses it first
    };
    let mut file = match FileConfig::parse(Path::new("/etc/wiremesh/coordinator.toml"), text) {
        Ok(file) => file,
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "a two-line error: {line:?}");
            return;
        }
    };
    if file.etcd_password_file.is_some() {
        file.etcd_password_file = Some(PathBuf::from("/nonexistent/wiremesh-fuzz/password"));
    }
    match ServeConfig::merge(&ServeArgs::default(), file) {
        Ok(config) => {
            assert!(!config.advertise.is_empty());
            let _ = config.advertised_services(&config.reflect, config.relay);
        }
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "a two-line error: {line:?}");
        }
    }
});
