//! The data plane: WireGuard (boringtun) between the TUN device and one UDP socket.
//!
//! OS threads carry packets, each owning its preallocated buffers:
//! - `outbound` ([`outbound::run`]), one per TUN queue (multi-queue TUN, one queue per
//!   core up to 4): TUN → cryptokey routing → encrypt → UDP (GSO runs);
//! - `inbound` ([`inbound::run`]): UDP (GRO batches) → decrypt → source check → TUN (GRO
//!   coalescing back into super-packets).
//!
//! Both check the policy [`filter`] for network peers: outbound after routing, before
//! encryption; inbound after decryption and the source check, before the TUN.
//!
//! A small async task ([`timers`]) drives boringtun's timers (handshake retry, rekey,
//! keepalive) and the handshake rate limiter. The local API reads [`Device::status`].
//!
//! **Architecture Invariant:** nothing on the packet paths allocates or takes a contended
//! lock per packet; see [`peer`] for how the peer table is shared.

pub mod filter;
mod inbound;
mod local;
mod outbound;
pub mod peer;
mod sys;
pub mod traversal;
mod tun;
pub(crate) mod udp;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::{ArcSwap, ArcSwapOption};
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use mesh_proto::api::{ControlStatus, DropCounters, PeerStatus, Status};
use mesh_proto::control::{PeerPathReport, ReportedPath};
use mesh_proto::netmap::{Netmap, PeerInfo};
use mesh_proto::Key;
use parking_lot::Mutex;

use crate::config::Config;
use peer::{Endpoint, Peer, PeerTable, Traversal};
use udp::Udp;

/// Handshake messages per second before the rate limiter demands cookies (boringtun's
/// device uses the same figure).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// How often boringtun's timers are driven. Its timer constants are whole seconds; 250 ms
/// keeps retries close to their deadlines.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Most TUN queues (and outbound threads) to open, whatever the core count.
const MAX_QUEUES: usize = 4;

/// The running data plane, shared by the packet threads, the timers and the API.
pub struct Device {
    interface: String,
    private_key: Key,
    public_key: Key,
    static_secret: StaticSecret,
    static_public: PublicKey,
    peers: ArcSwap<PeerTable>,
    rate_limiter: Arc<RateLimiter>,
    udp: Udp,
    tun: tun_rs::SyncDevice,
    drops: Drops,
    /// Peer set and addresses as configured and as the coordinator sent them. Only the
    /// control side takes this lock; the packet paths read `peers`.
    dynamic: Mutex<Dynamic>,
    /// Source of peer indices for peers added later.
    next_index: AtomicU32,
    /// What `meshctl status` shows about the coordinator connection.
    control_status: Mutex<Option<ControlStatus>>,
    /// NAT traversal: services, reflections, own candidates.
    traversal: traversal::State,
    /// The reflexive addresses, for the control session to report.
    reflexive_watch: tokio::sync::watch::Sender<Vec<std::net::SocketAddr>>,
    /// Prefixes behind this node, offered to the network (`advertise-routes`).
    advertise_routes: Vec<IpNet>,
    /// The policy filter the packet paths enforce (`None`: everything passes), loaded once
    /// per batch; replaced whole when the filter changes.
    filter: ArcSwapOption<filter::Filter>,
    /// The filter as the control side keeps it (what applied, what failed, what the cache
    /// stores) and what recompiling reuses. Only the control side and the status take it.
    filter_control: Mutex<FilterControl>,
    /// The network's names (`crate::dns`), rebuilt from every netmap applied here.
    names: Arc<crate::dns::Names>,
    /// Where decrypted packets from network peers may go (`local.rs`): this node's
    /// overlay addresses and advertised prefixes. Rebuilt by `apply_netmap`, loaded once
    /// per batch by the inbound thread.
    local: ArcSwap<local::LocalSet>,
    /// Every prefix this node routes into its interface: the overlay prefixes (the
    /// addresses' connected routes) and the routes to network peers. WireGuard and disco
    /// datagrams must never go to an address inside them: they would enter the tunnel they
    /// are meant to carry. Rebuilt by `apply_netmap`.
    tunnelled: ArcSwap<Vec<IpNet>>,
}

