//! A relay datagram (`mesh_proto::relay::parse`), as both the coordinator's relay (REGISTER,
//! SEND) and meshd's inbound path (DELIVER, REGISTERED) parse it. Only the parser is called:
//! the frame layout is the relay module's to define.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    std::hint::black_box(mesh_proto::relay::parse(std::hint::black_box(datagram)));
});
