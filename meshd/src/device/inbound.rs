//! UDP → TUN: receive a batch (`recvmmsg`, each buffer possibly a GRO train of datagrams),
//! decrypt runs of data messages for one peer under one lock, keep only packets whose
//! inner source the peer may use and that the policy filter lets in (network peers), and
//! write the batch to the TUN, coalesced into super-packets where the kernel allows
//! (tun-rs's GRO table).
//!
//! Handshake messages take a slower path: MAC1 and the shared rate limiter (cookie replies
//! under load) come before any Diffie-Hellman work; an initiation finds its peer by the
//! static key it carries, only then does that peer's `Tunn` see it.

use std::io::IoSliceMut;
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, TunnResult};
use quinn_udp::{RecvMeta, BATCH_SIZE};
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use mesh_proto::disco::{self, Kind};
use mesh_proto::paths::Source;
use mesh_proto::relay;

use super::filter::{self, Direction, Filter};
use super::local::LocalSet;
use super::peer::{Peer, PeerTable};
use super::traversal::{self, Via};
use super::{Device, Drops};
use mesh_proto::Key;

/// Bytes per receive buffer: one GRO train of up to 64 KiB.
const RX_BUF: usize = 65536;
/// Headroom before each packet written to the TUN, for the virtio-net header.
const TUN_OFFSET: usize = VIRTIO_NET_HDR_LEN;
/// WireGuard message type of transport data (whitepaper section 5.4.6).
const MSG_DATA: u8 = 4;

/// Where the current batch's decrypted packets collect before one TUN write.
struct TunBatch {
    bufs: Vec<Vec<u8>>,
    len: usize,
    gro: GROTable,
}

impl TunBatch {
    fn new() -> TunBatch {
        TunBatch {
            bufs: (0..IDEAL_BATCH_SIZE)
                .map(|_| Vec::with_capacity(TUN_OFFSET + RX_BUF))
                .collect(),
            len: 0,
            gro: GROTable::default(),
        }
    }

    /// A slot with room for `room` bytes after the header space. Not cleared: decryption
    /// overwrites the bytes the packet uses, `commit` cuts the rest, and tun-rs writes
    /// every virtio header, so only growth beyond the slot's last length is zeroed (a few
    /// bytes, not a packet's worth per packet).
    fn slot(&mut self, room: usize) -> &mut Vec<u8> {
        let buf = &mut self.bufs[self.len];
        let want = TUN_OFFSET + room;
        if buf.len() < want {
            buf.resize(want, 0);
        } else {
            buf.truncate(want);
        }
        buf
    }

    fn commit(&mut self, packet_len: usize) {
        self.bufs[self.len].truncate(TUN_OFFSET + packet_len);
        self.len += 1;
    }

    fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    fn flush(&mut self, dev: &Device) {
        if self.len == 0 {
            return;
        }
        if let Err(e) = dev
            .tun
            .send_multiple(&mut self.gro, &mut self.bufs[..self.len], TUN_OFFSET)
        {
            tracing::debug!("TUN write: {e}");
        }
        self.len = 0;
    }
}

/// Counters accumulated over one batch.
#[derive(Default)]
struct Tally {
    invalid: u64,
    bad_source: u64,
    unknown_peer: u64,
    not_local: u64,
}

/// One datagram of the batch: where it lies in the receive buffer, and its session's peer
/// index (for data messages).
#[derive(Clone, Copy)]
struct Item {
    start: usize,
    len: usize,
    /// Where it came from; replies go back the same way.
    via: Via,
    data_peer: Option<u32>,
}

/// The peer index of a WireGuard data message (`receiver_index >> 8`), if it is one.
#[inline]
fn data_index(d: &[u8]) -> Option<u32> {
    (d.len() >= 16 && d[0] == MSG_DATA && d[1..4] == [0, 0, 0])
        .then(|| u32::from_le_bytes([d[4], d[5], d[6], d[7]]) >> 8)
}