/// The control side's filter state.
#[derive(Debug, Default)]
struct FilterControl {
    saved: filter::Saved,
    compiler: filter::Compiler,
    /// `max-filter-entries` from meshd.toml.
    max_entries: usize,
}

/// The configuration the packet paths see, split by origin.
#[derive(Debug)]
struct Dynamic {
    /// Peers from the config file; they win over network peers with the same key.
    static_peers: Vec<Arc<Peer>>,
    /// Peers from the netmap, by key.
    network_peers: BTreeMap<Key, Arc<Peer>>,
    /// Address from the config file.
    static_address: Option<IpNet>,
    /// Address from the netmap.
    network_address: Option<IpNet>,
    /// IPv6 address from the netmap (dual stack).
    network_address6: Option<IpNet>,
    mtu: u16,
    /// Kernel routes into the TUN this node installed for network peers' allowed IPs
    /// outside the overlay prefix (approved routes of other members).
    kernel_routes: BTreeSet<IpNet>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("interface", &self.interface)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// The prefixes to route into the TUN: network peers' allowed IPs that are not inside
/// this node's overlay prefix (the kernel routes those already, via the address), do
/// not overlap a prefix this node advertises itself (it must not pull traffic for its own
/// routes into the mesh), and do not overlap a network this host is on through another
/// interface (`host`): `ip route replace` of a LAN's own prefix would replace its
/// connected route and cut the node off its LAN, gateway and coordinator, and a route
/// inside it would hide part of that LAN. Two sites numbered alike (everyone's
/// 192.168.1.0/24) are common; the local network wins, with a warning.
fn route_prefixes<'a>(
    overlay: impl Iterator<Item = IpNet>,
    own: &[IpNet],
    host: &[IpNet],
    allowed: impl Iterator<Item = &'a Vec<IpNet>>,
) -> BTreeSet<IpNet> {
    let overlay: Vec<IpNet> = overlay.collect();
    let overlaps = |a: &IpNet, b: &IpNet| a.contains(b) || b.contains(a);
    allowed
        .flatten()
        .filter(|p| !overlay.iter().any(|o| o.contains(*p)))
        .filter(|p| {
            let mine = own.iter().any(|o| overlaps(o, p));
            if mine {
                tracing::warn!(prefix = %p, "a peer claims a prefix this node advertises; not routing it into the mesh");
            }
            !mine
        })
        .filter(|p| {
            let local = host.iter().find(|h| overlaps(h, p));
            if let Some(h) = local {
                tracing::warn!(prefix = %p, local = %h, "a peer's route overlaps a network this host is on; not routing it into the mesh");
            }
            local.is_none()
        })
        .copied()
        .collect()
}

/// This host's addresses, with their prefix lengths, on interfaces other than
/// `overlay_interface` (not loopback, not IPv6 link-local): its underlay. The networks
/// routes into the mesh must leave alone, and the local candidates offered to peers.
pub fn host_addresses(overlay_interface: &str) -> Vec<IpNet> {
    let Ok(addrs) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    addrs
        .into_iter()
        .filter(|a| a.name != overlay_interface && !a.is_loopback())
        .filter_map(|a| match a.addr {
            if_addrs::IfAddr::V4(v4) => IpNet::new(v4.ip.into(), v4.prefixlen).ok(),
            if_addrs::IfAddr::V6(v6) if !v6.ip.is_unicast_link_local() => {
                IpNet::new(v6.ip.into(), v6.prefixlen).ok()
            }
            if_addrs::IfAddr::V6(_) => None,
        })
        .collect()
}

/// `ip route ACTION PREFIX dev IFNAME`.
fn ip_route(action: &str, prefix: IpNet, interface: &str) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(["route", action, &prefix.to_string(), "dev", interface])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip route {action} {prefix} dev {interface}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Drop counters; updated once per batch, not per packet.
#[derive(Debug, Default)]
struct Drops {
    no_route: AtomicU64,
    bad_source: AtomicU64,
    invalid: AtomicU64,
    unknown_peer: AtomicU64,
    no_endpoint: AtomicU64,
    not_local: AtomicU64,
}

