//! wiremesh's protocol core.
//!
//! **Architecture Invariant:** this crate never opens a socket, never reads the clock and
//! never draws randomness; time and randomness are passed in by the IO shells (`meshd`,
//! `coordinator`). CI checks that `cargo tree -p mesh-proto -e normal` lists none of
//! tokio, quinn, tun-rs or socket2.
//!
//! What lives here:
//! - [`key`]: WireGuard keys in their base64 text form (what `wg genkey`/`wg pubkey` print).
//! - [`allowed_ips`]: the cryptokey routing table (longest-prefix match over peers).
//! - [`api`]: the messages `meshctl` and `meshd` exchange over the local unix socket.
//! - [`netmap`]: a member's view of its network, and changes to it as data ([`netmap::diff`]).
//! - [`admin`]: the coordinator admin HTTP API bodies.
//! - [`control`]: the node ↔ coordinator protocol, join tokens, certificate pins.
//! - [`wire`]: the binary encoding of netmaps and changes, encoded once, sent to every member.
//! - [`dns`]: names for members (`<name>.<network>.<domain>`): labels, collisions, and a
//!   zone answering DNS queries as bytes (hickory-proto).
//! - [`policy`]: the policy document between members, its evaluation, and the per-node
//!   filters compiled from it (port tables for the packet path).
//!
//! What does not: anything that encrypts (boringtun, in `meshd`), anything that does IO.

pub mod admin;
pub mod allowed_ips;
pub mod api;
pub mod control;
pub mod disco;
pub mod dns;
pub mod key;
pub mod netmap;
pub mod paths;
pub mod policy;
pub mod reflect;
pub mod relay;
pub mod wire;

pub use allowed_ips::AllowedIps;
pub use key::{Key, KeyError};
