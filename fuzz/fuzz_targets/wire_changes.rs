//! A binary changes body (`mesh_proto::wire::decode_changes`), decoded as the member of the
//! first upsert (so own updates occur). Whatever decodes must also walk (`for_each_key`)
//! with the same header and come back equal from the coordinator's encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::netmap::PeerChange;
use mesh_proto::wire::{self, KeyOp};
use wiremesh_fuzz::{encode_changes, ME};

fuzz_target!(|body: &[u8]| {
    let mut first = None;
    let walked = wire::for_each_key(body, |op, key| {
        if op == KeyOp::Upsert {
            first.get_or_insert(*key);
        }
    });
    let me = first.unwrap_or(ME);
    let Ok((version, changes)) = wire::decode_changes(body, &me) else {
        return;
    };
    let header = walked.expect("for_each_key walks every body decode_changes decodes");
    assert_eq!(header.kind, wire::KIND_CHANGES);
    assert_eq!(header.version, version);
    // Only removals of the receiver itself are left out.
    assert!(changes.len() <= header.count as usize);
    let prefix_len = body[10];
    // A dual-stack body has the IPv6 prefix length next.
    let prefix_len6 = (body[1] == wire::FORMAT_DUAL).then(|| body[11]);
    for change in &changes {
        if let PeerChange::SelfUpdate {
            address, address6, ..
        } = change
        {
            assert_eq!(address.prefix_len(), prefix_len);
            assert_eq!(address6.map(|a| a.prefix_len()), prefix_len6);
        }
    }
    let frame = encode_changes(version, prefix_len, prefix_len6, &changes, &me);
    let again = wire::decode_changes(&frame[4..], &me).expect("re-encoded changes decode");
    assert_eq!(again, (version, changes));
});
