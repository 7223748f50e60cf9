//! The relay ([`mesh_proto::relay`] has the wire format): members without a direct path
//! send their WireGuard datagrams here, addressed to a member's key, and the relay passes
//! them on. Payloads stay end-to-end encrypted; the relay decides only whether to forward.
//!
//! ```text
//! HELLO key            key authorised in some network          → CHALLENGE key cookie for
//!                                                              the source address, now
//! REGISTER key cookie proof
//!                      cookie == relay::cookie(secret, window, source addr, key)
//!                      for this window or the previous one,
//!                      proof == relay::proof(token(secret, key), cookie, key)
//!                      (both constant time), key authorised    → bind source addr ↔ key,
//!                                                             answer REGISTERED key
//!                                                             next cookie
//! SEND to payload      source addr registered (not expired)
//!                      sender still authorised
//!                      sender and `to` authorised in one network
//!                      `to` registered (not expired)          → DELIVER from=sender
//!                                                             to `to`'s address
//! anything else        dropped, counted by reason (crate::control::stats::RelayStats)
//! ```
//!
//! Answers are written over the question in the receive buffer and are never longer than
//! it. Registration costs at most four SHA-256 hashes of short inputs, and only
//! REGISTER and HELLO pay it; SEND pays none.
//!
//! Registrations last [`EXPIRY_SECS`] (three register intervals) after their last
//! refresh. Authorisation is read per datagram from [`Membership`], which the state
//! replaces whenever a member is authorised, deauthorised or deleted: revocation takes
//! effect with the next datagram, without touching the registrations.
//!
//! **Architecture Invariant:** the forwarding path allocates nothing and takes no lock per
//! datagram. Datagrams arrive in batches (`recvmmsg`) of trains (UDP GRO: one buffer holds
//! several datagrams of one source, `stride` bytes each); DELIVER is written over the SEND
//! header in place (both headers are [`relay::HEADER_LEN`] bytes), so a train of SENDs to
//! one member becomes a train of DELIVERs of the same stride and leaves as one `sendmsg`
//! with `UDP_SEGMENT` (GSO). The registration table is read-mostly (an `RwLock` written
//! only by REGISTER and the sweep) and is read once per run of SENDs from one source to
//! one destination within a train (`Memo`); forwarding counters are added once per
//! train. The decisions are exactly those of one datagram at a time: the memo is reused
//! only while nothing was registered in between and the membership (loaded per datagram,
//! wait-free) is the same, so revocation still takes effect with the next datagram.
//!
//! [`Relay`] is the core (no socket: a train in, what to send out); [`serve`] is the
//! IO loop around one UDP socket (quinn-udp's batched IO).

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use mesh_proto::control::ct_eq;
use mesh_proto::relay::{
    self, Frame, CHALLENGE, DELIVER, REGISTERED, REGISTER_INTERVAL_SECS, SHORT_LEN,
};
use mesh_proto::Key;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::control::membership::Membership;
use crate::control::state::{Clock, Coordinator};
use crate::control::stats::{NatStats, RelayStats};

/// A registration not refreshed for this long is gone.
pub const EXPIRY_SECS: u64 = 3 * REGISTER_INTERVAL_SECS;
/// `recvmmsg` calls per wake-up before yielding to other tasks.
const BATCH: usize = 8;
/// Largest UDP payload, and the room for one GRO train.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams of one train decided before their runs are sent (the kernel's GRO makes
/// at most 64).
const MAX_SEGMENTS: usize = 64;
/// Trains received per `recvmmsg`.
const SLOTS: usize = quinn_udp::BATCH_SIZE;
/// Bytes of one GSO send at most (below the 64 KiB of an IP packet, as meshd's).
const MAX_GSO_BYTES: usize = 60_000;

#[derive(Debug, Clone, Copy)]
struct Registration {
    addr: SocketAddr,
    /// Unix seconds of the last REGISTER.
    refreshed: u64,
}

impl Registration {
    fn live(&self, now: u64) -> bool {
        now < self.refreshed.saturating_add(EXPIRY_SECS)
    }
}

/// Source address ↔ key, both ways; one address per key, one key per address.
#[derive(Debug, Default)]
struct Table {
    by_addr: HashMap<SocketAddr, Key>,
    by_key: HashMap<Key, Registration>,
}

impl Table {
    fn register(&mut self, key: Key, addr: SocketAddr, now: u64) {
        let new = Registration {
            addr,
            refreshed: now,
        };
        // The member moved (NAT rebinding): its old address no longer speaks for it.
        if let Some(old) = self.by_key.insert(key, new) {
            if old.addr != addr && self.by_addr.get(&old.addr) == Some(&key) {
                self.by_addr.remove(&old.addr);
            }
        }
        // The address was another member's (a NAT reused the port): that one is gone.
        if let Some(prev) = self.by_addr.insert(addr, key) {
            if prev != key && self.by_key.get(&prev).is_some_and(|r| r.addr == addr) {
                self.by_key.remove(&prev);
            }
        }
    }

