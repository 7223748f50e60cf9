//! The control plane client: membership of one network through a coordinator.
//!
//! `meshctl join` hands meshd a membership (token, or coordinator + pin); meshd stores it,
//! then keeps one control session alive: connect (QUIC, pinned), prove its key, receive the
//! netmap and its changes, apply each to the data plane ([`Device::apply_netmap`]) and
//! cache it. On failure it reconnects with exponential backoff and jitter. The data plane
//! never waits for any of this: tunnels run from the cached netmap while the coordinator is
//! unreachable.
//!
//! # Several coordinators
//!
//! Coordinators may run side by side sharing one identity (one certificate pin, one relay
//! secret), so a node may use any of them. Each one advertises all their control addresses
//! with the services (`ServerMsg::Services.coordinators`); meshd replaces its membership's
//! list with a non-empty one that differs, caches it (a restarted meshd knows them all) and
//! shows it in `meshctl status`. With several coordinators it fails over within about 5 s:
//! - a dead coordinator is noticed within 4 s (QUIC keep-alive 1.5 s, idle timeout 4 s:
//!   [`quic::Liveness`]; with a single coordinator 5 s and 15 s, as there is nowhere to go);
//! - each connection attempt (resolving, handshake, opening the stream) gets
//!   [`CONNECT_TIMEOUT`], so an address that does not answer costs 2 s, not an idle timeout;
//! - the coordinators are tried in [`attempt_order`]: after one failed (its session ended or
//!   it did not answer), another one first, picked at random among the others so that a
//!   dead coordinator's nodes spread over the rest, and the failed one last; otherwise the
//!   last one that worked first;
//! - the reconnect after an established session comes within 0.1-1 s ([`after_session`];
//!   0.1-3 s with a single coordinator, whose restart ends every node's session at once).
//!
//! The node resumes from its netmap version (`Hello.resume`) on whichever coordinator it
//! reaches, and logs the coordinator it moved to.

mod cache;
mod paths;
mod quic;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_proto::api::{ControlState, ControlStatus, JoinRequest};
use mesh_proto::control::{Hello, JoinToken};
use mesh_proto::netmap::Netmap;
use mesh_proto::Key;
use parking_lot::Mutex;

pub use cache::{Cache, Membership};
use session::{Outcome, Sink};

use crate::device::Device;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// The first reconnect after an established session ended comes at a random time within
/// this ([`spread`]); the coordinator's sessions end together when it restarts.
const RECONNECT_SPREAD: Duration = Duration::from_secs(3);
/// The earliest reconnect after an established session ended.
const MIN_RECONNECT: Duration = Duration::from_millis(100);
/// With several coordinators, the first reconnect after an established session ended
/// comes within this: the node fails over to another coordinator, which is up, and this
/// coordinator's nodes spread over the others.
const FAILOVER_SPREAD: Duration = Duration::from_secs(1);
/// With several coordinators, how long one connection attempt (resolving, QUIC handshake,
/// opening the control stream) may take before the next coordinator is tried. With one,
/// the attempt is bounded by the QUIC idle timeout only (a slow link still gets in).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait after the coordinator refused us (an admin may change their mind).
const DENIED_RETRY: Duration = Duration::from_secs(60);

