//! The control plane client: membership of one network through a coordinator.
//!
//! `meshctl join` hands meshd a membership (token, or coordinator + pin); meshd stores it,
//! then keeps one control session alive: connect (QUIC, pinned), prove its key, receive the
//! netmap and its changes, apply each to the data plane ([`Device::apply_netmap`]) and
//! cache it. On failure it reconnects with exponential backoff and jitter. The data plane
//! never waits for any of this: tunnels run from the cached netmap while the coordinator is
//! unreachable.

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
/// Wait after the coordinator refused us (an admin may change their mind).
const DENIED_RETRY: Duration = Duration::from_secs(60);

/// The membership manager, shared with the local API.
pub struct Control {
    device: Arc<Device>,
    cache: Cache,
    private_key: Key,
    name: String,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
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
        });
        if let Some(m) = control.cache.membership()? {
            match control.cache.netmap()? {
                Some(netmap) if netmap.network.name == m.network => {
                    if let Some(services) = control.cache.services()? {
                        control.device.set_services(resolve_services(&services));
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
        self.device.apply_netmap(None);
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
        self.device.set_control_status(Some(ControlStatus {
            network: m.network.clone(),
            coordinators: m.coordinators.clone(),
            state,
            message,
            netmap_version: version,
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
        loop {
            let delay = match self.session(&client, &mut m).await {
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
                        spread(RECONNECT_SPREAD)
                    } else {
                        jitter(backoff(failures))
                    }
                }
                Err((e, authorised)) => {
                    tracing::info!(network = %m.network, "control connection: {e:#}");
                    self.status(&m, ControlState::Connecting, Some(format!("{e:#}")), None);
                    if authorised {
                        failures = 0;
                        spread(RECONNECT_SPREAD)
                    } else {
                        failures = failures.saturating_add(1);
                        jitter(backoff(failures))
                    }
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection: tries each coordinator address in turn, then runs the session.
    /// Also reports whether this node got authorised during it (to reset the backoff).
    async fn session(
        &self,
        client: &quic::Client,
        m: &mut Membership,
    ) -> Result<(Outcome, bool), (anyhow::Error, bool)> {
        let mut last_error = anyhow::anyhow!("no coordinator address");
        let mut conn = None;
        for target in &m.coordinators {
            match resolve(target).await {
                Ok(addr) => match client.connect(addr, m.pin).await {
                    Ok(c) => {
                        conn = Some(c);
                        break;
                    }
                    Err(e) => last_error = e,
                },
                Err(e) => last_error = e,
            }
        }
        let Some(conn) = conn else {
            return Err((last_error, false));
        };

        let cached = self
            .cache
            .netmap()
            .ok()
            .flatten()
            .filter(|n| n.network.name == m.network);
        let listen_port = self.device.listen_port();
        let local = local_endpoints(self.device.interface(), listen_port);
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
        result.map(|o| (o, authorised)).map_err(|e| (e, authorised))
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

    fn services(&mut self, services: session::Services) {
        if let Err(e) = self.control.cache.set_services(Some(&services)) {
            tracing::warn!("caching the coordinator's services: {e:#}");
        }
        self.control
            .device
            .set_services(resolve_services(&services));
    }
}

/// Resolves the coordinator's service addresses (IPv4: the WireGuard socket's family).
fn resolve_services(s: &session::Services) -> crate::device::traversal::Services {
    use std::net::ToSocketAddrs as _;
    let resolve = |t: &String| -> Option<SocketAddr> {
        match t.to_socket_addrs() {
            Ok(mut addrs) => addrs.find(SocketAddr::is_ipv4),
            Err(e) => {
                tracing::warn!("resolving {t}: {e}");
                None
            }
        }
    };
    crate::device::traversal::Services {
        reflectors: s.reflectors.iter().filter_map(resolve).collect(),
        relay: s.relay.as_ref().and_then(resolve),
        relay_token: Some(s.relay_token),
    }
}

async fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("resolving {target}"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{target} has no IPv4 address"))
}

/// This host's IPv4 addresses (not loopback, not the overlay) with the WireGuard port:
/// candidates for peers on the same LAN.
fn local_endpoints(overlay_interface: &str, port: u16) -> Vec<SocketAddr> {
    let Ok(addrs) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    addrs
        .into_iter()
        .filter(|a| !a.is_loopback() && a.name != overlay_interface && a.ip().is_ipv4())
        .map(|a| SocketAddr::new(a.ip(), port))
        .collect()
}

/// `MIN_BACKOFF * 2^failures`, at most `MAX_BACKOFF`.
fn backoff(failures: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(1u32 << failures.min(16))
        .min(MAX_BACKOFF)
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

/// Uniform in [`MIN_RECONNECT`, `max`]: the first retry after an established session
/// ended (a coordinator restart ends every node's at once), so that thousands of nodes
/// come back spread over `max` instead of in one burst.
fn spread(max: Duration) -> Duration {
    MIN_RECONNECT + max.saturating_sub(MIN_RECONNECT).mul_f64(unit_random())
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
        let delays: Vec<Duration> = (0..400).map(|_| spread(RECONNECT_SPREAD)).collect();
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
}
