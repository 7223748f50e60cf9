//! Names for the network's members: a DNS server answering from the netmap, and the
//! integrations that point the system's resolver at it (issue 14).
//!
//! [`Names`] holds the zone (`mesh_proto::dns::Zone`) built from the netmap in force and
//! the network's domain; it is rebuilt on every netmap `Device::apply_netmap` applies and
//! on every domain the coordinator sends, and published through a `watch` channel.
//! - `server.rs`: UDP and TCP listeners (`dns-listen`: fixed addresses bound at start,
//!   before the TUN exists; `overlay:PORT` bound when the overlay address appears, again
//!   when it moves); every query is answered from the zone published last.
//! - `resolved.rs`: systemd-resolved (`resolvectl dns|domain|revert`), `hosts.rs`: a managed
//!   block in the hosts file. `integrate` runs them as the zone changes and undoes them on
//!   stop.

pub mod hosts;
pub mod resolved;
pub mod server;

use std::net::IpAddr;
use std::sync::Arc;

use mesh_proto::api::DnsStatus;
use mesh_proto::dns::{Zone, DEFAULT_DOMAIN};
use mesh_proto::netmap::Netmap;
use mesh_proto::Key;
use parking_lot::Mutex;
use tokio::sync::watch;

/// The zone in force and the overlay address it is served on.
#[derive(Debug, Clone)]
pub struct Published {
    /// The network's zone.
    pub zone: Arc<Zone>,
    /// This node's overlay address.
    pub address: IpAddr,
    /// The network's name.
    pub network: String,
}

/// The names state: what the last netmap and domain make.
pub struct Names {
    own_key: Key,
    /// `dns` in meshd.toml: when off, nothing is built or shown.
    enabled: bool,
    inputs: Mutex<Inputs>,
    tx: watch::Sender<Option<Published>>,
    status: Mutex<DnsStatus>,
}

struct Inputs {
    netmap: Option<Netmap>,
    domain: String,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names").finish_non_exhaustive()
    }
}

impl Names {
    /// No zone yet; the default domain until the coordinator sends one.
    pub fn new(own_key: Key, enabled: bool) -> Names {
        Names {
            own_key,
            enabled,
            inputs: Mutex::new(Inputs {
                netmap: None,
                domain: DEFAULT_DOMAIN.to_owned(),
            }),
            tx: watch::channel(None).0,
            status: Mutex::new(DnsStatus::default()),
        }
    }

    /// The netmap in force changed (None: none any more).
    pub fn set_netmap(&self, netmap: Option<&Netmap>) {
        if !self.enabled {
            return;
        }
        let mut inputs = self.inputs.lock();
        inputs.netmap = netmap.cloned();
        self.publish(&inputs);
    }

    /// The network's domain changed.
    pub fn set_domain(&self, domain: &str) {
        let mut inputs = self.inputs.lock();
        let domain = match mesh_proto::dns::check_domain(domain) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    "the coordinator's domain {domain:?}: {e}; keeping {}",
                    inputs.domain
                );
                return;
            }
        };
        if inputs.domain != domain {
            inputs.domain = domain;
            self.publish(&inputs);
        }
    }

    fn publish(&self, inputs: &Inputs) {
        let published = inputs.netmap.as_ref().map(|n| Published {
            zone: Arc::new(Zone::new(n, &self.own_key, &inputs.domain)),
            address: n.address.addr(),
            network: n.network.name.clone(),
        });
        {
            let mut s = self.status.lock();
            s.zone = published.as_ref().map(|p| p.zone.origin().to_owned());
        }
        self.tx.send_replace(published);
    }

    /// Follows the published zone.
    pub fn subscribe(&self) -> watch::Receiver<Option<Published>> {
        self.tx.subscribe()
    }

    /// What `meshctl status` shows (None: names are off).
    pub fn status(&self) -> Option<DnsStatus> {
        self.enabled.then(|| self.status.lock().clone())
    }

    /// Updates what `meshctl status` shows.
    pub fn update_status(&self, f: impl FnOnce(&mut DnsStatus)) {
        f(&mut self.status.lock());
    }
}

/// The system resolver's integrations for one interface, as configured.
#[derive(Debug)]
pub struct Integration {
    interface: String,
    config: crate::config::DnsConfig,
    names: Arc<Names>,
    /// resolvectl configured: (server, zone).
    resolved: Option<(String, String)>,
    /// resolvectl failed in `auto`: not tried again.
    resolved_unusable: bool,
    /// The network whose hosts block is written.
    hosts: Option<String>,
}