/// The membership manager, shared with the local API.
pub struct Control {
    device: Arc<Device>,
    cache: Cache,
    private_key: Key,
    name: String,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The coordinator address of the current connection, shown in the status.
    connected_to: Mutex<Option<String>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// Restores a stored membership: applies the cached netmap at once, then starts the
    /// session task. Must be called inside the tokio runtime.
    pub fn start(
        device: Arc<Device>,
        cache: Cache,
        private_key: Key,
        name: String,
    ) -> anyhow::Result<Arc<Control>> {
        let control = Arc::new(Control {
            device,
            cache,
            private_key,
            name,
            task: Mutex::new(None),
            connected_to: Mutex::new(None),
        });
        if let Some(m) = control.cache.membership()? {
            // The filter first: peers restored next are filtered from their first packet.
            match control.cache.filter() {
                Ok(Some(saved)) if saved.network == m.network => {
                    control.device.restore_filter(saved);
                }
                Ok(_) => {}
                // Unreadable: the coordinator sends the filter again on connecting.
                Err(e) => tracing::warn!("{e:#}"),
            }
            match control.cache.netmap()? {
                Some(netmap) if netmap.network.name == m.network => {
                    if let Some(services) = control.cache.services()? {
                        control.device.set_services(resolve_services(&services));
                    }
                    if let Ok(Some(domain)) = control.cache.domain() {
                        control.device.names().set_domain(&domain);
                    }
                    tracing::info!(network = %m.network, version = netmap.version, "restoring tunnels from the cached netmap");
                    control.device.apply_netmap(Some(&netmap));
                }
                _ => {}
            }
            control.spawn(m);
        }
        Ok(control)
    }

    /// `meshctl join`: validates and stores the membership, then (re)starts the session.
    pub fn join(self: &Arc<Self>, req: JoinRequest) -> Result<String, String> {
        let m = match (&req.token, &req.coordinator, req.pin) {
            (Some(text), _, _) => {
                let token: JoinToken = text.parse().map_err(|e| format!("--token: {e}"))?;
                if token.network != req.network {
                    return Err(format!(
                        "the token is for network {:?}, not {:?}",
                        token.network, req.network
                    ));
                }
                Membership {
                    network: req.network.clone(),
                    coordinators: token.coordinators,
                    pin: token.pin,
                    join: Some(token.secret),
                }
            }
            (None, Some(coordinator), Some(pin)) => Membership {
                network: req.network.clone(),
                coordinators: vec![coordinator.clone()],
                pin,
                join: None,
            },
            (None, _, _) => return Err("give --token, or both --coordinator and --pin".to_owned()),
        };
        let existing = self.cache.membership().map_err(|e| format!("{e:#}"))?;
        if let Some(old) = &existing {
            if old.network != m.network {
                return Err(format!(
                    "already a member of network {:?}; run `meshctl leave {}` first",
                    old.network, old.network
                ));
            }
        }
        self.cache
            .set_membership(Some(&m))
            .map_err(|e| format!("{e:#}"))?;
        let via = m.coordinators.join(", ");
        self.spawn(m);
        Ok(format!("joining network {:?} via {via}", req.network))
    }

    /// `meshctl leave`: stops the session, forgets membership and cached netmap, and removes
    /// the network's peers and address from the data plane.
    pub fn leave(&self, network: &str) -> Result<String, String> {
        match self.cache.membership().map_err(|e| format!("{e:#}"))? {
            Some(m) if m.network == network => {}
            Some(m) => {
                return Err(format!(
                    "not a member of {network:?} (member of {:?})",
                    m.network
                ))
            }
            None => return Err(format!("not a member of {network:?}")),
        }
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
        self.cache
            .set_membership(None)
            .map_err(|e| format!("{e:#}"))?;
        self.cache.set_netmap(None).map_err(|e| format!("{e:#}"))?;
        self.cache
            .set_services(None)
            .map_err(|e| format!("{e:#}"))?;
        self.cache.set_filter(None).map_err(|e| format!("{e:#}"))?;
        self.device.apply_netmap(None);
        let _ = self.device.clear_filter();
        self.device.set_services(Default::default());
        self.device.set_control_status(None);
        Ok(format!("left network {network:?}"))
    }

    fn spawn(self: &Arc<Self>, m: Membership) {
        self.status(&m, ControlState::Connecting, None, None);
        let me = self.clone();
        let task = tokio::spawn(async move { me.run(m).await });
        if let Some(old) = self.task.lock().replace(task) {
            old.abort();
        }
    }