/// The inbound thread's body.
pub fn run(dev: Arc<Device>) {
    let mut rx = vec![0u8; BATCH_SIZE * RX_BUF];
    let mut meta = vec![RecvMeta::default(); BATCH_SIZE];
    let mut items: Vec<Item> = Vec::with_capacity(BATCH_SIZE * 64);
    let mut tun = TunBatch::new();
    let mut scratch = vec![0u8; RX_BUF];

    loop {
        let n = {
            let mut chunks = rx.chunks_mut(RX_BUF);
            let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            match dev.udp.recv(&mut iovs, &mut meta) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("UDP receive: {e}");
                    continue;
                }
            }
        };

        // Split GRO trains into datagrams; WireGuard messages (direct or unwrapped from the
        // relay) become items, disco, reflection and relay control messages are handled
        // here and now.
        let table = dev.peers.load();
        let mut tally = Tally::default();
        let relay_addr = dev.traversal.relay();
        items.clear();
        for (b, m) in meta.iter().take(n).enumerate() {
            let stride = m.stride.max(1);
            let mut start = b * RX_BUF;
            let end = start + m.len;
            while start < end {
                let len = stride.min(end - start);
                let d = &rx[start..start + len];
                let handled = match disco::classify(d) {
                    Kind::WireGuard => {
                        let data_peer = data_index(d);
                        items.push(Item {
                            start,
                            len,
                            via: Via::Direct(m.addr),
                            data_peer,
                        });
                        true
                    }
                    Kind::Relay if relay_addr == Some(m.addr) => match relay::parse(d) {
                        Some(relay::Frame::Deliver { from, payload }) => {
                            match disco::classify(payload) {
                                Kind::WireGuard => {
                                    items.push(Item {
                                        start: start + relay::HEADER_LEN,
                                        len: payload.len(),
                                        via: Via::Relay {
                                            relay: m.addr,
                                            peer: from,
                                        },
                                        data_peer: data_index(payload),
                                    });
                                    true
                                }
                                Kind::Disco => {
                                    traversal::handle_disco(&dev, &table, payload, Source::Relay)
                                }
                                _ => false,
                            }
                        }
                        Some(relay::Frame::Registered { key, cookie }) => {
                            key == dev.public_key
                                && traversal::handle_registered(&dev, m.addr, cookie)
                        }
                        Some(relay::Frame::Challenge { key, cookie }) => {
                            key == dev.public_key
                                && traversal::handle_challenge(&dev, m.addr, cookie)
                        }
                        _ => false,
                    },
                    Kind::Disco => traversal::handle_disco(&dev, &table, d, Source::Direct(m.addr)),
                    Kind::Reflect => traversal::handle_reflect(&dev, d, m.addr),
                    Kind::Relay | Kind::Unknown => false,
                };
                if !handled {
                    tally.invalid += 1;
                }
                start += len;
            }
        }

        let policy = dev.filter.load();
        let local = dev.local.load();
        let mut checked = policy.as_deref().map(|_| filter::Batch::new(filter::now()));
        let mut i = 0;
        while i < items.len() {
            let item = items[i];
            let Some(index) = item.data_peer else {
                handshake(
                    &dev,
                    &table,
                    &rx[item.start..item.start + item.len],
                    item.via,
                    &mut scratch,
                    &mut tally,
                );
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < items.len() && items[j].data_peer == Some(index) {
                j += 1;
            }
            match table.by_index.get(&index) {
                Some(peer) => {
                    let rules = policy.as_deref().zip(checked.as_mut()).and_then(|(f, b)| {
                        Some(Policy {
                            filter: f,
                            rules: f.rules(&peer.public_key, peer.traversal.is_some())?,
                            batch: b,
                        })
                    });
                    decrypt_run(
                        &dev,
                        &table,
                        peer,
                        &items[i..j],
                        &rx,
                        &mut tun,
                        &mut tally,
                        // Static peers are exempt: their allowed IPs are the admin's word.
                        peer.traversal.is_some().then_some(&**local),
                        rules,
                    )
                }
                None => tally.invalid += (j - i) as u64,
            }
            i = j;
        }
        drop(table);
        if let (Some(f), Some(batch)) = (policy.as_deref(), checked.as_mut()) {
            batch.finish(f);
        }
        drop(policy);
        drop(local);
        tun.flush(&dev);
        Drops::add(&dev.drops.invalid, tally.invalid);
        Drops::add(&dev.drops.bad_source, tally.bad_source);
        Drops::add(&dev.drops.unknown_peer, tally.unknown_peer);
        Drops::add(&dev.drops.not_local, tally.not_local);
    }
}

