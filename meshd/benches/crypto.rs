//! The crypto ceiling (issue 16): boringtun's encapsulation and decapsulation of one
//! steady-state data packet, at the MTUs meshd is run with.
//!
//! Two `Tunn`s complete a handshake first (initiation, response, the keepalive that
//! confirms the session to the responder), so every measured call is a data packet of
//! an established session: what the data plane pays per packet, and nothing else (no
//! TUN, no socket, no routing). `bench/ceiling.sh` runs this and turns the medians into
//! the throughput ceiling of one tunnel with both ends on this machine.
//!
//! ```sh
//! cargo bench --profile ci -p meshd --bench crypto
//! ```

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use divan::Bencher;

fn main() {
    divan::main();
}

/// Inner packet sizes: meshd's default MTU (1420, WireGuard's) and IPv6's minimum (1280).
const MTUS: [usize; 2] = [1280, 1420];
/// Room for the WireGuard data header and tag (32 bytes) and then some.
const OUT: usize = 2048;

fn key(seed: u8) -> StaticSecret {
    StaticSecret::from([seed; 32])
}

/// An initiator and a responder with an established session in both directions.
fn pair() -> (Tunn, Tunn) {
    let (ka, kb) = (key(1), key(2));
    let (pa, pb) = (PublicKey::from(&ka), PublicKey::from(&kb));
    let mut a = Tunn::new(ka, pb, None, None, 1, None);
    let mut b = Tunn::new(kb, pa, None, None, 2, None);
    let (mut m1, mut m2, mut m3) = ([0u8; OUT], [0u8; OUT], [0u8; OUT]);
    let init = match a.format_handshake_initiation(&mut m1, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => panic!("no handshake initiation"),
    };
    let resp = match b.decapsulate(None, &init, &mut m2) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => panic!("no handshake response"),
    };
    // The initiator answers the response with a keepalive, which confirms the session
    // to the responder.
    let keepalive = match a.decapsulate(None, &resp, &mut m3) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => panic!("no keepalive after the response"),
    };
    assert!(matches!(
        b.decapsulate(None, &keepalive, &mut m2),
        TunnResult::Done
    ));
    (a, b)
}

/// An IPv4/UDP packet of `len` bytes (198.51.100.1 → .2) with a valid total length, so
/// the receiver accepts it as a tunnel packet.
fn ip_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[198, 51, 100, 1]);
    p[16..20].copy_from_slice(&[198, 51, 100, 2]);
    p
}

/// One packet of `mtu` bytes encrypted into a WireGuard data message.
#[divan::bench(args = MTUS)]
fn encapsulate(bencher: Bencher<'_, '_>, mtu: usize) {
    let (mut a, _b) = pair();
    let packet = ip_packet(mtu);
    let mut out = [0u8; OUT];
    bencher
        .counter(divan::counter::BytesCount::new(mtu))
        .bench_local(
            || match a.encapsulate(divan::black_box(&packet), &mut out) {
                TunnResult::WriteToNetwork(p) => p.len(),
                _ => panic!("encapsulation failed"),
            },
        );
}

/// One WireGuard data message carrying `mtu` bytes authenticated and decrypted. The
/// messages are made by the peer outside the timed part, in order, so the replay window
/// accepts each once.
#[divan::bench(args = MTUS)]
fn decapsulate(bencher: Bencher<'_, '_>, mtu: usize) {
    let (mut a, mut b) = pair();
    let packet = ip_packet(mtu);
    let mut out = [0u8; OUT];
    bencher
        .counter(divan::counter::BytesCount::new(mtu))
        .with_inputs(|| {
            let mut msg = [0u8; OUT];
            let n = match a.encapsulate(&packet, &mut msg) {
                TunnResult::WriteToNetwork(p) => p.len(),
                _ => panic!("encapsulation failed"),
            };
            (msg, n)
        })
        .bench_local_refs(|(msg, n)| {
            match b.decapsulate(None, divan::black_box(&msg[..*n]), &mut out) {
                TunnResult::WriteToTunnelV4(p, _) => p.len(),
                _ => panic!("decapsulation failed"),
            }
        });
}