    fn status(
        &self,
        m: &Membership,
        state: ControlState,
        message: Option<String>,
        version: Option<u64>,
    ) {
        let version = version.or_else(|| self.cache.netmap().ok().flatten().map(|n| n.version));
        let coordinator = match state {
            ControlState::Connected | ControlState::Pending => self.connected_to.lock().clone(),
            _ => None,
        };
        self.device.set_control_status(Some(ControlStatus {
            network: m.network.clone(),
            coordinators: m.coordinators.clone(),
            state,
            message,
            netmap_version: version,
            coordinator,
        }));
    }

    /// The session loop: runs until aborted by `leave` or a new `join`.
    async fn run(self: Arc<Self>, mut m: Membership) {
        let client = loop {
            match quic::Client::new() {
                Ok(c) => break c,
                Err(e) => {
                    self.status(&m, ControlState::Connecting, Some(format!("{e:#}")), None);
                    tokio::time::sleep(MAX_BACKOFF).await;
                }
            }
        };
        let mut failures = 0u32;
        let mut rotation = Rotation::default();
        loop {
            let delay = match self.session(&client, &mut m, &mut rotation).await {
                Ok((Outcome::Denied(reason), _)) => {
                    tracing::warn!(network = %m.network, "coordinator refused this node: {reason}");
                    self.forget_netmap();
                    self.status(&m, ControlState::Denied, Some(reason), None);
                    jitter(DENIED_RETRY)
                }
                Ok((Outcome::Closed, authorised)) => {
                    self.status(
                        &m,
                        ControlState::Connecting,
                        Some("the coordinator closed the connection".into()),
                        None,
                    );
                    if authorised {
                        failures = 0;
                        after_session(m.coordinators.len(), unit_random())
                    } else {
                        jitter(backoff(failures))
                    }
                }
                Err((e, authorised)) => {
                    tracing::info!(network = %m.network, "control connection: {e:#}");
                    self.status(&m, ControlState::Connecting, Some(format!("{e:#}")), None);
                    if authorised {
                        failures = 0;
                        after_session(m.coordinators.len(), unit_random())
                    } else {
                        failures = failures.saturating_add(1);
                        jitter(backoff(failures))
                    }
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection: connects to the first coordinator that answers ([`Self::connect`]),
    /// then runs the session. Also reports whether this node got authorised during it (to
    /// reset the backoff).
    async fn session(
        &self,
        client: &quic::Client,
        m: &mut Membership,
        rotation: &mut Rotation,
    ) -> Result<(Outcome, bool), (anyhow::Error, bool)> {
        let (target, conn) = self
            .connect(client, m, rotation)
            .await
            .map_err(|e| (e, false))?;
        *self.connected_to.lock() = Some(target.clone());

        let cached = self
            .cache
            .netmap()
            .ok()
            .flatten()
            .filter(|n| n.network.name == m.network);
        let listen_port = self.device.listen_port();
        let local = local_endpoints(&self.device, listen_port);
        let hello = Hello {
            network: m.network.clone(),
            public_key: self.device.public_key(),
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            join: m.join.clone(),
            resume: cached.as_ref().map(|n| n.version),
            listen_port,
            local: local.clone(),
            routes: self.device.advertise_routes().to_vec(),
            protocol: mesh_proto::control::PROTOCOL,
        };
        self.device.set_local_candidates(local.clone());
        let device = self.device.clone();
        let feed = session::EndpointFeed {
            listen_port,
            local,
            reflexive: self.device.reflexive_watch(),
            paths: Some(Arc::new(move || device.path_report())),
        };
        let mut sink = Applier {
            control: self,
            membership: m,
            authorised: false,
        };
        let result = session::run(
            conn.recv,
            conn.send,
            conn.exporter,
            hello,
            &self.private_key,
            cached,
            &mut sink,
            Some(feed),
        )
        .await;
        let authorised = sink.authorised;
        drop(conn.connection);
        // A coordinator that refused us is working (and all share one membership); any other
        // end means the next attempt starts with another coordinator.
        if !matches!(result, Ok(Outcome::Denied(_))) {
            rotation.last_failed = Some(target);
        }
        result.map(|o| (o, authorised)).map_err(|e| (e, authorised))
    }

    /// Connects to the first coordinator that answers, in [`attempt_order`]. With several,
    /// each attempt gets [`CONNECT_TIMEOUT`]. Returns the address it reached.
    async fn connect(
        &self,
        client: &quic::Client,
        m: &Membership,
        rotation: &mut Rotation,
    ) -> anyhow::Result<(String, quic::Connection)> {
        let n = m.coordinators.len();
        let liveness = quic::Liveness::for_coordinators(n);
        let mut last_error = None;
        for i in rotation.order(&m.coordinators, random_u32()) {
            let target = &m.coordinators[i];
            let bound = (n > 1).then_some(CONNECT_TIMEOUT);
            match attempt(client, target, m.pin, liveness, bound).await {
                Ok(conn) => {
                    match &rotation.last_good {
                        Some(previous) if previous == target => {
                            tracing::debug!(network = %m.network, "connected to coordinator {target}");
                        }
                        Some(previous) => {
                            tracing::info!(network = %m.network, from = %previous, "moved to coordinator {target}");
                        }
                        None => {
                            tracing::info!(network = %m.network, "connected to coordinator {target}");
                        }
                    }
                    rotation.last_good = Some(target.clone());
                    rotation.last_failed = None;
                    return Ok((target.clone(), conn));
                }
                Err(e) => {
                    tracing::debug!(network = %m.network, "coordinator {target}: {e:#}");
                    rotation.last_failed = Some(target.clone());
                    last_error = Some(e);
                }
            }
        }
        let error = last_error.unwrap_or_else(|| anyhow::anyhow!("no coordinator address"));
        Err(if n > 1 {
            error.context(format!("none of the {n} coordinators answered"))
        } else {
            error
        })
    }

    fn forget_netmap(&self) {
        self.device.apply_netmap(None);
        if let Err(e) = self.cache.set_netmap(None) {
            tracing::warn!("{e:#}");
        }
    }
}

/// Applies what the session reports to the data plane, the cache and the status.
struct Applier<'a> {
    control: &'a Control,
    membership: &'a mut Membership,
    authorised: bool,
}

impl Sink for Applier<'_> {
    fn pending(&mut self, message: &str) {
        tracing::info!(network = %self.membership.network, "pending: {message}");
        self.control.forget_netmap();
        self.control.status(
            self.membership,
            ControlState::Pending,
            Some(message.to_owned()),
            None,
        );
    }

    fn netmap(&mut self, netmap: &Netmap) {
        self.authorised = true;
        self.control.device.apply_netmap(Some(netmap));
        if let Err(e) = self.control.cache.set_netmap(Some(netmap)) {
            tracing::warn!("caching the netmap: {e:#}");
        }
        if self.membership.join.take().is_some() {
            // Authorised: the join secret has done its work (and may have been one-time).
            if let Err(e) = self.control.cache.set_membership(Some(self.membership)) {
                tracing::warn!("{e:#}");
            }
        }
        self.control.status(
            self.membership,
            ControlState::Connected,
            None,
            Some(netmap.version),
        );
    }

    fn names(&mut self, domain: &str) {
        self.control.device.names().set_domain(domain);
        if let Err(e) = self.control.cache.set_domain(domain) {
            tracing::warn!("caching the DNS domain: {e:#}");
        }
    }

    fn coordinators(&mut self, advertised: Vec<String>) {
        let Some(list) = learned_coordinators(&self.membership.coordinators, advertised) else {
            return;
        };
        tracing::info!(network = %self.membership.network, "coordinator list: {}", list.join(", "));
        self.membership.coordinators = list.clone();
        if let Err(e) = self.control.cache.set_membership(Some(self.membership)) {
            tracing::warn!("caching the coordinator list: {e:#}");
        }
        self.control
            .device
            .update_control_status(|s| s.coordinators = list);
    }

    fn services(&mut self, services: session::Services) {
        if let Err(e) = self.control.cache.set_services(Some(&services)) {
            tracing::warn!("caching the coordinator's services: {e:#}");
        }
        self.control
            .device
            .set_services(resolve_services(&services));
    }

    fn filter(&mut self, update: &mesh_proto::policy::FilterUpdate) -> session::FilterReport {
        let (hash, error, saved) = self
            .control
            .device
            .apply_filter_update(&self.membership.network, update);
        if let Err(e) = self.control.cache.set_filter(Some(&saved)) {
            tracing::warn!("caching the policy filter: {e:#}");
        }
        session::FilterReport { hash, error }
    }

    fn no_filter(&mut self) {
        if self.control.device.clear_filter() {
            tracing::info!(network = %self.membership.network, "the network has no policy: everything allowed between members");
            if let Err(e) = self.control.cache.set_filter(None) {
                tracing::warn!("{e:#}");
            }
        }
    }
}

/// One connection attempt to `target` (resolving, QUIC handshake, opening the control
/// stream), given at most `bound`.
async fn attempt(
    client: &quic::Client,
    target: &str,
    pin: mesh_proto::control::CertPin,
    liveness: quic::Liveness,
    bound: Option<Duration>,
) -> anyhow::Result<quic::Connection> {
    let attempt = async {
        let addr = resolve(target).await?;
        client.connect(addr, pin, liveness).await
    };
    match bound {
        Some(bound) => tokio::time::timeout(bound, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "coordinator {target} did not answer within {bound:?}"
                ))
            }),
        None => attempt.await,
    }
}