/// The policy filter's rules toward one peer, for one run.
struct Policy<'a> {
    filter: &'a Filter,
    rules: &'a filter::PeerRules,
    batch: &'a mut filter::Batch,
}

impl Policy<'_> {
    #[inline]
    fn admits(&mut self, peer: &Peer, packet: &[u8]) -> bool {
        self.filter.check(
            self.rules,
            peer.index,
            Direction::Inbound,
            packet,
            self.batch,
        )
    }
}

/// Whether a packet `peer` sent (decrypted, from `src`) goes to the TUN: its source is
/// the peer's, its destination this node's (`local`, for network peers) and the policy
/// lets it in. Counts why not.
#[inline]
fn deliverable(
    table: &PeerTable,
    peer: &Arc<Peer>,
    src: std::net::IpAddr,
    packet: &[u8],
    local: Option<&LocalSet>,
    policy: &mut Option<Policy<'_>>,
    tally: &mut Tally,
) -> bool {
    if !source_allowed(table, peer, src) {
        tally.bad_source += 1;
        false
    } else if local.is_some_and(|l| !l.admits(packet)) {
        tally.not_local += 1;
        false
    } else {
        policy.as_mut().is_none_or(|p| p.admits(peer, packet))
    }
}

/// Decrypts consecutive data messages for `peer` under one lock of its `Tunn`; `local`
/// is where its packets may go (`None`: anywhere its route leads, for static peers);
/// `policy` filters what decrypts (`None`: the peer is not filtered).
#[allow(clippy::too_many_arguments)] // the batch's parts; a struct would only rename them
fn decrypt_run(
    dev: &Device,
    table: &PeerTable,
    peer: &Arc<Peer>,
    items: &[Item],
    rx: &[u8],
    tun: &mut TunBatch,
    tally: &mut Tally,
    local: Option<&LocalSet>,
    mut policy: Option<Policy<'_>>,
) {
    let mut authenticated_from = None;
    // Data (not keepalives: those only keep what is active alive) makes the peer active.
    let mut data = false;
    let mut tunn = peer.tunn.lock();
    for item in items {
        if tun.is_full() {
            tun.flush(dev);
        }
        let datagram = &rx[item.start..item.start + item.len];
        let slot = tun.slot(datagram.len());
        let direct = match item.via {
            Via::Direct(a) => Some(a),
            Via::Relay { .. } => None,
        };
        let source_ip = match item.via {
            Via::Direct(a) | Via::Relay { relay: a, .. } => a.ip(),
        };
        // A decrypted packet: (delivered, its length).
        let written = match tunn.decapsulate(Some(source_ip), datagram, &mut slot[TUN_OFFSET..]) {
            TunnResult::WriteToTunnelV4(packet, src) => Some((
                deliverable(table, peer, src.into(), packet, local, &mut policy, tally),
                packet.len(),
            )),
            TunnResult::WriteToTunnelV6(packet, src) => Some((
                deliverable(table, peer, src.into(), packet, local, &mut policy, tally),
                packet.len(),
            )),
            // An authenticated keepalive.
            TunnResult::Done => {
                authenticated_from = direct.or(authenticated_from);
                None
            }
            TunnResult::WriteToNetwork(reply) => {
                dev.send_via(item.via, reply);
                None
            }
            TunnResult::Err(e) => {
                tracing::trace!(peer = %peer.public_key.fingerprint(), "decapsulate: {e:?}");
                tally.invalid += 1;
                None
            }
        };
        if let Some((delivered, len)) = written {
            data = true;
            authenticated_from = direct.or(authenticated_from);
            if delivered {
                tun.commit(len);
            }
        }
    }
    drop(tunn);
    if data && peer.touch() {
        dev.wake(peer);
    }
    if let Some(from) = authenticated_from {
        if peer.observe_source(from, Instant::now()) {
            tracing::info!(peer = %peer.public_key.fingerprint(), endpoint = %from, "peer endpoint changed");
        }
    }
}

