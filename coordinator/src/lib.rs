//! The wiremesh coordinator: networks, members, overlay addresses, join tokens, and the
//! netmaps it pushes to nodes over QUIC; an admin HTTP API and web dashboard on the side
//! (plain HTTP on loopback, or TLS: [`admin::https`]); UDP reflectors and a relay for NAT
//! traversal.
//!
//! Shape: one folder per concern, in layers, top to bottom; a module imports only from its
//! own layer or those below it.
//!
//! | layer | what |
//! |---|---|
//! | [`admin`] | the admin side: HTTP router, JSON API, dashboard, OpenAPI, metrics, HTTPS |
//! | [`udp`] | the UDP services: reflectors and relay, on their own sockets |
//! | [`control`] | the control plane: the state core ([`control::state`]), the nodes' sessions |
//! | [`store`], [`model`] | the records and where they persist |
//!
//! The state core is one async mutex, a [`store::Store`] behind it, a `watch` channel of
//! immutable [`control::snapshot::Snapshot`]s per network, and the relay's
//! [`control::membership::Membership`] index; the IO shells are [`control::quic`] +
//! [`control::session`] for nodes, [`admin::router`] for admins, [`udp::reflector`] and
//! [`udp::relay`] on their own UDP sockets. Pure pieces ([`control::ipam`],
//! [`control::snapshot`], [`model`] validation, [`control::listing`] filters,
//! [`control::membership`], the relay's decisions) are unit-tested in place; the session
//! logic runs over any byte stream so its tests need no QUIC. Beside the layers:
//! [`identity`] (the data directory: certificate, admin token, relay secret), a leaf that
//! [`control::quic`] and [`admin::https`] read, [`limit`] (per-source rate limits, a leaf
//! too), and [`config`] (command line and file) on top, for the binary that wires
//! everything together (`serve.rs`).
//!
//! What it leaves out: admin accounts other than the one admin token, separate relay
//! processes; it
//! never sees a node's private key, and the relay never sees a payload in clear.

pub mod admin;
pub mod config;
pub mod control;
pub mod identity;
pub mod limit;
pub mod model;
pub mod store;
pub mod udp;

pub use control::state::Coordinator;

#[cfg(test)]
mod testutil;
