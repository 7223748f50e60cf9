//! `decode(encode(x)) == x` for the binary netmap and changes bodies of `mesh_proto::wire`,
//! built from arbitrary parts and encoded as the coordinator does (`FrameBuilder`,
//! `encode_peer`), then decoded as meshd does (`decode_server`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::control::{self, ServerMsg};
use mesh_proto::netmap::PeerChange;
use mesh_proto::wire;
use wiremesh_fuzz::{encode_changes, encode_netmap, ArbChange, ArbNetmap, ME};

fuzz_target!(|input: (ArbNetmap, u64, u8, Vec<ArbChange>)| {
    let (map, version, prefix_len, changes) = input;
    if let Some(netmap) = map.netmap() {
        let frame = encode_netmap(&netmap, &ME);
        assert_eq!(wire::decode_netmap(&frame[4..], &ME).as_ref(), Ok(&netmap));
        assert_eq!(
            control::decode_server(&frame[4..], &ME).ok(),
            Some(ServerMsg::Netmap { netmap })
        );
    }

    let prefix_len = prefix_len % 129;
    let Some(changes) = changes
        .iter()
        .map(|c| c.change(prefix_len))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    // The receiver's own entry is an own update, never an upsert or removal of a peer.
    if changes.iter().any(|c| match c {
        PeerChange::Upsert { peer } => peer.public_key == ME,
        PeerChange::Remove { public_key } => *public_key == ME,
        _ => false,
    }) {
        return;
    }
    let frame = encode_changes(version, prefix_len, None, &changes, &ME);
    assert_eq!(
        wire::decode_changes(&frame[4..], &ME),
        Ok((version, changes.clone()))
    );
    assert_eq!(
        control::decode_server(&frame[4..], &ME).ok(),
        Some(ServerMsg::Changes { version, changes })
    );
});
