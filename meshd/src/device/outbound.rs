//! TUN → UDP: read a batch (a GSO super-packet split into MTU-sized packets), route each
//! packet by destination, check the policy filter for runs of packets to one network peer
//! (before the peer is woken or its lock taken: a denied packet costs no handshake, no
//! probe), encrypt runs of packets for one peer under one lock, and send runs of
//! equal-sized datagrams for one endpoint as a single GSO `sendmsg`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use boringtun::noise::{Tunn, TunnResult};
use tun_rs::{IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use mesh_proto::relay;

use super::filter::{self, Direction};
use super::peer::{Endpoint, Peer};
use super::{Device, Drops};

/// Largest IP packet the TUN can hand over after GSO splitting.
const MAX_PACKET: usize = 65535;
/// WireGuard data message overhead: type, receiver index, counter, AEAD tag.
const DATA_OVERHEAD: usize = 32;
/// Room a handshake initiation needs (`Tunn::encapsulate` may write one instead of data).
const HANDSHAKE_INIT_LEN: usize = 148;
/// Upper bound on one GSO send's payload (the kernel's limit is 64 KiB minus headers).
const GSO_MAX_BYTES: usize = 60_000;

/// A run of consecutive datagrams in the output buffer, sent with one syscall.
#[derive(Debug, Clone, Copy)]
struct Run {
    to: SocketAddr,
    start: usize,
    end: usize,
    segment: usize,
    count: usize,
    /// A shorter last segment was appended; GSO allows only one, at the end.
    closed: bool,
}

/// Appends a datagram at `[pos, pos+len)` to the last run if GSO allows it, else opens a run.
fn push_run(runs: &mut Vec<Run>, to: SocketAddr, pos: usize, len: usize, max_segments: usize) {
    if let Some(run) = runs.last_mut() {
        let fits = run.to == to
            && !run.closed
            && run.end == pos
            && run.count < max_segments
            && run.end - run.start + len <= GSO_MAX_BYTES;
        if fits && len <= run.segment {
            run.end += len;
            run.count += 1;
            run.closed = len < run.segment;
            return;
        }
    }
    runs.push(Run {
        to,
        start: pos,
        end: pos + len,
        segment: len,
        count: 1,
        closed: false,
    });
}

/// An outbound thread's body: reads TUN queue `queue` (the device's own queue when `None`).
/// Returns only if the TUN device is gone.
pub fn run(dev: Arc<Device>, queue: Option<tun_rs::SyncDevice>) {
    let tun = queue.as_ref().unwrap_or(&dev.tun);
    let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
    let mut bufs = vec![vec![0u8; MAX_PACKET]; IDEAL_BATCH_SIZE];
    let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
    let mut targets: Vec<Option<Arc<Peer>>> = vec![None; IDEAL_BATCH_SIZE];
    // The filter's verdict per packet of the run being encrypted.
    let mut allowed = [true; IDEAL_BATCH_SIZE];
    let mut out = vec![0u8; IDEAL_BATCH_SIZE * (relay::HEADER_LEN + MAX_PACKET + DATA_OVERHEAD)];
    let mut runs: Vec<Run> = Vec::with_capacity(IDEAL_BATCH_SIZE);
    let max_segments = dev.udp.max_gso_segments().max(1);

    loop {
        let n = match tun.recv_multiple(&mut original, &mut bufs, &mut sizes, 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                tracing::error!("TUN device closed: {e}");
                return;
            }
            Err(e) => {
                tracing::debug!("TUN read: {e}");
                continue;
            }
        };
        let table = dev.peers.load();
        let policy = dev.filter.load();
        let mut checked = policy.as_deref().map(|_| filter::Batch::new(filter::now()));

        // Pass 1: cryptokey routing. Consecutive packets of one flow share a destination,
        // so remember the last lookup.
        let mut no_route = 0u64;
        let mut last: Option<(IpAddr, Option<Arc<Peer>>)> = None;
        for i in 0..n {
            let dst = Tunn::dst_address(&bufs[i][..sizes[i]]);
            targets[i] = match (dst, &last) {
                (Some(d), Some((ld, lp))) if *ld == d => lp.clone(),
                (Some(d), _) => {
                    let p = table.route(d).cloned();
                    last = Some((d, p.clone()));
                    p
                }
                (None, _) => None,
            };
            if targets[i].is_none() {
                no_route += 1;
            }
        }

        // Pass 2: encrypt runs of packets for one peer under one lock.
        let mut no_endpoint = 0u64;
        let mut pos = 0usize;
        runs.clear();
        let mut i = 0;
        while i < n {
            let Some(peer) = targets[i].take() else {
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < n && targets[j].as_ref().is_some_and(|p| Arc::ptr_eq(p, &peer)) {
                targets[j] = None;
                j += 1;
            }
            // The policy, before anything is spent on the peer.
            let rules = policy.as_deref().zip(checked.as_mut()).and_then(|(f, b)| {
                Some((f, f.rules(&peer.public_key, peer.traversal.is_some())?, b))
            });
            let filtered = rules.is_some();
            if let Some((f, rules, batch)) = rules {
                let mut any = false;
                for k in i..j {
                    allowed[k] = f.check(
                        rules,
                        peer.index,
                        Direction::Outbound,
                        &bufs[k][..sizes[k]],
                        batch,
                    );
                    any |= allowed[k];
                }
                if !any {
                    i = j;
                    continue;
                }
            }
            if peer.touch() {
                dev.wake(&peer);
            }
            // Relayed datagrams carry the relay's SEND header in front, so they still form
            // equal-sized GSO runs.
            let (to, header) = match peer.endpoint() {
                Some(Endpoint::Direct(a)) => (a, 0),
                Some(Endpoint::Relay(a)) => (a, relay::HEADER_LEN),
                None => {
                    no_endpoint += (i..j).filter(|&k| !filtered || allowed[k]).count() as u64;
                    i = j;
                    continue;
                }
            };
            let now = std::time::Instant::now();
            let mut tunn = peer.tunn.lock();
            for k in i..j {
                if filtered && !allowed[k] {
                    continue;
                }
                let packet = &bufs[k][..sizes[k]];
                let room = (packet.len() + DATA_OVERHEAD).max(HANDSHAKE_INIT_LEN);
                if header > 0 {
                    relay::write_header(&mut out[pos..pos + header], relay::SEND, &peer.public_key);
                }
                match tunn.encapsulate(packet, &mut out[pos + header..pos + header + room]) {
                    TunnResult::WriteToNetwork(datagram) => {
                        peer.initiation_sent(datagram, now);
                        let len = header + datagram.len();
                        push_run(&mut runs, to, pos, len, max_segments);
                        pos += len;
                    }
                    TunnResult::Err(e) => {
                        tracing::debug!(peer = %peer.public_key.fingerprint(), "encapsulate: {e:?}");
                    }
                    // Done: queued until the handshake completes.
                    _ => {}
                }
            }
            drop(tunn);
            i = j;
        }
        drop(table);
        if let (Some(f), Some(batch)) = (policy.as_deref(), checked.as_mut()) {
            batch.finish(f);
        }
        drop(policy);
        Drops::add(&dev.drops.no_route, no_route);
        Drops::add(&dev.drops.no_endpoint, no_endpoint);

        for run in &runs {
            send_run(&dev, run, &out);
        }
    }
}

fn send_run(dev: &Device, run: &Run, out: &[u8]) {
    let contents = &out[run.start..run.end];
    let segment = (run.count > 1).then_some(run.segment);
    match dev.udp.send(run.to, contents, segment) {
        Ok(()) => {}
        Err(e) if segment.is_some() => {
            // GSO refused (quinn-udp then stops offering it): send one by one.
            tracing::debug!(to = %run.to, "GSO send failed ({e}); sending segments singly");
            for chunk in contents.chunks(run.segment) {
                if let Err(e) = dev.udp.send(run.to, chunk, None) {
                    tracing::debug!(to = %run.to, "send: {e}");
                }
            }
        }
        Err(e) => tracing::debug!(to = %run.to, "send: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn runs_follow_gso_rules() {
        let mut runs = Vec::new();
        // Three full segments, a short one (closes the run), then another full one.
        for (pos, len) in [(0, 100), (100, 100), (200, 100), (300, 40), (340, 100)] {
            push_run(&mut runs, addr(1), pos, len, 64);
        }
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (runs[0].start, runs[0].end, runs[0].count, runs[0].segment),
            (0, 340, 4, 100)
        );
        assert!(runs[0].closed);
        assert_eq!((runs[1].start, runs[1].count), (340, 1));
    }

    #[test]
    fn runs_split_on_destination_size_and_limits() {
        let mut runs = Vec::new();
        push_run(&mut runs, addr(1), 0, 100, 2);
        push_run(&mut runs, addr(2), 100, 100, 2); // other endpoint
        push_run(&mut runs, addr(2), 200, 150, 2); // bigger than the run's segment
        push_run(&mut runs, addr(2), 350, 150, 2);
        push_run(&mut runs, addr(2), 500, 150, 2); // segment limit reached
        let shape: Vec<_> = runs.iter().map(|r| (r.start, r.count)).collect();
        assert_eq!(shape, vec![(0, 1), (100, 1), (200, 2), (500, 1)]);
    }

    #[test]
    fn runs_respect_byte_limit() {
        let mut runs = Vec::new();
        let mut pos = 0;
        for _ in 0..64 {
            push_run(&mut runs, addr(1), pos, 1312, 64);
            pos += 1312;
        }
        assert!(runs.iter().all(|r| r.end - r.start <= GSO_MAX_BYTES));
        assert_eq!(runs.iter().map(|r| r.count).sum::<usize>(), 64);
    }
}
