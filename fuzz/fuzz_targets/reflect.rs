//! Reflection datagrams: a request as the coordinator's reflectors parse it
//! (`reflect::parse_request`), a response as meshd parses it (`reflect::parse_response`).
//! What parses must re-encode to the same bytes (responses: unless the address is
//! IPv4-mapped IPv6, which the encoder writes as IPv4), and a datagram is never both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::disco::{self, Kind};
use mesh_proto::reflect;
use wiremesh_fuzz::canonical;

fuzz_target!(|datagram: &[u8]| {
    let request = reflect::parse_request(datagram);
    let response = reflect::parse_response(datagram);
    assert!(request.is_none() || response.is_none());
    if let Some(tx) = request {
        assert_eq!(&reflect::request(tx)[..], datagram);
        assert_eq!(disco::classify(datagram), Kind::Reflect);
    }
    if let Some((tx, observed)) = response {
        assert_eq!(disco::classify(datagram), Kind::Reflect);
        let encoded = reflect::response(tx, observed);
        if canonical(observed) == observed {
            assert_eq!(encoded, datagram);
        }
        assert_eq!(
            reflect::parse_response(&encoded),
            Some((tx, canonical(observed)))
        );
    }
});