impl Drops {
    fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> DropCounters {
        DropCounters {
            no_route: self.no_route.load(Ordering::Relaxed),
            bad_source: self.bad_source.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            unknown_peer: self.unknown_peer.load(Ordering::Relaxed),
            no_endpoint: self.no_endpoint.load(Ordering::Relaxed),
            not_local: self.not_local.load(Ordering::Relaxed),
        }
    }
}

impl Device {
    /// Binds the UDP socket, creates and configures the TUN device, and starts the packet
    /// threads. The socket is bound first so that a busy port fails before any interface
    /// exists.
    pub fn start(config: &Config, private_key: Key) -> anyhow::Result<Arc<Device>> {
        peer::set_idle_after(config.peer_idle_after);
        let static_secret = StaticSecret::from(private_key.0);
        let static_public = PublicKey::from(&static_secret);
        let public_key = Key(static_public.to_bytes());
        let rate_limiter = Arc::new(RateLimiter::new(&static_public, HANDSHAKE_RATE_LIMIT));

        let udp = Udp::bind(config.listen_port)
            .with_context(|| format!("binding UDP port {}", config.listen_port))?;

        let peers: Vec<Arc<Peer>> = config
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                // Index 0 is left unused so that a zeroed receiver index never matches.
                let index = u32::try_from(i + 1).unwrap_or(u32::MAX) & 0x00ff_ffff;
                Arc::new(Peer::new(
                    index,
                    p.public_key,
                    p.allowed_ips.clone(),
                    p.persistent_keepalive,
                    p.endpoint.map(Endpoint::Direct),
                    Tunn::new(
                        static_secret.clone(),
                        PublicKey::from(p.public_key.0),
                        p.preshared_key.map(|k| k.0),
                        p.persistent_keepalive,
                        index,
                        Some(rate_limiter.clone()),
                    ),
                    None,
                ))
            })
            .collect();
        let next_index = AtomicU32::new(u32::try_from(peers.len() + 1).unwrap_or(u32::MAX));

        let queues = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_QUEUES));
        let (tun, extra_queues) =
            tun::create(&config.interface, config.address, config.mtu, queues)?;

        let device = Arc::new(Device {
            interface: config.interface.clone(),
            private_key,
            public_key,
            static_secret,
            static_public,
            peers: ArcSwap::from_pointee(PeerTable::new(peers.clone())),
            rate_limiter,
            udp,
            tun,
            drops: Drops::default(),
            dynamic: Mutex::new(Dynamic {
                static_peers: peers,
                network_peers: BTreeMap::new(),
                static_address: config.address,
                network_address: None,
                network_address6: None,
                mtu: config.mtu,
                kernel_routes: BTreeSet::new(),
            }),
            next_index,
            control_status: Mutex::new(None),
            traversal: traversal::State::default(),
            reflexive_watch: tokio::sync::watch::Sender::new(Vec::new()),
            advertise_routes: config.advertise_routes.clone(),
            filter: ArcSwapOption::empty(),
            filter_control: Mutex::new(FilterControl {
                saved: filter::Saved::default(),
                compiler: filter::Compiler::default(),
                max_entries: config.max_filter_entries,
            }),
            names: Arc::new(crate::dns::Names::new(public_key, config.dns.enabled)),
            local: ArcSwap::from_pointee(local::LocalSet::new(
                config.address,
                config.advertise_routes.iter().copied(),
            )),
            tunnelled: ArcSwap::from_pointee(config.address.iter().map(IpNet::trunc).collect()),
        });
        tracing::info!(
            public_key = %device.public_key.fingerprint(),
            gso_segments = device.udp.max_gso_segments(),
            "data plane ready"
        );

        let dev = device.clone();
        std::thread::Builder::new()
            .name("meshd-in".into())
            .spawn(move || inbound::run(dev))
            .context("spawning the inbound thread")?;
        // One outbound thread per TUN queue; queue 0 is the device's own.
        let mut queues: Vec<Option<tun_rs::SyncDevice>> = vec![None];
        queues.extend(extra_queues.into_iter().map(Some));
        for (i, queue) in queues.into_iter().enumerate() {
            let dev = device.clone();
            std::thread::Builder::new()
                .name(format!("meshd-out{i}"))
                .spawn(move || outbound::run(dev, queue))
                .context("spawning an outbound thread")?;
        }
        for peer in &device.peers.load().list {
            device.initiate_handshake(peer);
        }
        Ok(device)
    }

    /// The UDP port actually bound.
    pub fn listen_port(&self) -> u16 {
        self.udp.local_port()
    }

    /// Whether the WireGuard socket reaches IPv6 peers (dual-stack).
    pub fn has_ipv6(&self) -> bool {
        self.udp.has_ipv6()
    }

    /// The TUN interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The node's public key.
    pub fn public_key(&self) -> Key {
        self.public_key
    }

    /// The prefixes this node advertises (`advertise-routes`).
    pub fn advertise_routes(&self) -> &[IpNet] {
        &self.advertise_routes
    }

    /// Whether this node routes `ip` into its own interface (an overlay address, or one
    /// behind a peer's route). Such an address is never a path to a peer: a datagram sent
    /// there would travel inside the tunnel it is meant to carry (and one received from
    /// there came through it).
    pub fn is_tunnelled(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.tunnelled.load().iter().any(|p| p.contains(&ip))
    }

    /// A snapshot for `meshctl status`.
    pub fn status(&self) -> Status {
        let table = self.peers.load();
        let peers = table
            .list
            .iter()
            .map(|p| {
                let (since_handshake, tx, rx, _, _) = p.tunn.lock().stats();
                let endpoint = p.endpoint();
                let (name, rtt) = match &p.traversal {
                    Some(t) => (Some(t.name.read().clone()), t.paths.lock().rtt()),
                    None => (None, None),
                };
                PeerStatus {
                    public_key: p.public_key,
                    endpoint: endpoint.map(|e| e.addr()),
                    allowed_ips: p.allowed_ips(),
                    latest_handshake_secs: since_handshake.map(|d| d.as_secs()),
                    handshakes: p.handshakes(),
                    rx_bytes: rx as u64,
                    tx_bytes: tx as u64,
                    persistent_keepalive: p.persistent_keepalive,
                    name,
                    path: traversal::path_type(endpoint),
                    rtt_ms: rtt
                        .filter(|_| matches!(endpoint, Some(Endpoint::Direct(_))))
                        .map(|d| d.as_secs_f64() * 1000.0),
                }
            })
            .collect();
        let (address, address6, mtu) = {
            let d = self.dynamic.lock();
            (
                d.network_address.or(d.static_address),
                d.network_address6,
                d.mtu,
            )
        };
        Status {
            interface: self.interface.clone(),
            address,
            address6,
            mtu,
            public_key: self.public_key,
            listen_port: self.listen_port(),
            peers,
            dropped: self.drops.snapshot(),
            control: self.control_status.lock().clone(),
            filter: self.filter_status(),
            dns: self.names.status(),
            networks: Vec::new(),
        }
    }

    /// The network's names, for the DNS server and the control session (the domain).
    pub fn names(&self) -> &Arc<crate::dns::Names> {
        &self.names
    }

    fn filter_status(&self) -> Option<mesh_proto::api::FilterStatus> {
        let running = self.filter.load_full();
        let c = self.filter_control.lock();
        filter::status(
            &c.saved,
            c.compiler.counters().map(|c| &**c),
            running.as_deref(),
            filter::now(),
        )
    }

    /// Applies a policy filter update from the coordinator of `network` and installs the
    /// result (see [`filter::apply_update`]: on failure the peers it concerned are failed
    /// closed). Returns the hash of the filter in force, the error if it failed, and what
    /// to cache.
    pub fn apply_filter_update(
        &self,
        network: &str,
        update: &mesh_proto::policy::FilterUpdate,
    ) -> (String, Option<String>, filter::Saved) {
        let mut c = self.filter_control.lock();
        if c.saved.network != network {
            c.saved = filter::Saved {
                network: network.to_owned(),
                ..filter::Saved::default()
            };
        }
        let max = c.max_entries;
        let result = filter::apply_update_limited(&mut c.saved, update, max);
        self.install_filter(&mut c);
        match &result {
            Ok(()) => {
                tracing::info!(hash = %c.saved.hash(), full = update.full, "policy filter applied")
            }
            Err(e) => tracing::warn!(
                hash = %c.saved.hash(),
                closed_all = c.saved.closed.all,
                closed = c.saved.closed.peers.len(),
                "policy filter update not applied, failing closed for the peers it concerns: {e}"
            ),
        }
        (c.saved.hash(), result.err(), c.saved.clone())
    }

    /// Enforces a filter restored from the cache (before any coordinator is reached).
    pub fn restore_filter(&self, saved: filter::Saved) {
        let mut c = self.filter_control.lock();
        c.saved = saved;
        self.install_filter(&mut c);
        tracing::info!(hash = %c.saved.hash(), "policy filter restored from the cache");
    }

    /// Drops the filter (the node left its network, or its network has no policy):
    /// everything passes again. Returns whether there was one.
    pub fn clear_filter(&self) -> bool {
        let mut c = self.filter_control.lock();
        let had = c.saved != filter::Saved::default();
        c.saved = filter::Saved::default();
        c.compiler.reset();
        self.filter.store(None);
        had
    }

    fn install_filter(&self, c: &mut FilterControl) {
        let compiled = c.compiler.compile(&c.saved);
        self.filter.store(compiled);
    }

    /// How this node reaches each network peer now, for the coordinator
    /// ([`mesh_proto::control::ClientMsg::Paths`]): the path and RTT [`Device::status`]
    /// shows, ordered by key, at most [`mesh_proto::control::MAX_PATH_REPORT`] peers.
    /// Takes no `Tunn` lock: the packet paths are not held up.
    pub fn path_report(&self) -> Vec<PeerPathReport> {
        let table = self.peers.load();
        let mut out: Vec<PeerPathReport> = table
            .list
            .iter()
            .filter_map(|p| {
                let t = p.traversal.as_ref()?;
                let path = ReportedPath::from(traversal::path_type(p.endpoint()));
                let rtt_ms = if path == ReportedPath::Direct {
                    t.paths
                        .lock()
                        .rtt()
                        .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
                } else {
                    None
                };
                Some(PeerPathReport {
                    peer: p.public_key,
                    path,
                    rtt_ms,
                })
            })
            .collect();
        out.sort_by_key(|r| r.peer);
        out.truncate(mesh_proto::control::MAX_PATH_REPORT);
        out
    }

    /// The network this node's membership is for, if it has one.
    pub fn network(&self) -> Option<String> {
        self.control_status
            .lock()
            .as_ref()
            .map(|c| c.network.clone())
    }

    /// Publishes what `meshctl status` says about the coordinator connection.
    pub fn set_control_status(&self, status: Option<ControlStatus>) {
        *self.control_status.lock() = status;
    }

    /// Changes the published coordinator status in place, if there is one.
    pub fn update_control_status(&self, f: impl FnOnce(&mut ControlStatus)) {
        if let Some(status) = self.control_status.lock().as_mut() {
            f(status);
        }
    }

    /// Makes the data plane match `netmap` (or, with `None`, drops everything that came from
    /// a network). A pure diff: peers whose key and keepalive are unchanged keep
    /// their `Tunn`, so their sessions continue undisturbed; their allowed IPs and endpoint may
    /// change in place.
    /// One bad setting (e.g. an address the kernel refuses) is logged and the rest applied.
    pub fn apply_netmap(&self, netmap: Option<&Netmap>) {
        let mut d = self.dynamic.lock();

        let want = netmap.map(|m| m.address);
        self.sync_address(&mut d.network_address, want);
        let want6 = netmap.and_then(|m| m.address6);
        self.sync_address(&mut d.network_address6, want6);
        if let Some(m) = netmap {
            if d.mtu != m.network.mtu {
                match self.tun.set_mtu(m.network.mtu) {
                    Ok(()) => d.mtu = m.network.mtu,
                    Err(e) => tracing::warn!(mtu = m.network.mtu, "setting MTU: {e}"),
                }
            }
        }

        let keepalive =
            netmap.and_then(|m| (m.network.keepalive > 0).then_some(m.network.keepalive));
        let mut next = BTreeMap::new();
        let mut fresh = Vec::new();
        for info in netmap.iter().flat_map(|m| m.peers.values()) {
            if info.public_key == self.public_key
                || d.static_peers
                    .iter()
                    .any(|p| p.public_key == info.public_key)
            {
                continue;
            }
            let peer = match d.network_peers.get(&info.public_key) {
                // Allowed IPs (e.g. an approved pod route) change in place: the session stays.
                Some(p) if p.persistent_keepalive == keepalive => {
                    if p.allowed_ips() != info.allowed_ips {
                        p.set_allowed_ips(info.allowed_ips.clone());
                    }
                    if let Some(t) = &p.traversal {
                        if *t.name.read() != info.name {
                            t.name.write().clone_from(&info.name);
                        }
                    }
                    traversal::update_candidates(self, p, &info.endpoints);
                    p.clone()
                }
                _ => {
                    let peer = self.new_peer(info, keepalive);
                    fresh.push(peer.clone());
                    peer
                }
            };
            next.insert(info.public_key, peer);
        }
        let (kept, added, removed) = (
            next.keys()
                .filter(|k| d.network_peers.contains_key(k))
                .count(),
            next.keys()
                .filter(|k| !d.network_peers.contains_key(k))
                .count(),
            d.network_peers
                .keys()
                .filter(|k| !next.contains_key(k))
                .count(),
        );
        d.network_peers = next;
        let allowed: Vec<Vec<IpNet>> = d.network_peers.values().map(|p| p.allowed_ips()).collect();
        let overlay: Vec<IpNet> = netmap
            .iter()
            .flat_map(|m| std::iter::once(m.address).chain(m.address6))
            .map(|a| a.trunc())
            .collect();
        let host: Vec<IpNet> = host_addresses(&self.interface)
            .iter()
            .map(IpNet::trunc)
            .collect();
        let want = route_prefixes(
            overlay.iter().copied(),
            &self.advertise_routes,
            &host,
            allowed.iter(),
        );
        self.sync_kernel_routes(&mut d.kernel_routes, &want);
        let tunnelled = d
            .static_address
            .map(|a| a.trunc())
            .into_iter()
            .chain(overlay)
            .chain(want.iter().copied())
            .collect();
        self.tunnelled.store(Arc::new(tunnelled));
        self.local.store(Arc::new(local::LocalSet::new(
            d.static_address
                .into_iter()
                .chain(netmap.map(|m| m.address))
                .chain(netmap.and_then(|m| m.address6)),
            self.advertise_routes.iter().copied(),
        )));
        let all = d
            .static_peers
            .iter()
            .chain(d.network_peers.values())
            .cloned()
            .collect();
        self.peers.store(Arc::new(PeerTable::new(all)));
        drop(d);
        self.names.set_netmap(netmap);
        for peer in &fresh {
            self.initiate_handshake(peer);
        }
        tracing::info!(
            version = netmap.map(|m| m.version),
            kept,
            added,
            removed,
            "netmap applied"
        );
    }

    /// Makes the TUN's address `installed` (one of the two the netmap gives) `want`.
    fn sync_address(&self, installed: &mut Option<IpNet>, want: Option<IpNet>) {
        if *installed == want {
            return;
        }
        if let Some(old) = installed.take() {
            if let Err(e) = self.tun.remove_address(old.addr()) {
                tracing::warn!(address = %old, "removing overlay address: {e}");
            }
        }
        if let Some(new) = want {
            let added = match new {
                IpNet::V4(n) => self.tun.add_address_v4(n.addr(), n.prefix_len()),
                IpNet::V6(n) => self.tun.add_address_v6(n.addr(), n.prefix_len()),
            };
            match added {
                Ok(()) => *installed = Some(new),
                Err(e) => tracing::warn!(address = %new, "setting overlay address: {e}"),
            }
        }
    }

    /// Makes the kernel routes into the TUN match `want`: `ip route del` for those no longer
    /// wanted, `ip route replace` for new ones. Failures are logged; a route that failed
    /// to install is retried on the next netmap.
    fn sync_kernel_routes(&self, installed: &mut BTreeSet<IpNet>, want: &BTreeSet<IpNet>) {
        let stale: Vec<IpNet> = installed.difference(want).copied().collect();
        for prefix in stale {
            match ip_route("del", prefix, &self.interface) {
                Ok(()) => tracing::info!(%prefix, "route removed"),
                Err(e) => tracing::warn!(%prefix, "removing route: {e}"),
            }
            installed.remove(&prefix);
        }
        let missing: Vec<IpNet> = want.difference(installed).copied().collect();
        for prefix in missing {
            match ip_route("replace", prefix, &self.interface) {
                Ok(()) => {
                    tracing::info!(%prefix, "route added");
                    installed.insert(prefix);
                }
                Err(e) => tracing::warn!(%prefix, "adding route: {e}"),
            }
        }
    }

    /// Sends a handshake initiation to `peer` now rather than on its first packet. A peer
    /// that is new to us may still hold a session with our previous incarnation (we
    /// restarted, or left and re-joined); until it hears a new initiation it would keep
    /// encrypting with that stale session, and WireGuard itself would only notice after
    /// REKEY_TIMEOUT + KEEPALIVE_TIMEOUT (15 s).
    fn initiate_handshake(&self, peer: &Peer) {
        let mut buf = [0u8; 256];
        let mut tunn = peer.tunn.lock();
        if let TunnResult::WriteToNetwork(packet) =
            tunn.format_handshake_initiation(&mut buf, false)
        {
            peer.initiation_sent(packet, Instant::now());
            self.send_to_peer(peer, packet);
        }
    }

    fn new_peer(&self, info: &PeerInfo, keepalive: Option<u16>) -> Arc<Peer> {
        let index = self.next_index.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let tunn = Tunn::new(
            self.static_secret.clone(),
            PublicKey::from(info.public_key.0),
            None,
            keepalive,
            index,
            Some(self.rate_limiter.clone()),
        );
        let paths = self.new_paths(&info.endpoints);
        // Until a probe answers: the relay if there is one, else the first candidate.
        let endpoint = self.endpoint_for(paths.path()).or_else(|| {
            info.endpoints
                .iter()
                .find(|a| self.udp.has_ipv6() || a.is_ipv4())
                .map(|a| Endpoint::Direct(*a))
        });
        let traversal = Traversal {
            paths: Mutex::new(paths),
            disco: mesh_proto::disco::SharedKey::new(&self.private_key, &info.public_key),
            name: parking_lot::RwLock::new(info.name.clone()),
        };
        Arc::new(Peer::new(
            index,
            info.public_key,
            info.allowed_ips.clone(),
            keepalive,
            endpoint,
            tunn,
            Some(traversal),
        ))
    }

    /// Subscribes to this node's reflexive addresses (for the control session).
    pub fn reflexive_watch(&self) -> tokio::sync::watch::Receiver<Vec<std::net::SocketAddr>> {
        self.reflexive_watch.subscribe()
    }
}

