//! A join token as `meshctl join --token` and meshd's join parse it
//! (`JoinToken::from_str`: `wm1_` + base64url of JSON). What parses must survive
//! `parse(encode(token)) == token`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::control::JoinToken;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = text.parse::<JoinToken>() else {
        return;
    };
    let encoded = token.encode();
    assert!(encoded.starts_with("wm1_"));
    assert_eq!(encoded.parse::<JoinToken>().as_ref(), Ok(&token));
});
