//! meshd's configuration file (`meshd/src/config.rs`: TOML → `RawConfig` → `validate`).
//! meshd is a binary crate; its config module takes one constant from the rest of meshd
//! (repeated below), so it is compiled into this target as it is (`#[path]`). The one thing
//! left out: an `endpoint` naming a host would be resolved with the system resolver (DNS),
//! so such endpoints are dropped before `validate`. Every error must be one line
//! (`meshd: error: …` stays one line in the journal).
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../meshd/src/config.rs"]
mod config;

/// Whether `parse_endpoint` would ask the resolver about `text`.
fn needs_resolver(text: &str) -> bool {
    if text.parse::<SocketAddr>().is_ok() {
        return false;
    }
    match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.starts_with('[')
                && !host.contains(':')
                && port.parse::<u16>().is_ok()
                && host.parse::<IpAddr>().is_err()
        }
        None => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // read_to_string refuses it first
    };
    let base = Path::new("/etc/meshd");
    let file = Path::new("/etc/meshd/meshd.toml");
    let result = match toml::from_str::<config::RawConfig>(text) {
        Err(_) => {
            let result = config::Config::from_toml(text, base);
            assert!(matches!(result, Err(config::ConfigError::Syntax { .. })));
            result
        }
        Ok(mut raw) => {
            for peer in &mut raw.peer {
                if peer.endpoint.as_deref().is_some_and(needs_resolver) {
                    peer.endpoint = None;
                }
            }
            config::validate(raw, base)
        }
    };
    match result {
        Ok(config) => {
            assert!(!config.interface.is_empty() && config.interface.len() <= 15);
            assert!((config::MIN_MTU..=config::MAX_MTU).contains(&config.mtu));
            assert!((1..=config::MAX_FILTER_ENTRIES).contains(&config.max_filter_entries));
        }
        Err(e) => {
            let line = e.describe(file);
            assert!(!line.contains('\n'), "a two-line error: {line:?}");
        }
    }
});