/// How often an unanswered handshake initiation is resent during the first
/// [`FAST_RETRY_WINDOW`] of an attempt (plus up to a third as jitter).
const FAST_RETRY: Duration = Duration::from_secs(1);
/// How long handshakes are retried every [`FAST_RETRY`] before boringtun's own
/// REKEY_TIMEOUT (5 s, without jitter) takes over.
const FAST_RETRY_WINDOW: Duration = Duration::from_secs(30);

/// Resends an unanswered handshake initiation sooner than WireGuard's 5 s REKEY_TIMEOUT.
///
/// Under heavy loss (carriers dropping UDP at night) an initiation and its response both
/// arrive with probability (1 - loss)^2 per try, per hop: at 30 % loss through the relay
/// that is one try in four, so 5 s between tries means joins that take half a minute or
/// more. boringtun also retransmits without the spec's jitter. meshd therefore resends
/// every 1 to 1.33 s for the first 30 s of an attempt. Peers accept this: each initiation
/// carries a fresh timestamp, and wireguard-go's per-peer limit is 50 per second.
fn retry_handshake(dev: &Device, peer: &Peer, tunn: &mut Tunn, buf: &mut [u8], now: Instant) {
    let track = peer.handshake_track();
    let (Some(first), Some(last)) = (track.first, track.last) else {
        return;
    };
    let completed = tunn
        .time_since_last_handshake()
        .is_some_and(|age| now.checked_sub(age).is_some_and(|at| at >= first));
    if completed || now.saturating_duration_since(first) > FAST_RETRY_WINDOW {
        peer.handshake_done();
        return;
    }
    let mut b = [0u8; 1];
    let _ = getrandom::getrandom(&mut b);
    let jitter = FAST_RETRY.mul_f64(f64::from(b[0]) / 255.0 / 3.0);
    if now.saturating_duration_since(last) >= FAST_RETRY + jitter {
        if let TunnResult::WriteToNetwork(packet) = tunn.format_handshake_initiation(buf, true) {
            peer.initiation_sent(packet, now);
            dev.send_to_peer(peer, packet);
        }
    }
}

