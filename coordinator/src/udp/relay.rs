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
//! **Architecture Invariant:** the forwarding path allocates nothing and takes one lock
//! (the registration table) once per datagram; DELIVER is written over the SEND header in
//! the receive buffer (both headers are [`relay::HEADER_LEN`] bytes) and sent from there.
//!
//! [`Relay`] is the core (no socket: a datagram in, what to send out); [`serve`] is the
//! IO loop around one UDP socket.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use mesh_proto::control::ct_eq;
use mesh_proto::relay::{
    self, Frame, CHALLENGE, DELIVER, REGISTERED, REGISTER_INTERVAL_SECS, SHORT_LEN,
};
use mesh_proto::Key;
use tokio::net::UdpSocket;

use crate::control::membership::Membership;
use crate::control::state::{Clock, Coordinator};
use crate::control::stats::{NatStats, RelayStats};

/// A registration not refreshed for this long is gone.
pub const EXPIRY_SECS: u64 = 3 * REGISTER_INTERVAL_SECS;
/// Datagrams handled per wake-up before yielding to other tasks.
const BATCH: usize = 64;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

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

/// The relay's decisions and registrations (see the module docs).
pub struct Relay {
    secret: Key,
    membership: Arc<ArcSwap<Membership>>,
    stats: Arc<NatStats>,
    table: Mutex<Table>,
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
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
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
                Some((from, SHORT_LEN))
            }
            Some(Frame::Register { key, cookie, proof }) => {
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
                self.table().register(key, from, now);
                c.registered.inc();
                relay::write_short(buf, REGISTERED, &key, &current);
                Some((from, SHORT_LEN))
            }
            Some(Frame::Send { to, payload }) => {
                let payload_len = payload.len();
                let (sender, dest) = {
                    let table = self.table();
                    let Some(sender) = table.member_at(&from, now) else {
                        c.dropped_unregistered_source.inc();
                        return None;
                    };
                    (sender, table.address_of(&to, now))
                };
                let membership = self.membership.load();
                if !membership.is_member(&sender) {
                    c.dropped_sender_unauthorized.inc();
                    return None;
                }
                if !membership.share_network(&sender, &to) {
                    c.dropped_other_network.inc();
                    return None;
                }
                let Some(dest) = dest else {
                    c.dropped_unregistered_destination.inc();
                    return None;
                };
                relay::write_header(buf, DELIVER, &sender);
                c.forwarded_packets.inc();
                c.forwarded_bytes.add(payload_len as u64);
                Some((dest, buf.len()))
            }
            Some(Frame::Deliver { .. } | Frame::Registered { .. } | Frame::Challenge { .. })
            | None => {
                c.dropped_malformed.inc();
                None
            }
        }
    }

    /// Drops registrations not refreshed within [`EXPIRY_SECS`] of `now`.
    pub fn expire(&self, now: u64) -> usize {
        let n = self.table().expire(now);
        self.counters().expired.add(n as u64);
        n
    }

    /// Registrations held (live or not yet swept).
    pub fn registrations(&self) -> usize {
        self.table().by_key.len()
    }
}

/// Relays on `socket` until the task is dropped: a batch of datagrams per wake-up, each
/// answered or forwarded at once; expired registrations swept every register interval.
pub async fn serve(socket: UdpSocket, relay: Arc<Relay>, clock: Arc<dyn Clock>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
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
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if let Some((to, len)) = relay.handle(now, from, &mut buf[..n]) {
                                if let Err(e) = socket.try_send_to(&buf[..len], to) {
                                    tracing::trace!(%to, "relay send: {e}");
                                    relay.counters().send_failed.inc();
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors for earlier sends and the like: next datagram.
                        Err(e) => tracing::trace!("relay receive: {e}"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
