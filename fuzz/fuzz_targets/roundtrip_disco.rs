//! `open(seal(msg)) == msg` for disco messages built from arbitrary parts (addresses
//! canonical, at most 16 candidates: what `seal` sends), and the sealed datagram is within
//! the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::disco::{self, DiscoError, Kind};
use wiremesh_fuzz::{canonical_disco, disco_pair, ArbDisco};

fuzz_target!(|input: ([u8; 24], ArbDisco)| {
    let (nonce, msg) = input;
    let msg = msg.msg();
    let pair = disco_pair();
    let datagram = disco::seal(&pair.sender_key, &pair.sender_public, nonce, &msg);
    assert!(datagram.len() <= disco::MAX_DATAGRAM);
    assert_eq!(disco::classify(&datagram), Kind::Disco);
    assert_eq!(disco::sender(&datagram), Some(pair.sender_public));
    assert_eq!(
        disco::open(&pair.receiver_key, &datagram),
        Ok(canonical_disco(&msg))
    );
    // The sender cannot open its own datagram as the peer's.
    assert_eq!(
        disco::open(&pair.sender_key, &datagram),
        Err(DiscoError::WrongSender)
    );
});
