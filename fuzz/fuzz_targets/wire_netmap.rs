//! A binary full netmap (`mesh_proto::wire::decode_netmap`), decoded as the first member it
//! lists (so the receiver is found) and as a stranger. Whatever decodes must also walk
//! (`for_each_key`, what the load generator uses) with the same header, and come back equal
//! from the coordinator's encoder (`FrameBuilder`, `encode_peer`); a stranger never gets a
//! map.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::wire;
use mesh_proto::Key;
use wiremesh_fuzz::encode_netmap;

const STRANGER: Key = Key([0xee; 32]);

fuzz_target!(|body: &[u8]| {
    let mut first = None;
    let mut stranger_listed = false;
    let walked = wire::for_each_key(body, |_, key| {
        first.get_or_insert(*key);
        stranger_listed |= *key == STRANGER;
    });
    if !stranger_listed {
        assert!(wire::decode_netmap(body, &STRANGER).is_err());
    }
    let me = first.unwrap_or(STRANGER);
    let Ok(netmap) = wire::decode_netmap(body, &me) else {
        return;
    };
    let header = walked.expect("for_each_key walks every netmap decode_netmap decodes");
    assert_eq!(header.kind, wire::KIND_NETMAP);
    assert_eq!(header.version, netmap.version);
    assert_eq!(wire::peek(body), Ok(header));
    let frame = encode_netmap(&netmap, &me);
    let again = wire::decode_netmap(&frame[4..], &me).expect("a re-encoded netmap decodes");
    assert_eq!(again, netmap);
});
