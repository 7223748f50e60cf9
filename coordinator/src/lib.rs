//! The wiremesh coordinator: networks, members, overlay addresses, join tokens, and the
//! netmaps it pushes to nodes over QUIC; an admin HTTP API and web dashboard on the side
//! (plain HTTP on loopback, or TLS: [`https`]); UDP reflectors and a relay for NAT traversal.
//!
//! Shape: a state core ([`state`]: one async mutex, a [`store::Store`] behind it, a
//! `watch` channel of immutable [`snapshot::Snapshot`]s per network, and the relay's
//! [`membership::Membership`] index) with IO shells: [`quic`] + [`session`] for nodes,
//! [`http`] + [`web`] for admins, [`reflector`] and [`relay`] on their own UDP sockets. Pure pieces
//! ([`ipam`], [`snapshot`], [`model`] validation, [`listing`] filters, [`membership`], the
//! relay's decisions) are unit-tested in place; the session logic runs over any byte stream so its tests need
//! no QUIC.
//!
//! What it leaves out: admin accounts other than the one admin token, separate relay
//! processes; it
//! never sees a node's private key, and the relay never sees a payload in clear.

pub mod audit;
pub mod config;
pub mod frame;
pub mod http;
pub mod https;
pub mod identity;
pub mod ipam;
pub mod listing;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod quic;
pub mod reflector;
pub mod relay;
pub mod session;
pub mod snapshot;
pub mod state;
pub mod stats;
pub mod store;
pub mod udp;
pub mod web;

pub use state::Coordinator;

#[cfg(test)]
mod testutil;