    /// The member registered at `addr`, if its registration is live.
    fn member_at(&self, addr: &SocketAddr, now: u64) -> Option<Key> {
        let key = self.by_addr.get(addr)?;
        let reg = self.by_key.get(key)?;
        (reg.addr == *addr && reg.live(now)).then_some(*key)
    }

    /// Where `key` is registered, if its registration is live.
    fn address_of(&self, key: &Key, now: u64) -> Option<SocketAddr> {
        self.by_key.get(key).filter(|r| r.live(now)).map(|r| r.addr)
    }

    /// Drops expired registrations; returns how many.
    fn expire(&mut self, now: u64) -> usize {
        let before = self.by_key.len();
        self.by_key.retain(|_, r| r.live(now));
        let by_key = &self.by_key;
        self.by_addr
            .retain(|addr, key| by_key.get(key).is_some_and(|r| r.addr == *addr));
        before - self.by_key.len()
    }
}

/// What a SEND from one source to one destination gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// DELIVER from the sender (its key) to this address.
    Forward(Key, SocketAddr),
    /// Dropped, for this reason.
    Drop(SendDrop),
}

/// Why a SEND was dropped (one [`RelayStats`] counter each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendDrop {
    UnregisteredSource,
    SenderUnauthorized,
    OtherNetwork,
    UnregisteredDestination,
}

/// The verdict of the last SEND of a train, reused for the next SENDs of the same train
/// to the same destination: the source and the time are the same for all of them, the
/// table too as long as no REGISTER came in between (which clears the memo; the sweep
/// runs between trains), and the membership is checked to be the same one.
#[derive(Default)]
struct Memo(Option<(Key, Verdict, Arc<Membership>)>);

impl Memo {
    fn get(&self, to: &Key, membership: &Arc<Membership>) -> Option<Verdict> {
        match &self.0 {
            Some((k, v, m)) if k == to && Arc::ptr_eq(m, membership) => Some(*v),
            _ => None,
        }
    }
}

/// What to do with one datagram of a train: send `len` bytes from its start to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Out {
    to: SocketAddr,
    len: usize,
}

/// One send of a train: `contents` to `to`, as GSO segments of `segment` bytes when it
/// holds more than one datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct Run<'a> {
    /// Where to.
    pub to: SocketAddr,
    /// The datagram(s), back to back.
    pub contents: &'a [u8],
    /// The segment size when `contents` holds several datagrams (the last may be shorter).
    pub segment: Option<usize>,
}

/// Per-train tallies, added to the shared counters once per train.
#[derive(Debug, Default)]
struct Tally {
    packets: u64,
    bytes: u64,
}

/// The relay's decisions and registrations (see the module docs).
pub struct Relay {
    secret: Key,
    membership: Arc<ArcSwap<Membership>>,
    stats: Arc<NatStats>,
    table: RwLock<Table>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("registrations", &self.registrations())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay with `secret` (tokens are `relay::token(secret, key)`), reading who is
    /// authorised where from `coord` and counting into its stats.
    pub fn new(secret: Key, coord: &Coordinator) -> Relay {
        Relay {
            secret,
            membership: coord.membership(),
            stats: coord.stats().clone(),
            table: RwLock::new(Table::default()),
        }
    }

