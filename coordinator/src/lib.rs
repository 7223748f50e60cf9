//! The wiremesh coordinator: networks, members, overlay addresses, join tokens, and the
//! netmaps it pushes to nodes over QUIC; an admin HTTP API on the side.
//!
//! Shape: a state core ([`state`]: one async mutex, a [`store::Store`] behind it, a
//! `watch` channel of immutable [`snapshot::Snapshot`]s per network) with two IO shells,
//! [`quic`] + [`session`] for nodes and [`http`] for admins. Pure pieces ([`ipam`],
//! [`snapshot`], [`model`] validation) are unit-tested in place; the session logic runs over
//! any byte stream so its tests need no QUIC.
//!
//! What it leaves out: relaying traffic, NAT reflection and TLS on the admin API (later
//! issues); it never sees a node's private key.

pub mod config;
pub mod frame;
pub mod http;
pub mod identity;
pub mod ipam;
pub mod model;
pub mod quic;
pub mod session;
pub mod snapshot;
pub mod state;
pub mod store;

pub use state::Coordinator;

#[cfg(test)]
mod testutil;