impl Integration {
    /// Nothing done yet.
    pub fn new(interface: String, config: crate::config::DnsConfig, names: Arc<Names>) -> Self {
        Integration {
            interface,
            config,
            names,
            resolved: None,
            resolved_unusable: false,
            hosts: None,
        }
    }

    /// The server address resolvers are told: the first DNS listener on the overlay,
    /// else the first fixed one, as `address` or `address:port`.
    fn server(&self, p: &Published) -> Option<String> {
        use crate::config::DnsListen;
        let addr = self
            .config
            .listen
            .iter()
            .find_map(|l| match l {
                DnsListen::Overlay(port) => Some(std::net::SocketAddr::new(p.address, *port)),
                DnsListen::Fixed(_) => None,
            })
            .or_else(|| {
                self.config.listen.iter().find_map(|l| match l {
                    DnsListen::Fixed(a) => Some(*a),
                    DnsListen::Overlay(_) => None,
                })
            })?;
        Some(match (addr.port(), addr.ip()) {
            (53, ip) => ip.to_string(),
            _ => addr.to_string(),
        })
    }

    /// Brings the integrations in line with `published` (None: no netmap, undo them).
    pub fn apply(&mut self, published: Option<&Published>) {
        use crate::config::Switch;
        let Some(p) = published else {
            self.stop();
            return;
        };
        let mut error = None;
        let server = self.server(p);
        let zone = p.zone.origin().to_owned();
        let mut resolved_now = false;
        if self.config.resolved != Switch::Off && !self.resolved_unusable {
            if let Some(server) = server {
                let want = (server.clone(), zone.clone());
                if self.resolved.as_ref() == Some(&want) {
                    resolved_now = true;
                } else {
                    let result = resolved::set_commands(&self.interface, &server, &zone)
                        .iter()
                        .try_for_each(|args| resolved::run(&self.config.resolvectl, args));
                    match result {
                        Ok(()) => {
                            tracing::info!(interface = %self.interface, %server, %zone, "systemd-resolved: per-link DNS set");
                            self.resolved = Some(want);
                            resolved_now = true;
                        }
                        Err(e) if self.config.resolved == Switch::Auto => {
                            tracing::info!("systemd-resolved not used: {e:#}");
                            self.resolved_unusable = true;
                        }
                        Err(e) => {
                            tracing::warn!("systemd-resolved: {e:#}");
                            error = Some(format!("{e:#}"));
                        }
                    }
                }
            }
        }
        let hosts_wanted = match self.config.hosts {
            Switch::On => true,
            Switch::Off => false,
            Switch::Auto => !resolved_now,
        };
        let file = &self.config.hosts_file;
        if let Some(old) = self.hosts.take() {
            if !hosts_wanted || old != p.network {
                if let Err(e) = hosts::update(file, &old, None) {
                    tracing::warn!("{e:#}");
                }
            } else {
                self.hosts = Some(old);
            }
        }
        if hosts_wanted {
            let block = hosts::block(&p.network, &p.zone.hosts());
            match hosts::update(file, &p.network, Some(&block)) {
                Ok(()) => self.hosts = Some(p.network.clone()),
                Err(e) => {
                    tracing::warn!("{e:#}");
                    error = Some(format!("{e:#}"));
                }
            }
        }
        let (resolved, hosts) = (
            self.resolved.as_ref().map(|_| self.interface.clone()),
            self.hosts.as_ref().map(|_| file.display().to_string()),
        );
        self.names.update_status(|s| {
            s.resolved = resolved;
            s.hosts_file = hosts;
            s.error = error;
        });
    }

    /// Undoes everything this did (meshd stopping, or the netmap gone).
    pub fn stop(&mut self) {
        if self.resolved.take().is_some() {
            let args = resolved::revert_command(&self.interface);
            if let Err(e) = resolved::run(&self.config.resolvectl, &args) {
                tracing::warn!("systemd-resolved: {e:#}");
            }
        }
        if let Some(network) = self.hosts.take() {
            if let Err(e) = hosts::update(&self.config.hosts_file, &network, None) {
                tracing::warn!("{e:#}");
            }
        }
        self.names.update_status(|s| {
            s.resolved = None;
            s.hosts_file = None;
        });
    }
}

/// Follows the published zone and keeps the integrations in line (blocking work on the
/// blocking pool, one change at a time).
pub async fn integrate(names: Arc<Names>, integration: Arc<Mutex<Integration>>) {
    let mut rx = names.subscribe();
    loop {
        let published = rx.borrow_and_update().clone();
        let i = integration.clone();
        if tokio::task::spawn_blocking(move || i.lock().apply(published.as_ref()))
            .await
            .is_err()
        {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