/// The coordinator list to adopt from a `Services` message, if it changes anything: the
/// advertised addresses (duplicates and empty ones dropped) in the coordinator's order.
/// `None` when that is empty (an older coordinator; never go without an address) or equal
/// to `current`.
fn learned_coordinators(current: &[String], advertised: Vec<String>) -> Option<Vec<String>> {
    let mut list: Vec<String> = Vec::with_capacity(advertised.len());
    for a in advertised {
        if !a.is_empty() && !list.contains(&a) {
            list.push(a);
        }
    }
    (!list.is_empty() && list != current).then_some(list)
}

/// Which coordinator to try first, by address (the list may change during a session).
#[derive(Debug, Default)]
struct Rotation {
    /// The coordinator of the last connection.
    last_good: Option<String>,
    /// The coordinator that failed last: its session ended, or it did not answer.
    last_failed: Option<String>,
}

impl Rotation {
    /// [`attempt_order`] over `list`; `pick` is random.
    fn order(&self, list: &[String], pick: u32) -> Vec<usize> {
        let position =
            |a: &Option<String>| a.as_ref().and_then(|a| list.iter().position(|c| c == a));
        attempt_order(
            list.len(),
            position(&self.last_good),
            position(&self.last_failed),
            pick,
        )
    }
}

/// The order in which to try `len` coordinators (indices into the list), each once.
///
/// After a failure (`last_failed`: the coordinator whose session just ended or that did
/// not answer) another coordinator comes first, the `pick`-th (mod `len - 1`) after the
/// failed one, so that when a coordinator dies its nodes (each with its own random `pick`)
/// spread over the others instead of all landing on its successor; the list is then walked
/// round from there and the failed one comes last. Otherwise the last one that worked
/// (`last_good`) comes first, else the first in the list. Indices out of range are ignored.
fn attempt_order(
    len: usize,
    last_good: Option<usize>,
    last_failed: Option<usize>,
    pick: u32,
) -> Vec<usize> {
    let valid = |i: Option<usize>| i.filter(|&i| i < len);
    let (last_good, last_failed) = (valid(last_good), valid(last_failed));
    let start = match (last_failed, last_good) {
        (Some(failed), _) if len > 1 => (failed + 1 + pick as usize % (len - 1)) % len,
        (Some(failed), _) => failed,
        (None, Some(good)) => good,
        (None, None) => 0,
    };
    let mut order: Vec<usize> = (0..len).map(|k| (start + k) % len).collect();
    if let Some(failed) = last_failed {
        order.retain(|&i| i != failed);
        order.push(failed);
    }
    order
}