/// Drives every peer's WireGuard timers and resets the handshake rate limiter each second.
/// Runs until the process exits.
pub async fn timers(device: Arc<Device>) {
    let mut buf = vec![0u8; 256];
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        if ticks % 4 == 0 {
            device.rate_limiter.reset_count();
        }
        let table = device.peers.load();
        let now = Instant::now();
        let active_now = peer::activity_now();
        for peer in &table.list {
            // An idle network peer sends nothing: no keepalives, no handshakes.
            if !peer.is_active(active_now) {
                continue;
            }
            let mut tunn = peer.tunn.lock();
            retry_handshake(&device, peer, &mut tunn, &mut buf, now);
            match tunn.update_timers(&mut buf) {
                TunnResult::WriteToNetwork(packet) => {
                    peer.initiation_sent(packet, now);
                    device.send_to_peer(peer, packet);
                }
                TunnResult::Err(e) => {
                    tracing::debug!(peer = %peer.public_key.fingerprint(), "timers: {e:?}");
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_outside_the_overlay_our_own_prefixes_and_our_lans() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let peers = [
            vec![
                net("10.9.8.2/32"),
                net("fd5e:1f2a:9c00::2/128"),
                net("10.244.2.0/24"),
            ],
            vec![
                net("10.9.8.3/32"),
                net("fd5e:1f2a:9c00::3/128"),
                net("10.244.1.0/25"),
                net("fd00:244::/64"),
            ],
        ];
        // Dual stack: both overlay prefixes are the kernel's (via the addresses).
        let got = route_prefixes(
            [net("10.9.8.0/24"), net("fd5e:1f2a:9c00::/64")].into_iter(),
            &[net("10.244.1.0/24")],
            &[],
            peers.iter(),
        );
        let want: BTreeSet<IpNet> = [net("10.244.2.0/24"), net("fd00:244::/64")].into();
        assert_eq!(got, want);
        // IPv4 only: the peers' IPv6 addresses would be routes.
        let v4 = route_prefixes(
            [net("10.9.8.0/24")].into_iter(),
            &[net("10.244.1.0/24")],
            &[],
            peers.iter(),
        );
        assert_eq!(v4.len(), 4);
        // No overlay address (static-only): every allowed IP outside it counts.
        assert_eq!(
            route_prefixes(None.into_iter(), &[], &[], peers.iter()).len(),
            7
        );
        // A peer's route overlapping a network this host is on (its own LAN numbered
        // alike, or one inside a wider LAN) is left to the LAN.
        let host = [net("10.244.2.0/24"), net("fd00::/8")];
        let got = route_prefixes(
            [net("10.9.8.0/24"), net("fd5e:1f2a:9c00::/64")].into_iter(),
            &[],
            &host,
            peers.iter(),
        );
        let want: BTreeSet<IpNet> = [net("10.244.1.0/25")].into();
        assert_eq!(got, want);
    }
}
