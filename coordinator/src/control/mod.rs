//! The control plane: the state core ([`state`]: networks, members, tokens, the one mutex
//! and its [`crate::store::Store`]) and what nodes talk to: the QUIC endpoint ([`quic`]),
//! one [`session`] per connection, the netmaps it sends ([`snapshot`]) in bounded
//! [`frame`]s. Beside the state, the pieces it keeps: addresses ([`ipam`]), who is
//! authorised where ([`membership`]), the audit log ([`audit`]), paged listings
//! ([`listing`]) and counters ([`stats`]).
//!
//! **Architecture Invariant:** imports only [`crate::model`], [`crate::store`] and
//! [`crate::identity`] from the rest of the crate; the UDP services ([`crate::udp`]) and the
//! admin side ([`crate::admin`]) build on it, never the other way round.

pub mod audit;
pub mod frame;
pub mod ipam;
pub mod listing;
pub mod membership;
pub mod quic;
pub mod session;
pub mod snapshot;
pub mod state;
pub mod stats;
pub mod views;
