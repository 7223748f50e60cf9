//! The control stream as meshd reads it after the QUIC handshake
//! (`meshd/src/control/session.rs`: `read_msg` is a length header checked by
//! `control::body_len`, the body, `control::decode_server`), and what meshd does with the
//! netmap messages: a full map replaces its copy, changes are applied to it
//! (`Netmap::apply`). After every change, the exact diff from the map before must turn the
//! map before into the map after (`netmap::diff` is what meshd applies to the data plane).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::control::{self, ServerMsg};
use mesh_proto::netmap::{self, Netmap};
use wiremesh_fuzz::ME;

fuzz_target!(|stream: &[u8]| {
    let mut rest = stream;
    let mut current: Option<Netmap> = None;
    loop {
        let Some((header, tail)) = rest.split_first_chunk::<4>() else {
            return;
        };
        let Ok(len) = control::body_len(*header) else {
            return;
        };
        let Some((body, tail)) = tail.split_at_checked(len) else {
            return; // meshd's read_exact fails: the stream ended inside a frame
        };
        rest = tail;
        let Ok(msg) = control::decode_server(body, &ME) else {
            return;
        };
        let before = current.clone();
        match msg {
            ServerMsg::Netmap { netmap } => current = Some(netmap),
            ServerMsg::Changes { version, changes } => {
                if let Some(map) = &mut current {
                    map.apply(version, &changes);
                }
            }
            _ => {}
        }
        if let (Some(old), Some(new)) = (&before, &current) {
            let diff = netmap::diff(old, new);
            let mut replayed = old.clone();
            replayed.apply(new.version, &diff);
            if new.version >= old.version {
                assert_eq!(&replayed, new, "diff then apply reproduces the new map");
            }
        }
    }
});