/// Resolves the coordinator's service addresses, keeping those this host has a route to:
/// every reflector of either family (IPv4 first, so that `meshctl netcheck` compares two
/// IPv4 reflections), and the first routable relay address of the list (the relay's
/// IPv4 and IPv6 addresses, in the coordinator's order).
fn resolve_services(s: &session::Services) -> crate::device::traversal::Services {
    use std::net::ToSocketAddrs as _;
    let resolve = |t: &String| -> Vec<SocketAddr> {
        match t.to_socket_addrs() {
            Ok(addrs) => addrs.filter(routable).collect(),
            Err(e) => {
                tracing::warn!("resolving {t}: {e}");
                Vec::new()
            }
        }
    };
    let mut reflectors: Vec<SocketAddr> = Vec::new();
    for a in s.reflectors.iter().flat_map(resolve) {
        if !reflectors.contains(&a) {
            reflectors.push(a);
        }
    }
    reflectors.sort_by_key(SocketAddr::is_ipv6);
    crate::device::traversal::Services {
        reflectors,
        relay: s.relays().flat_map(resolve).next(),
        relay_token: Some(s.relay_token),
    }
}

/// Resolves a coordinator address to the first address (in the resolver's order) this
/// host has a route to: an IPv6-only host skips the IPv4 ones and vice versa.
async fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("resolving {target}"))?
        .collect();
    addrs.iter().copied().find(routable).with_context(|| {
        if addrs.is_empty() {
            format!("{target} has no address")
        } else {
            format!("no route to {target} from this host (resolved to {addrs:?})")
        }
    })
}

