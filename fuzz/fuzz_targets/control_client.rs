//! A control frame body from a node, as the coordinator decodes it
//! (`mesh_proto::control::decode::<ClientMsg>`); what decodes must survive
//! `decode(encode(msg)) == msg`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::control::{self, ClientMsg};

fuzz_target!(|body: &[u8]| {
    let Ok(msg) = control::decode::<ClientMsg>(body) else {
        return;
    };
    let frame = control::encode(&msg);
    let header: [u8; 4] = frame[..4].try_into().expect("a frame has a header");
    assert_eq!(control::body_len(header).ok(), Some(frame.len() - 4));
    let again: ClientMsg = control::decode(&frame[4..]).expect("a re-encoded message decodes");
    assert_eq!(again, msg);
});
