//! `decode(encode(msg)) == msg` for control messages built from arbitrary parts, both
//! directions, through the JSON framing (`control::encode`, `control::decode`,
//! `control::decode_server`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::control::{self, ClientMsg, ServerMsg};
use wiremesh_fuzz::{ArbClientMsg, ArbServerMsg, ME};

fuzz_target!(|input: (ArbClientMsg, ArbServerMsg)| {
    let client = input.0.msg();
    let frame = control::encode(&client);
    let header: [u8; 4] = frame[..4].try_into().expect("a frame has a header");
    assert_eq!(control::body_len(header).ok(), Some(frame.len() - 4));
    assert_eq!(control::decode::<ClientMsg>(&frame[4..]).ok(), Some(client));

    let Some(server) = input.1.msg() else {
        return;
    };
    let frame = control::encode(&server);
    assert_eq!(
        control::decode::<ServerMsg>(&frame[4..]).ok().as_ref(),
        Some(&server)
    );
    assert_eq!(control::decode_server(&frame[4..], &ME).ok(), Some(server));
});
