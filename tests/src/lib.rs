//! The end-to-end harness: real `meshd` binaries (and wireguard-go as a reference peer) in
//! network namespaces, with veth links, an "internet" namespace, NAT routers and UDP loss.
//!
//! - [`Netns`]: one namespace; dropping it kills what runs inside and deletes it.
//! - [`Lab`]: owns a test's namespaces; hosts, links, the internet bridge/router,
//!   [`Lab::nat_router`], plus [`set_udp_loss`], [`ping`] and [`wait_until`].
//! - [`Meshd`]: writes a config into a private temporary directory, runs meshd in a
//!   namespace, reads its status (via `meshctl status --json`, or the socket directly),
//!   kills and restarts it.
//! - [`WgGo`]: wireguard-go configured with `wg`, for interoperability tests and for
//!   checking the lab itself.
//! - [`Coordinator`]: the real coordinator in a namespace (stop, kill, restart with the same
//!   data directory), driven with `meshctl admin` inside that namespace.
//! - [`etcd`]: etcd members for the coordinators' shared store, one per host namespace,
//!   killed and restarted at will.
//! - [`control`]: control-plane scenarios: a coordinator on the internet, nodes on their
//!   own sites joining through it, and [`control::measure_propagation`] for how fast a
//!   membership change reaches every node.
//! - [`topo`]: ready-made meshd topologies (full mesh on the internet, a linked pair).
//! - [`loadgen`]: `wm-loadgen`, thousands of simulated nodes on loopback against a real
//!   coordinator (control-plane scale: netmap distribution, change fan-out, restart).
//! - [`sites`]: NAT traversal scenarios (issue 4): N sites behind NAT routers of each kind
//!   (two nodes behind one NAT as an option), a coordinator with reflectors and relay,
//!   blocking the direct path between two sites, first-reply timing, paths from status.
//! - [`sock`]: sockets opened inside a namespace by the test itself (`setns`): TCP connects
//!   that must time out, an echo server noting when bytes arrive, UDP counts.
//! - [`capture`]: tcpdump on the underlay and a pcap reader, to replay real datagrams.
//! - [`xfer`]: through the `wm-xfer` tool: checksummed TCP transfers (also paced, in the
//!   background), UDP junk and hand-made datagrams, a reflector and probe that show what a
//!   NAT does to a socket; iperf3 throughput.
//! - [`k8s`]: the cluster's own services over the mesh (issue 14): `meshctl k8s --json`,
//!   etcd members on exactly the URLs it prints, flannel-style pods, VXLAN devices and
//!   host-gw routes.
//!
//! - [`schema`]: the admin API under schemathesis: a coordinator on loopback with real
//!   (simulated) members, and running the fuzzer against its OpenAPI document.
//! - [`http`]: HTTP requests to loopback servers inside a namespace (`setns`).
//! - [`webdriver`]: headless Chromium through chromedriver, both inside a test's namespace,
//!   for the admin dashboard's browser test.
//!
//! Rules the harness enforces for every test: it needs root and fails (never skips) without
//! it; every name (namespace, interface, directory) carries the pid and a counter so tests
//! may run in parallel; underlay traffic stays in documentation ranges inside the test's
//! own namespaces; everything is removed in `Drop`, also when a test panics (then the
//! daemons' logs are printed too).
//!
//! Deliberately left out: timing assertions other than the explicit bounds the tests state.

pub mod capture;
pub mod control;
pub mod coordinator;
pub mod etcd;
pub mod http;
pub mod k8s;
pub mod lab;
pub mod loadgen;
pub mod meshd;
pub mod netns;
pub mod schema;
pub mod sites;
pub mod sock;
pub mod topo;
pub mod util;
pub mod webdriver;
pub mod wg;
pub mod xfer;

pub use coordinator::Coordinator;
pub use lab::{
    parse_ping_loss, ping, ping_once, ping_with, set_loss, set_udp_loss, Lab, NatKind, NatRouter,
};
pub use meshd::{Meshd, MeshdConfig};
pub use netns::{cleanup_stale, Netns};
pub use util::{require_root, wait_until, TempDir};
pub use wg::{NodeKey, Peer, WgGo};
