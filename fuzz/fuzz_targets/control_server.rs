//! A control frame body from the coordinator, as meshd decodes it
//! (`mesh_proto::control::decode_server`: JSON, or a binary netmap or changes body of
//! `mesh_proto::wire`). Whatever decodes, binary or not, must come back equal from its JSON
//! encoding: the two forms say the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::control::{self, ServerMsg};
use wiremesh_fuzz::ME;

fuzz_target!(|body: &[u8]| {
    let Ok(msg) = control::decode_server(body, &ME) else {
        return;
    };
    let frame = control::encode(&msg);
    let again: ServerMsg = control::decode(&frame[4..]).expect("a re-encoded message decodes");
    assert_eq!(again, msg);
    assert_eq!(
        control::decode_server(&frame[4..], &ME).expect("and through decode_server"),
        msg
    );
});