    fn table(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn table_mut(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    fn counters(&self) -> &RelayStats {
        &self.stats.relay
    }

    /// Handles one datagram `buf` that arrived from `from` at `now` (Unix seconds). When
    /// something is to be sent, it has been written to the front of `buf`: send
    /// `buf[..len]` to the returned address.
    pub fn handle(
        &self,
        now: u64,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        let mut tally = Tally::default();
        let out = self.decide(now, from, buf, &mut Memo::default(), &mut tally);
        self.add(&tally);
        out.map(|o| (o.to, o.len))
    }

    /// Handles a train: the datagrams of `buf`, `stride` bytes each (the last may be
    /// shorter), all from `from`, as GRO delivers them. Each is decided as [`Relay::handle`]
    /// would; then `send` is called for every run of consecutive answers or forwards to
    /// one address, as one GSO send where they have the stride.
    pub fn handle_train(
        &self,
        now: u64,
        from: SocketAddr,
        buf: &mut [u8],
        stride: usize,
        max_segments: usize,
        mut send: impl FnMut(Run<'_>),
    ) {
        let stride = stride.max(1);
        let max_segments = max_segments
            .clamp(1, MAX_SEGMENTS)
            .min((MAX_GSO_BYTES / stride).max(1));
        let mut memo = Memo::default();
        let mut tally = Tally::default();
        let mut outs = [None::<Out>; MAX_SEGMENTS];
        if buf.is_empty() {
            // An empty datagram is one datagram too: malformed, counted, never answered.
            let _ = self.decide(now, from, buf, &mut memo, &mut tally);
        }
        let mut chunk_start = 0;
        while chunk_start < buf.len() {
            let chunk_end = buf.len().min(chunk_start + MAX_SEGMENTS * stride);
            let mut n = 0;
            let mut at = chunk_start;
            while at < chunk_end {
                let end = chunk_end.min(at + stride);
                outs[n] = self.decide(now, from, &mut buf[at..end], &mut memo, &mut tally);
                n += 1;
                at = end;
            }
            emit_runs(
                &buf[chunk_start..chunk_end],
                stride,
                &outs[..n],
                max_segments,
                &mut send,
            );
            chunk_start = chunk_end;
        }
        self.add(&tally);
    }

    fn add(&self, tally: &Tally) {
        if tally.packets > 0 {
            let c = self.counters();
            c.forwarded_packets.add(tally.packets);
            c.forwarded_bytes.add(tally.bytes);
        }
    }

    /// One datagram: what to send (written to the front of `buf`), if anything.
    fn decide(
        &self,
        now: u64,
        from: SocketAddr,
        buf: &mut [u8],
        memo: &mut Memo,
        tally: &mut Tally,
    ) -> Option<Out> {
        let c = self.counters();
        match relay::parse(buf) {
            Some(Frame::Hello { key }) => {
                if !self.membership.load().is_member(&key) {
                    c.dropped_not_member.inc();
                    return None;
                }
                let cookie = relay::cookie(&self.secret, relay::epoch(now), &from, &key);
                relay::write_short(buf, CHALLENGE, &key, &cookie);
                c.challenged.inc();
                Some(Out {
                    to: from,
                    len: SHORT_LEN,
                })
            }
            Some(Frame::Register { key, cookie, proof }) => {
                // Whatever happens, later SENDs of this train look at the table again.
                memo.0 = None;
                let window = relay::epoch(now);
                let current = relay::cookie(&self.secret, window, &from, &key);
                let fresh = ct_eq(&current.0, &cookie.0)
                    || (window > 0
                        && ct_eq(
                            &relay::cookie(&self.secret, window - 1, &from, &key).0,
                            &cookie.0,
                        ));
                if !fresh {
                    c.dropped_stale_cookie.inc();
                    return None;
                }
                let token = relay::token(&self.secret, &key);
                if !ct_eq(&relay::proof(&token, &cookie, &key).0, &proof.0) {
                    c.dropped_bad_token.inc();
                    return None;
                }
                if !self.membership.load().is_member(&key) {
                    c.dropped_not_member.inc();
                    return None;
                }
                self.table_mut().register(key, from, now);
                c.registered.inc();
                relay::write_short(buf, REGISTERED, &key, &current);
                Some(Out {
                    to: from,
                    len: SHORT_LEN,
                })
            }
            Some(Frame::Send { to, payload }) => {
                let payload_len = payload.len();
                // One wait-free load per datagram: a (de)authorisation applies to the
                // very next datagram, as the memo is not reused across it.
                let membership = self.membership.load();
                let verdict = match memo.get(&to, &membership) {
                    Some(v) => v,
                    None => {
                        let v = self.send_verdict(now, from, &to, &membership);
                        memo.0 = Some((to, v, Arc::clone(&membership)));
                        v
                    }
                };
                match verdict {
                    Verdict::Forward(sender, dest) => {
                        relay::write_header(buf, DELIVER, &sender);
                        tally.packets += 1;
                        tally.bytes += payload_len as u64;
                        Some(Out {
                            to: dest,
                            len: buf.len(),
                        })
                    }
                    Verdict::Drop(why) => {
                        match why {
                            SendDrop::UnregisteredSource => &c.dropped_unregistered_source,
                            SendDrop::SenderUnauthorized => &c.dropped_sender_unauthorized,
                            SendDrop::OtherNetwork => &c.dropped_other_network,
                            SendDrop::UnregisteredDestination => {
                                &c.dropped_unregistered_destination
                            }
                        }
                        .inc();
                        None
                    }
                }
            }
            Some(Frame::Deliver { .. } | Frame::Registered { .. } | Frame::Challenge { .. })
            | None => {
                c.dropped_malformed.inc();
                None
            }
        }
    }

    /// The rules for a SEND from `from` to `to` (see the module docs), in their order.
    fn send_verdict(
        &self,
        now: u64,
        from: SocketAddr,
        to: &Key,
        membership: &Membership,
    ) -> Verdict {
        let (sender, dest) = {
            let table = self.table();
            let Some(sender) = table.member_at(&from, now) else {
                return Verdict::Drop(SendDrop::UnregisteredSource);
            };
            (sender, table.address_of(to, now))
        };
        if !membership.is_member(&sender) {
            return Verdict::Drop(SendDrop::SenderUnauthorized);
        }
        if !membership.share_network(&sender, to) {
            return Verdict::Drop(SendDrop::OtherNetwork);
        }
        match dest {
            Some(dest) => Verdict::Forward(sender, dest),
            None => Verdict::Drop(SendDrop::UnregisteredDestination),
        }
    }

    /// Drops registrations not refreshed within [`EXPIRY_SECS`] of `now`.
    pub fn expire(&self, now: u64) -> usize {
        let n = self.table_mut().expire(now);
        self.counters().expired.add(n as u64);
        n
    }

    /// Registrations held (live or not yet swept).
    pub fn registrations(&self) -> usize {
        self.table().by_key.len()
    }
}

/// Groups the decisions `outs` for the datagrams of `train` (`stride` bytes each) into
/// sends: consecutive datagrams to one address whose earlier ones are whole strides go out
/// together (GSO: equal segments, the last may be shorter), at most `max_segments` at once.
fn emit_runs(
    train: &[u8],
    stride: usize,
    outs: &[Option<Out>],
    max_segments: usize,
    send: &mut impl FnMut(Run<'_>),
) {
    let mut i = 0;
    while i < outs.len() {
        let Some(first) = outs[i] else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        let mut last = first;
        while j < outs.len() && j - i < max_segments && last.len == stride {
            match outs[j] {
                Some(o) if o.to == first.to => last = o,
                _ => break,
            }
            j += 1;
        }
        let start = i * stride;
        let end = (j - 1) * stride + last.len;
        send(Run {
            to: first.to,
            contents: &train[start..end],
            segment: (j - i > 1).then_some(stride),
        });
        i = j;
    }
}

/// Relays on `socket` until the task is dropped: batches of trains per wake-up (quinn-udp:
/// `recvmmsg` with GRO), each train's answers and forwards sent at once (GSO runs);
/// expired registrations swept every register interval.
pub async fn serve(socket: UdpSocket, relay: Arc<Relay>, clock: Arc<dyn Clock>) {
    let state = match UdpSocketState::new((&socket).into()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("relay socket: {e}");
            return;
        }
    };
    // One buffer for the batch, a train per slot; allocated once.
    let mut bufs = vec![0u8; SLOTS * MAX_DATAGRAM];
    let mut meta = [RecvMeta::default(); SLOTS];
    let period = Duration::from_secs(REGISTER_INTERVAL_SECS);
    // The first sweep one period from now: at start there is nothing to sweep.
    let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sweep.tick() => {
                let n = relay.expire(clock.now());
                if n > 0 {
                    tracing::debug!(expired = n, "relay registrations expired");
                }
            }
            ready = socket.readable() => {
                if let Err(e) = ready {
                    tracing::warn!("relay socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let now = clock.now();
                for _ in 0..BATCH {
                    let received = {
                        let mut chunks = bufs.chunks_mut(MAX_DATAGRAM);
                        let mut slices: [IoSliceMut<'_>; SLOTS] = std::array::from_fn(|_| {
                            IoSliceMut::new(chunks.next().unwrap_or_default())
                        });
                        socket.try_io(Interest::READABLE, || {
                            state.recv((&socket).into(), &mut slices, &mut meta)
                        })
                    };
                    match received {
                        Ok(n) => {
                            let trains = bufs.chunks_mut(MAX_DATAGRAM);
                            for (m, buf) in meta.iter().zip(trains).take(n) {
                                let len = m.len.min(buf.len());
                                let stride = if m.stride == 0 { len } else { m.stride };
                                relay.handle_train(
                                    now,
                                    m.addr,
                                    &mut buf[..len],
                                    stride,
                                    state.max_gso_segments(),
                                    |out| send(&socket, &state, &relay, out),
                                );
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors for earlier sends and the like: next batch.
                        Err(e) => tracing::trace!("relay receive: {e}"),
                    }
                }
            }
        }
    }
}

/// Sends one run without waiting: a full socket buffer drops it (counted), as UDP would.
fn send(socket: &UdpSocket, state: &UdpSocketState, relay: &Relay, out: Run<'_>) {
    let transmit = Transmit {
        destination: out.to,
        ecn: None,
        contents: out.contents,
        segment_size: out.segment,
        src_ip: None,
    };
    if let Err(e) = socket.try_io(Interest::WRITABLE, || {
        state.try_send(socket.into(), &transmit)
    }) {
        tracing::trace!(to = %out.to, "relay send: {e}");
        let segments = out.segment.map_or(1, |s| out.contents.len().div_ceil(s));
        relay.counters().send_failed.add(segments as u64);
    }
}

#[cfg(test)]
mod tests;