/// Cryptokey routing, inbound: the packet's source must route back to the peer that sent it.
#[inline]
fn source_allowed(table: &PeerTable, peer: &Arc<Peer>, src: std::net::IpAddr) -> bool {
    table.route(src).is_some_and(|p| Arc::ptr_eq(p, peer))
}

/// Handshake initiation, response or cookie reply (or garbage).
fn handshake(
    dev: &Device,
    table: &PeerTable,
    datagram: &[u8],
    via: Via,
    scratch: &mut [u8],
    tally: &mut Tally,
) {
    let from = match via {
        Via::Direct(a) | Via::Relay { relay: a, .. } => a,
    };
    let mut cookie = [0u8; 64];
    // An initiation (type 1) or a response (type 2), not a cookie reply (3), completes a
    // handshake if it proves authentic below.
    let completes = matches!(datagram.first(), Some(1 | 2));
    let peer = match dev
        .rate_limiter
        .verify_packet(Some(from.ip()), datagram, &mut cookie)
    {
        Err(TunnResult::WriteToNetwork(reply)) => {
            // Under load: answer with a cookie instead of doing the handshake.
            dev.send_via(via, reply);
            return;
        }
        Err(_) => {
            tally.invalid += 1;
            return;
        }
        Ok(Packet::HandshakeInit(init)) => {
            match parse_handshake_anon(&dev.static_secret, &dev.static_public, &init) {
                Ok(half) => match table.by_key.get(&Key(half.peer_static_public)) {
                    Some(p) => p,
                    None => {
                        tracing::debug!(from = %from, key = %Key(half.peer_static_public).fingerprint(), "handshake from unknown key");
                        tally.unknown_peer += 1;
                        return;
                    }
                },
                Err(_) => {
                    tally.invalid += 1;
                    return;
                }
            }
        }
        Ok(Packet::HandshakeResponse(resp)) => {
            match table.by_index.get(&(resp.receiver_idx >> 8)) {
                Some(p) => p,
                None => {
                    tally.invalid += 1;
                    return;
                }
            }
        }
        Ok(Packet::PacketCookieReply(reply)) => {
            match table.by_index.get(&(reply.receiver_idx >> 8)) {
                Some(p) => p,
                None => {
                    tally.invalid += 1;
                    return;
                }
            }
        }
        // Data messages with a nonzero reserved field end up here.
        Ok(Packet::PacketData(_)) => {
            tally.invalid += 1;
            return;
        }
    };

    let mut tunn = peer.tunn.lock();
    let mut result = tunn.decapsulate(Some(from.ip()), datagram, scratch);
    let mut authenticated = false;
    loop {
        match result {
            TunnResult::WriteToNetwork(packet) => {
                // A handshake response, a confirming keepalive, or queued data: all prove
                // that the message we got was authentic.
                authenticated = true;
                dev.send_via(via, packet);
                result = tunn.decapsulate(None, &[], scratch);
            }
            TunnResult::Err(e) => {
                tracing::debug!(peer = %peer.public_key.fingerprint(), "handshake: {e:?}");
                tally.invalid += 1;
                break;
            }
            _ => break,
        }
    }
    drop(tunn);
    if authenticated && completes {
        peer.handshake_completed();
    }
    // A peer that handshakes has something to send (idle peers send nothing).
    if authenticated && peer.touch() {
        dev.wake(peer);
    }
    let direct = matches!(via, Via::Direct(_));
    if authenticated && direct && peer.observe_source(from, Instant::now()) {
        tracing::info!(peer = %peer.public_key.fingerprint(), endpoint = %from, "peer endpoint changed");
    }
}
