//! The text forms users paste: a certificate pin (`CertPin::from_str`, `sha256:<hex>`,
//! `meshctl join --pin`, admin `--pin`) and a WireGuard key (`Key::from_str`, base64 as
//! `wg` prints it: config files, JSON). Each must print back to a text that parses to the
//! same value, and a pin prints in its one canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::control::CertPin;
use mesh_proto::Key;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pin) = text.parse::<CertPin>() {
        let printed = pin.to_string();
        assert_eq!(printed.len(), 71);
        assert_eq!(printed.parse::<CertPin>(), Ok(pin));
        assert!(text.trim().eq_ignore_ascii_case(&printed));
    }
    if let Ok(key) = text.parse::<Key>() {
        let printed = key.to_base64();
        assert_eq!(printed.parse::<Key>(), Ok(key));
    }
});