/// Whether this host has a route to `addr`: a UDP socket `connect` asks the kernel's
/// routing table and sends nothing.
fn routable(addr: &SocketAddr) -> bool {
    let unspecified: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(unspecified).is_ok_and(|s| s.connect(addr).is_ok())
}

/// This host's addresses with the WireGuard port: candidates for peers on the same LAN,
/// and with IPv6 the global addresses peers reach directly. Not loopback, not IPv6
/// link-local (which would need an interface to go with it), and nothing the overlay
/// carries: not the overlay interface's, and not inside a prefix this node advertises
/// (a Kubernetes node's pod bridge, say), which its peers route through the tunnel.
fn local_endpoints(device: &Device, port: u16) -> Vec<SocketAddr> {
    let ipv6 = device.has_ipv6();
    crate::device::host_addresses(device.interface())
        .into_iter()
        .map(|a| a.addr())
        .filter(|ip| ipv6 || ip.is_ipv4())
        .filter(|ip| {
            !device.advertise_routes().iter().any(|p| p.contains(ip)) && !device.is_tunnelled(*ip)
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// `MIN_BACKOFF * 2^failures`, at most `MAX_BACKOFF`.
fn backoff(failures: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(1u32 << failures.min(16))
        .min(MAX_BACKOFF)
}

/// A random `u32` (0 if the system has no randomness to give).
fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    match getrandom::getrandom(&mut b) {
        Ok(()) => u32::from_be_bytes(b),
        Err(_) => 0,
    }
}

/// A random number in [0, 1].
fn unit_random() -> f64 {
    let mut b = [0u8; 2];
    if getrandom::getrandom(&mut b).is_ok() {
        f64::from(u16::from_be_bytes(b)) / f64::from(u16::MAX)
    } else {
        0.5
    }
}

/// ±20 % so that many nodes cut off together do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * unit_random())
}

/// The wait before the first reconnect after an established session ended, `r` uniform in
/// [0, 1]. With several coordinators the node fails over to another one (which is up)
/// within [`FAILOVER_SPREAD`]; with a single one it is most likely restarting, which ends
/// every node's session at once, so the nodes come back over [`RECONNECT_SPREAD`].
fn after_session(coordinators: usize, r: f64) -> Duration {
    let max = if coordinators > 1 {
        FAILOVER_SPREAD
    } else {
        RECONNECT_SPREAD
    };
    spread(max, r)
}

/// `r` (uniform in [0, 1]) mapped onto [[`MIN_RECONNECT`], `max`], so that thousands of
/// nodes come back spread over `max` instead of in one burst.
fn spread(max: Duration, r: f64) -> Duration {
    MIN_RECONNECT + max.saturating_sub(MIN_RECONNECT).mul_f64(r.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), MIN_BACKOFF);
        assert_eq!(backoff(1), MIN_BACKOFF * 2);
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
    }

    #[test]
    fn reconnects_spread_over_the_window() {
        let delays: Vec<Duration> = (0..400).map(|_| after_session(1, unit_random())).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= MIN_RECONNECT && *d <= RECONNECT_SPREAD));
        // Spread, not clustered: some in each third of the window.
        for third in 0..3u32 {
            let (lo, hi) = (
                RECONNECT_SPREAD * third / 3,
                RECONNECT_SPREAD * (third + 1) / 3,
            );
            assert!(
                delays.iter().filter(|d| **d >= lo && **d < hi).count() > 50,
                "third {third}"
            );
        }
    }

    #[test]
    fn failover_reconnects_within_a_second() {
        // Several coordinators: 0.1-1 s; one: 0.1-3 s (the restart spread).
        assert_eq!(after_session(2, 0.0), MIN_RECONNECT);
        assert_eq!(after_session(2, 1.0), FAILOVER_SPREAD);
        assert_eq!(after_session(3, 0.5), Duration::from_millis(550));
        assert_eq!(after_session(1, 0.0), MIN_RECONNECT);
        assert_eq!(after_session(1, 1.0), RECONNECT_SPREAD);
        assert_eq!(after_session(0, 1.0), RECONNECT_SPREAD);
        // Out-of-range randomness stays in the window.
        assert_eq!(after_session(2, 7.0), FAILOVER_SPREAD);
        for _ in 0..200 {
            let d = after_session(3, unit_random());
            assert!(d >= MIN_RECONNECT && d <= FAILOVER_SPREAD, "{d:?}");
        }
    }

    #[test]
    fn attempt_order_rotates_away_from_the_failed_coordinator() {
        // Nothing known: list order.
        assert_eq!(attempt_order(3, None, None, 7), vec![0, 1, 2]);
        assert_eq!(attempt_order(0, None, None, 0), Vec::<usize>::new());
        // The last one that worked first, then round the list.
        assert_eq!(attempt_order(3, Some(1), None, 7), vec![1, 2, 0]);
        assert_eq!(attempt_order(3, Some(2), None, 7), vec![2, 0, 1]);
        // After a failure: the one after it (pick 0), or further round (pick 1, ...),
        // never the failed one except last; last_good does not bring it back.
        assert_eq!(attempt_order(3, Some(0), Some(0), 0), vec![1, 2, 0]);
        assert_eq!(attempt_order(3, Some(0), Some(0), 1), vec![2, 1, 0]);
        assert_eq!(attempt_order(3, None, Some(2), 0), vec![0, 1, 2]);
        assert_eq!(attempt_order(3, None, Some(2), 1), vec![1, 0, 2]);
        assert_eq!(attempt_order(2, Some(0), Some(0), 12345), vec![1, 0]);
        assert_eq!(attempt_order(2, None, Some(1), 0), vec![0, 1]);
        // A single coordinator is all there is.
        assert_eq!(attempt_order(1, Some(0), Some(0), 3), vec![0]);
        // Stale indices (the list shrank) are ignored.
        assert_eq!(attempt_order(2, Some(5), Some(4), 1), vec![0, 1]);
        assert_eq!(attempt_order(2, Some(1), Some(9), 0), vec![1, 0]);
        // Every coordinator exactly once, failed one last, whatever the pick.
        for len in 1..6 {
            for failed in 0..len {
                for pick in 0..10 {
                    let order = attempt_order(len, None, Some(failed), pick);
                    let mut sorted = order.clone();
                    sorted.sort_unstable();
                    assert_eq!(sorted, (0..len).collect::<Vec<_>>());
                    assert_eq!(order.last(), Some(&failed));
                }
            }
        }
        // The picks spread a dead coordinator's nodes evenly over the others.
        let mut first = [0usize; 4];
        for pick in 0..300 {
            first[attempt_order(4, Some(1), Some(1), pick)[0]] += 1;
        }
        assert_eq!(first, [100, 0, 100, 100]);
    }

    #[test]
    fn rotation_follows_addresses_across_list_changes() {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut r = Rotation::default();
        assert_eq!(r.order(&list(&["a", "b", "c"]), 0), vec![0, 1, 2]);
        r.last_good = Some("b".into());
        assert_eq!(r.order(&list(&["a", "b", "c"]), 0), vec![1, 2, 0]);
        r.last_failed = Some("b".into());
        assert_eq!(r.order(&list(&["a", "b", "c"]), 0), vec![2, 0, 1]);
        // Reordered list: found by address.
        assert_eq!(r.order(&list(&["b", "c", "a"]), 0), vec![1, 2, 0]);
        // The failed coordinator is gone from the list: start anywhere else.
        assert_eq!(r.order(&list(&["c", "a"]), 0), vec![0, 1]);
    }

    #[test]
    fn coordinator_list_is_learned_never_emptied() {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let current = list(&["c1:7443"]);
        // An older coordinator sends none: keep ours.
        assert_eq!(learned_coordinators(&current, vec![]), None);
        assert_eq!(learned_coordinators(&current, list(&[""])), None);
        // The same list: nothing to store.
        assert_eq!(learned_coordinators(&current, list(&["c1:7443"])), None);
        // A different one, in the coordinator's order, duplicates dropped.
        assert_eq!(
            learned_coordinators(&current, list(&["c2:7443", "c1:7443", "c2:7443", ""])),
            Some(list(&["c2:7443", "c1:7443"]))
        );
        // Order counts: every node uses the coordinators' stable order.
        assert_eq!(
            learned_coordinators(&list(&["a:1", "b:1"]), list(&["b:1", "a:1"])),
            Some(list(&["b:1", "a:1"]))
        );
        // An address may also go away.
        assert_eq!(
            learned_coordinators(&list(&["a:1", "b:1"]), list(&["b:1"])),
            Some(list(&["b:1"]))
        );
    }

    /// A coordinator address that swallows every packet costs [`CONNECT_TIMEOUT`] when
    /// there are others to try, and the failover idle timeout (4 s) otherwise.
    #[tokio::test]
    async fn a_silent_coordinator_is_given_up_quickly() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = silent.local_addr().unwrap().to_string();
        let client = quic::Client::new().unwrap();
        let pin = mesh_proto::control::CertPin([1; 32]);
        let liveness = quic::Liveness::FAILOVER;

        let start = std::time::Instant::now();
        let e = attempt(&client, &target, pin, liveness, Some(CONNECT_TIMEOUT))
            .await
            .expect_err("a silent address answered");
        let took = start.elapsed();
        assert!(e.to_string().contains("did not answer within"), "{e:#}");
        assert!(
            took >= CONNECT_TIMEOUT && took < Duration::from_secs(3),
            "{took:?}"
        );

        let start = std::time::Instant::now();
        let e = attempt(&client, &target, pin, liveness, None)
            .await
            .expect_err("a silent address answered");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(3500) && took < Duration::from_secs(6),
            "{took:?}: {e:#}"
        );
    }
}
