//! Counters, kept in the state so the metrics endpoint ([`crate::admin::metrics`]) can read
//! them: the control plane's ([`ControlStats`]) and the UDP services' ([`NatStats`]: the
//! reflectors and the relay write them on their packet paths). The state holds one of each
//! ([`crate::Coordinator::control_stats`], [`crate::Coordinator::stats`]).
//!
//! Plain relaxed atomics: they are written on the packet paths and only ever read as a
//! whole for display, so no ordering between them is promised. [`NatStats::read`] gives a
//! plain copy.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// One counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Control-plane counters.
#[derive(Debug, Default)]
pub struct ControlStats {
    /// Successful admissions (session starts).
    pub joins: Counter,
    /// Netmaps (full or as changes) about to be sent to a member.
    pub netmap_pushes: Counter,
    /// Writes redone because another coordinator changed the network first.
    pub races: Counter,
    /// Join attempts that failed on their token or network (bad secret, unknown token or
    /// network, a token of another network): what an online guesser produces.
    pub join_failures: Counter,
    /// Joins with a token refused unheard because their source failed too often.
    pub join_rate_limited: Counter,
    /// QUIC connection attempts ignored because their source tried too often.
    pub handshakes_rate_limited: Counter,
    /// QUIC connection attempts refused because the coordinator holds its maximum.
    pub handshakes_refused_full: Counter,
}

/// Both reflectors together.
#[derive(Debug, Default)]
pub struct ReflectorStats {
    /// Well-formed reflection requests received.
    pub requests: Counter,
    /// Responses sent.
    pub answered: Counter,
    /// Requests dropped by the per-source-IP rate limit.
    pub rate_limited: Counter,
    /// Datagrams that were not a reflection request (dropped).
    pub invalid: Counter,
    /// Responses the socket refused (dropped).
    pub send_failed: Counter,
}

/// The relay. Every datagram ends in exactly one of `registered`, `challenged`,
/// `forwarded_packets` or a `dropped_*` counter (`send_failed` comes on top of the
/// answered and forwarded ones).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// REGISTERs accepted (answered with REGISTERED).
    pub registered: Counter,
    /// HELLOs of members answered with a CHALLENGE.
    pub challenged: Counter,
    /// SENDs forwarded as DELIVER.
    pub forwarded_packets: Counter,
    /// Payload bytes forwarded (without the relay header).
    pub forwarded_bytes: Counter,
    /// Not a relay datagram, or one only the relay sends (DELIVER, REGISTERED,
    /// CHALLENGE), or the old REGISTER with the token in clear.
    pub dropped_malformed: Counter,
    /// REGISTER whose cookie is not the relay's for this source address in the current or
    /// previous window (replayed from elsewhere, or too old).
    pub dropped_stale_cookie: Counter,
    /// REGISTER with a fresh cookie but a proof not made with the key's token.
    pub dropped_bad_token: Counter,
    /// HELLO or REGISTER (good proof) for a key that is not an authorised member of any
    /// network.
    pub dropped_not_member: Counter,
    /// SEND from an address no member is registered at (or whose registration expired).
    pub dropped_unregistered_source: Counter,
    /// SEND from a registered member that is no longer authorised anywhere.
    pub dropped_sender_unauthorized: Counter,
    /// SEND to a key that is not an authorised member of a network the sender is in.
    pub dropped_other_network: Counter,
    /// SEND to a member of the sender's network that is not registered (or expired).
    pub dropped_unregistered_destination: Counter,
    /// Replies or forwards the socket refused (full send buffer, unreachable).
    pub send_failed: Counter,
    /// Registrations removed because they were not refreshed in time.
    pub expired: Counter,
}

/// Counters of every UDP service.
#[derive(Debug, Default)]
pub struct NatStats {
    /// The reflectors.
    pub reflector: ReflectorStats,
    /// The relay.
    pub relay: RelayStats,
}

/// A copy of [`ReflectorStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReflectorCounts {
    pub requests: u64,
    pub answered: u64,
    pub rate_limited: u64,
    pub invalid: u64,
    pub send_failed: u64,
}

/// A copy of [`RelayStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RelayCounts {
    pub registered: u64,
    pub challenged: u64,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped_malformed: u64,
    pub dropped_stale_cookie: u64,
    pub dropped_bad_token: u64,
    pub dropped_not_member: u64,
    pub dropped_unregistered_source: u64,
    pub dropped_sender_unauthorized: u64,
    pub dropped_other_network: u64,
    pub dropped_unregistered_destination: u64,
    pub send_failed: u64,
    pub expired: u64,
}

/// A copy of [`NatStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NatCounts {
    /// The reflectors.
    pub reflector: ReflectorCounts,
    /// The relay.
    pub relay: RelayCounts,
}

impl NatStats {
    /// The counters now.
    pub fn read(&self) -> NatCounts {
        let (f, r) = (&self.reflector, &self.relay);
        NatCounts {
            reflector: ReflectorCounts {
                requests: f.requests.get(),
                answered: f.answered.get(),
                rate_limited: f.rate_limited.get(),
                invalid: f.invalid.get(),
                send_failed: f.send_failed.get(),
            },
            relay: RelayCounts {
                registered: r.registered.get(),
                challenged: r.challenged.get(),
                forwarded_packets: r.forwarded_packets.get(),
                forwarded_bytes: r.forwarded_bytes.get(),
                dropped_malformed: r.dropped_malformed.get(),
                dropped_stale_cookie: r.dropped_stale_cookie.get(),
                dropped_bad_token: r.dropped_bad_token.get(),
                dropped_not_member: r.dropped_not_member.get(),
                dropped_unregistered_source: r.dropped_unregistered_source.get(),
                dropped_sender_unauthorized: r.dropped_sender_unauthorized.get(),
                dropped_other_network: r.dropped_other_network.get(),
                dropped_unregistered_destination: r.dropped_unregistered_destination.get(),
                send_failed: r.send_failed.get(),
                expired: r.expired.get(),
            },
        }
    }
}
