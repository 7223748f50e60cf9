//! The disco message decoder, reached through `disco::open`: the input is a nonce and a
//! plaintext (any bytes), which the target seals exactly as `disco::seal` would, so `open`
//! authenticates it and decodes fuzzer bytes. A sealed plaintext must never fail
//! authentication (that would mean the format in the module docs is not what `open`
//! checks); what decodes must re-seal to the very same datagram (one encoding per message)
//! unless it carries an IPv4-mapped IPv6 address, which the encoder writes as IPv4.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::disco::{self, DiscoError};
use wiremesh_fuzz::{canonical_disco, disco_pair};

fuzz_target!(|input: &[u8]| {
    let Some((nonce, plaintext)) = input.split_first_chunk::<24>() else {
        return;
    };
    let pair = disco_pair();
    let datagram = pair.seal_plaintext(*nonce, plaintext);
    let opened = disco::open(&pair.receiver_key, &datagram);
    if datagram.len() > disco::MAX_DATAGRAM {
        assert_eq!(opened, Err(DiscoError::Length));
        return;
    }
    let msg = match opened {
        Ok(msg) => msg,
        Err(DiscoError::Malformed) => return,
        Err(e) => panic!("a well-sealed datagram of {} bytes: {e}", datagram.len()),
    };
    let resealed = disco::seal(&pair.sender_key, &pair.sender_public, *nonce, &msg);
    let canonical = canonical_disco(&msg);
    if canonical == msg {
        assert_eq!(resealed, datagram, "one encoding per message");
    }
    assert_eq!(disco::open(&pair.receiver_key, &resealed), Ok(canonical));
});
