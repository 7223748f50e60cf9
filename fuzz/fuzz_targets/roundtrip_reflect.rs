//! `parse(encode(x)) == x` for reflection requests and responses built from arbitrary
//! parts (the observed address canonical: IPv4-mapped IPv6 is sent as IPv4).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::reflect;
use wiremesh_fuzz::{canonical, ArbSock};

fuzz_target!(|input: ([u8; 12], ArbSock)| {
    let (tx, observed) = input;
    let observed = observed.sock();
    let request = reflect::request(tx);
    assert_eq!(reflect::parse_request(&request), Some(tx));
    assert_eq!(reflect::parse_response(&request), None);
    let response = reflect::response(tx, observed);
    let canonical = canonical(observed);
    let len = if canonical.is_ipv4() {
        reflect::RESPONSE_V4_LEN
    } else {
        reflect::RESPONSE_V6_LEN
    };
    assert_eq!(response.len(), len);
    assert_eq!(reflect::parse_response(&response), Some((tx, canonical)));
    assert_eq!(reflect::parse_request(&response), None);
});
