//! A raw datagram on the WireGuard socket classified as disco, as meshd's inbound path
//! treats it (`disco::classify`, `disco::sender`, `disco::open` with the sender's key).
//! Without the key the fuzzer cannot pass authentication; `disco_plaintext` covers the
//! message decoder behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::disco::{self, DiscoError, Kind};
use wiremesh_fuzz::disco_pair;

fuzz_target!(|datagram: &[u8]| {
    let pair = disco_pair();
    let kind = disco::classify(datagram);
    let sender = disco::sender(datagram);
    if sender.is_some() {
        assert_eq!(kind, Kind::Disco);
    }
    match disco::open(&pair.receiver_key, datagram) {
        Err(DiscoError::NotDisco) => assert_ne!(kind, Kind::Disco),
        Err(DiscoError::Length) => assert!(sender.is_none()),
        Err(DiscoError::WrongSender) => assert_ne!(sender, Some(pair.sender_public)),
        Err(DiscoError::WeakKey) => unreachable!("the pair's keys are usable"),
        Err(DiscoError::Auth | DiscoError::Malformed) | Ok(_) => {
            assert_eq!(sender, Some(pair.sender_public));
        }
    }
});
