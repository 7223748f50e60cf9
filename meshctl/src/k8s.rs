//! `meshctl k8s`: what kubeadm, kubelet, etcd and flannel need on this node, derived from
//! meshd's status (overlay address, interface, MTU), so that Kubernetes runs over the mesh.
//!
//! One status exchange through [`crate::status::query`]; [`report`] derives the values,
//! [`render`] prints them with one explanation line each, `--json` prints the
//! [`K8sReport`] with stable kebab-case keys.

use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use mesh_proto::api::{ControlState, Status};
use serde::Serialize;

/// Bytes VXLAN adds to a pod packet over an IPv4 underlay: outer IPv4 (20) + UDP (8) +
/// VXLAN (8) + inner Ethernet (14). Flannel's vxlan backend subtracts the same.
pub const VXLAN_OVERHEAD_V4: u16 = 50;
/// The same over an IPv6 underlay (outer IPv6 header is 40 bytes).
pub const VXLAN_OVERHEAD_V6: u16 = 70;
/// The Kubernetes API server's port (kubeadm's default `bindPort`).
pub const API_PORT: u16 = 6443;
/// etcd's client port.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const ETCD_PEER_PORT: u16 = 2380;
/// Smallest MTU an IPv4 host must accept (RFC 791); a VXLAN MTU below it is useless.
const MIN_MTU: u16 = 576;

/// Everything `meshctl k8s` prints, as `--json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct K8sReport {
    /// The node's overlay address: kubelet's `--node-ip`.
    pub node_ip: IpAddr,
    /// Its IPv6 overlay address in a dual-stack network: the second `--node-ip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ip6: Option<IpAddr>,
    /// The mesh interface (flannel's `--iface`).
    pub interface: String,
    /// The mesh interface's MTU.
    pub mesh_mtu: u16,
    /// The network joined, if any (none for a hand-configured node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Extra kubelet flags (`KUBELET_EXTRA_ARGS`).
    pub kubelet_args: Vec<String>,
    /// kubeadm configuration fields.
    pub kubeadm: Kubeadm,
    /// etcd flags (kubeadm's stacked etcd derives the same from `advertiseAddress`).
    pub etcd: Etcd,
    /// flannel settings.
    pub flannel: Flannel,
    /// A CoreDNS server block for the network's names (absent: meshd serves no names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coredns: Option<CoreDns>,
}

/// CoreDNS settings: pods do not see the node's /etc/hosts or its resolver, so the
/// cluster DNS forwards the network's zone to meshd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CoreDns {
    /// The zone, `<network>.<domain>`.
    pub zone: String,
    /// Where to forward it: this node's DNS server (`meshctl status`'s dns listen).
    pub forward: String,
    /// The server block for the Corefile (the `coredns` ConfigMap in kube-system).
    pub corefile: String,
}

/// The CoreDNS block for meshd's zone, served at `forward` (`IP:port`; the port is left
/// out when it is 53). Forwarding to the overlay address first, else the first listener.
fn coredns(status: &Status) -> Option<CoreDns> {
    let dns = status.dns.as_ref()?;
    let zone = dns.zone.clone()?;
    let overlay = status.address.map(|a| a.addr());
    let listen: Vec<SocketAddr> = dns.listen.iter().filter_map(|l| l.parse().ok()).collect();
    let at = listen
        .iter()
        .find(|a| Some(a.ip()) == overlay)
        .or(listen.first())?;
    let forward = if at.port() == 53 {
        at.ip().to_string()
    } else {
        at.to_string()
    };
    let corefile = format!("{zone}:53 {{\n    errors\n    cache 5\n    forward . {forward}\n}}\n");
    Some(CoreDns {
        zone,
        forward,
        corefile,
    })
}

/// kubeadm configuration values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeadm {
    /// `InitConfiguration.localAPIEndpoint.advertiseAddress` (and
    /// `JoinConfiguration.controlPlane.localAPIEndpoint.advertiseAddress`).
    pub advertise_address: IpAddr,
    /// `ClusterConfiguration.controlPlaneEndpoint`, for the first control-plane node.
    pub control_plane_endpoint: String,
}

/// etcd flags, each as etcd takes it (comma-separated URLs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Etcd {
    /// `--listen-client-urls`: loopback (the local API server) and the overlay.
    pub listen_client_urls: String,
    /// `--advertise-client-urls`.
    pub advertise_client_urls: String,
    /// `--listen-peer-urls`.
    pub listen_peer_urls: String,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: String,
}

/// flannel settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Flannel {
    /// `--iface`.
    pub iface: String,
    /// MTU of flannel's VXLAN device over the mesh: mesh MTU minus VXLAN's overhead.
    pub vxlan_mtu: u16,
    /// MTU for the host-gw backend over mesh routes: the mesh MTU itself.
    pub host_gw_mtu: u16,
}

/// Queries meshd at `socket` and prints the Kubernetes settings, as text or pretty JSON.
pub fn run(socket: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let status = crate::status::query(socket).map_err(anyhow::Error::msg)?;
    if json {
        let report = report(&status).map_err(anyhow::Error::msg)?;
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        // `render` checks the same conditions; fail the same way, before printing.
        report(&status).map_err(anyhow::Error::msg)?;
        out.write_all(render(&status).as_bytes())?;
    }
    Ok(())
}

/// Derives the settings from meshd's status; the error is a complete one-line message
/// (no overlay address yet, an MTU too small for VXLAN).
pub fn report(status: &Status) -> Result<K8sReport, String> {
    let Some(address) = status.address else {
        return Err(no_address(status));
    };
    let ip = address.addr();
    let overhead = if ip.is_ipv4() {
        VXLAN_OVERHEAD_V4
    } else {
        VXLAN_OVERHEAD_V6
    };
    let vxlan_mtu = status
        .mtu
        .checked_sub(overhead)
        .filter(|m| *m >= MIN_MTU)
        .ok_or_else(|| {
            format!(
                "the mesh MTU {} leaves no room for VXLAN ({overhead} bytes) above {MIN_MTU}: \
                 raise the network's --mtu, or use flannel's host-gw backend over mesh routes",
                status.mtu
            )
        })?;
    let at = |port: u16| SocketAddr::new(ip, port).to_string();
    let url = |port: u16| format!("https://{}", at(port));
    let loopback = if ip.is_ipv4() {
        "https://127.0.0.1"
    } else {
        "https://[::1]"
    };
    // Dual stack: kubelet takes both families, IPv4 first (the cluster's primary family).
    let ip6 = status
        .address6
        .map(|a| a.addr())
        .filter(|a6| a6.is_ipv6() && ip.is_ipv4());
    let node_ips = match ip6 {
        Some(a6) => format!("{ip},{a6}"),
        None => ip.to_string(),
    };
    Ok(K8sReport {
        node_ip: ip,
        node_ip6: ip6,
        interface: status.interface.clone(),
        mesh_mtu: status.mtu,
        network: status.control.as_ref().map(|c| c.network.clone()),
        kubelet_args: vec![format!("--node-ip={node_ips}")],
        kubeadm: Kubeadm {
            advertise_address: ip,
            control_plane_endpoint: at(API_PORT),
        },
        etcd: Etcd {
            listen_client_urls: format!("{loopback}:{ETCD_CLIENT_PORT},{}", url(ETCD_CLIENT_PORT)),
            advertise_client_urls: url(ETCD_CLIENT_PORT),
            listen_peer_urls: url(ETCD_PEER_PORT),
            initial_advertise_peer_urls: url(ETCD_PEER_PORT),
        },
        flannel: Flannel {
            iface: status.interface.clone(),
            vxlan_mtu,
            host_gw_mtu: status.mtu,
        },
        coredns: coredns(status),
    })
}

/// Why there is no overlay address, and what to do about it.
fn no_address(status: &Status) -> String {
    match &status.control {
        Some(c) if c.state == ControlState::Pending => format!(
            "this node has no overlay address yet: it waits for an admin to authorise it in \
             network {} (meshctl admin authorize {} …)",
            c.network, c.network
        ),
        Some(c) => format!(
            "this node has no overlay address yet (network {}: {}): join a network first: \
             meshctl join …",
            c.network,
            state_word(c.state)
        ),
        None => {
            "this node has no overlay address yet: join a network first: meshctl join …".to_owned()
        }
    }
}

fn state_word(state: ControlState) -> &'static str {
    match state {
        ControlState::Connecting => "connecting",
        ControlState::Pending => "pending",
        ControlState::Connected => "connected",
        ControlState::Denied => "denied",
    }
}

/// The text form: each setting, then one indented line saying what it is for. Empty when
/// [`report`] fails (callers check that first).
pub fn render(status: &Status) -> String {
    let Ok(r) = report(status) else {
        return String::new();
    };
    let mut s = String::new();
    let ip = r.node_ip;
    let overhead = r.mesh_mtu - r.flannel.vxlan_mtu;
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    // Writing to a String cannot fail.
    let network = r
        .network
        .as_deref()
        .map(|n| format!(", network {n}"))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "# Kubernetes over wiremesh: node {ip} on {} (mtu {}{network})",
        r.interface, r.mesh_mtu
    );
    let _ = writeln!(s, "\nkubelet:");
    let _ = writeln!(s, "  {}", r.kubelet_args.join(" "));
    let _ = writeln!(
        s,
        "    # the address kubelet registers (InternalIP): kubectl exec/logs reach it across sites \
         (/etc/default/kubelet: KUBELET_EXTRA_ARGS={})",
        r.kubelet_args.join(" ")
    );
    let _ = writeln!(s, "\nkubeadm:");
    let _ = writeln!(
        s,
        "  localAPIEndpoint.advertiseAddress: {}",
        r.kubeadm.advertise_address
    );
    let _ = writeln!(
        s,
        "    # InitConfiguration (control-plane joins: JoinConfiguration.controlPlane): the API server \
         listens and advertises on the overlay"
    );
    let _ = writeln!(
        s,
        "  controlPlaneEndpoint: {}",
        r.kubeadm.control_plane_endpoint
    );
    let _ = writeln!(
        s,
        "    # ClusterConfiguration, first control-plane node only: every node reaches the API server here"
    );
    let _ = writeln!(s, "\netcd:");
    let _ = writeln!(s, "  --listen-client-urls={}", r.etcd.listen_client_urls);
    let _ = writeln!(
        s,
        "    # clients: the local API server over loopback, other control-plane nodes over the mesh"
    );
    let _ = writeln!(
        s,
        "  --advertise-client-urls={}",
        r.etcd.advertise_client_urls
    );
    let _ = writeln!(
        s,
        "    # the client URL this member announces: an overlay address every member can reach"
    );
    let _ = writeln!(s, "  --listen-peer-urls={}", r.etcd.listen_peer_urls);
    let _ = writeln!(
        s,
        "  --initial-advertise-peer-urls={}",
        r.etcd.initial_advertise_peer_urls
    );
    let _ = writeln!(
        s,
        "    # peer traffic (raft) between members stays on the mesh (kubeadm derives all four from advertiseAddress)"
    );
    let _ = writeln!(s, "\nflannel:");
    let _ = writeln!(s, "  --iface={}", r.flannel.iface);
    let _ = writeln!(
        s,
        "    # flannel takes this interface's address as the node's public IP: the VXLAN FDB points at overlay addresses"
    );
    let _ = writeln!(s, "  vxlan mtu: {}", r.flannel.vxlan_mtu);
    let _ = writeln!(
        s,
        "    # mesh mtu {} - {overhead} bytes of VXLAN over {family}; flannel derives it from --iface (FLANNEL_MTU in /run/flannel/subnet.env)",
        r.mesh_mtu
    );
    let _ = writeln!(s, "  host-gw mtu: {}", r.flannel.host_gw_mtu);
    let _ = writeln!(
        s,
        "    # the host-gw backend over mesh routes (pod CIDR advertised and approved): no encapsulation inside WireGuard"
    );
    if let Some(c) = &r.coredns {
        let _ = writeln!(s, "\ncoredns:");
        for line in c.corefile.lines() {
            let _ = writeln!(s, "  {line}");
        }
        let _ = writeln!(
            s,
            "    # a server block for the Corefile (ConfigMap kube-system/coredns): pods resolve {} through meshd (they see neither the node's /etc/hosts nor its resolver)",
            c.zone
        );
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mesh_proto::api::{ControlStatus, DropCounters};

    use super::*;

    fn status(address: Option<&str>, mtu: u16) -> Status {
        Status {
            address6: None,
            interface: "mesh0".to_owned(),
            address: address.map(|a| a.parse().unwrap()),
            mtu,
            public_key: mesh_proto::Key([7; 32]),
            listen_port: 51820,
            peers: Vec::new(),
            dropped: DropCounters::default(),
            control: Some(ControlStatus {
                network: "k8s".to_owned(),
                coordinators: vec!["203.0.113.1:7443".to_owned()],
                state: ControlState::Connected,
                message: None,
                netmap_version: Some(3),
                coordinator: None,
            }),
            filter: None,
            dns: Some(mesh_proto::api::DnsStatus {
                listen: vec!["10.9.8.1:53".to_owned()],
                zone: Some("k8s.mesh.internal".to_owned()),
                ..Default::default()
            }),
            networks: Vec::new(),
        }
    }

    #[test]
    fn report_from_a_joined_node() {
        let r = report(&status(Some("10.9.8.1/24"), 1280)).unwrap();
        assert_eq!(r.node_ip.to_string(), "10.9.8.1");
        assert_eq!(r.kubelet_args, ["--node-ip=10.9.8.1"]);
        assert_eq!(r.kubeadm.advertise_address.to_string(), "10.9.8.1");
        assert_eq!(r.kubeadm.control_plane_endpoint, "10.9.8.1:6443");
        assert_eq!(
            r.etcd.listen_client_urls,
            "https://127.0.0.1:2379,https://10.9.8.1:2379"
        );
        assert_eq!(r.etcd.advertise_client_urls, "https://10.9.8.1:2379");
        assert_eq!(r.etcd.listen_peer_urls, "https://10.9.8.1:2380");
        assert_eq!(r.etcd.initial_advertise_peer_urls, "https://10.9.8.1:2380");
        assert_eq!(r.flannel.iface, "mesh0");
        assert_eq!(r.flannel.vxlan_mtu, 1230);
        assert_eq!(r.flannel.host_gw_mtu, 1280);
    }

    #[test]
    fn json_keys_are_stable_kebab_case() {
        let r = report(&status(Some("10.9.8.1/24"), 1280)).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "node-ip": "10.9.8.1",
                "interface": "mesh0",
                "mesh-mtu": 1280,
                "network": "k8s",
                "kubelet-args": ["--node-ip=10.9.8.1"],
                "kubeadm": {
                    "advertise-address": "10.9.8.1",
                    "control-plane-endpoint": "10.9.8.1:6443"
                },
                "etcd": {
                    "listen-client-urls": "https://127.0.0.1:2379,https://10.9.8.1:2379",
                    "advertise-client-urls": "https://10.9.8.1:2379",
                    "listen-peer-urls": "https://10.9.8.1:2380",
                    "initial-advertise-peer-urls": "https://10.9.8.1:2380"
                },
                "flannel": {"iface": "mesh0", "vxlan-mtu": 1230, "host-gw-mtu": 1280},
                "coredns": {
                    "zone": "k8s.mesh.internal",
                    "forward": "10.9.8.1",
                    "corefile": "k8s.mesh.internal:53 {\n    errors\n    cache 5\n    forward . 10.9.8.1\n}\n"
                }
            })
        );
    }

    #[test]
    fn ipv6_overlay_brackets_and_bigger_overhead() {
        let r = report(&status(Some("fd00:9::1/64"), 1420)).unwrap();
        assert_eq!(r.kubeadm.control_plane_endpoint, "[fd00:9::1]:6443");
        assert_eq!(
            r.etcd.listen_client_urls,
            "https://[::1]:2379,https://[fd00:9::1]:2379"
        );
        assert_eq!(r.flannel.vxlan_mtu, 1350);
        assert_eq!(r.flannel.host_gw_mtu, 1420);
    }

    #[test]
    fn no_address_is_one_clear_line() {
        let mut s = status(None, 1280);
        s.control = None;
        assert_eq!(
            report(&s).unwrap_err(),
            "this node has no overlay address yet: join a network first: meshctl join …"
        );
        assert_eq!(render(&s), "");
        let mut s = status(None, 1280);
        s.control.as_mut().unwrap().state = ControlState::Pending;
        let e = report(&s).unwrap_err();
        assert!(e.contains("meshctl admin authorize k8s"), "{e}");
        s.control.as_mut().unwrap().state = ControlState::Denied;
        let e = report(&s).unwrap_err();
        assert!(e.contains("denied") && e.contains("meshctl join"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn tiny_mtu_is_refused() {
        let e = report(&status(Some("10.9.8.1/24"), 600)).unwrap_err();
        assert!(e.contains("mesh MTU 600"), "{e}");
        assert!(report(&status(Some("10.9.8.1/24"), 20)).is_err());
    }

    /// docs/kubernetes.md shows this text: keep them in step.
    #[test]
    fn text_form() {
        let mut dual = status(Some("10.9.8.1/24"), 1280);
        dual.address6 = Some("fd5e:1f2a:9c00::1/64".parse().unwrap());
        let text = render(&dual);
        let want = "\
# Kubernetes over wiremesh: node 10.9.8.1 on mesh0 (mtu 1280, network k8s)

kubelet:
  --node-ip=10.9.8.1,fd5e:1f2a:9c00::1
    # the address kubelet registers (InternalIP): kubectl exec/logs reach it across sites (/etc/default/kubelet: KUBELET_EXTRA_ARGS=--node-ip=10.9.8.1,fd5e:1f2a:9c00::1)

kubeadm:
  localAPIEndpoint.advertiseAddress: 10.9.8.1
    # InitConfiguration (control-plane joins: JoinConfiguration.controlPlane): the API server listens and advertises on the overlay
  controlPlaneEndpoint: 10.9.8.1:6443
    # ClusterConfiguration, first control-plane node only: every node reaches the API server here

etcd:
  --listen-client-urls=https://127.0.0.1:2379,https://10.9.8.1:2379
    # clients: the local API server over loopback, other control-plane nodes over the mesh
  --advertise-client-urls=https://10.9.8.1:2379
    # the client URL this member announces: an overlay address every member can reach
  --listen-peer-urls=https://10.9.8.1:2380
  --initial-advertise-peer-urls=https://10.9.8.1:2380
    # peer traffic (raft) between members stays on the mesh (kubeadm derives all four from advertiseAddress)

flannel:
  --iface=mesh0
    # flannel takes this interface's address as the node's public IP: the VXLAN FDB points at overlay addresses
  vxlan mtu: 1230
    # mesh mtu 1280 - 50 bytes of VXLAN over IPv4; flannel derives it from --iface (FLANNEL_MTU in /run/flannel/subnet.env)
  host-gw mtu: 1280
    # the host-gw backend over mesh routes (pod CIDR advertised and approved): no encapsulation inside WireGuard

coredns:
  k8s.mesh.internal:53 {
      errors
      cache 5
      forward . 10.9.8.1
  }
    # a server block for the Corefile (ConfigMap kube-system/coredns): pods resolve k8s.mesh.internal through meshd (they see neither the node's /etc/hosts nor its resolver)
";
        assert_eq!(text, want);
        let docs = include_str!("../../docs/kubernetes.md");
        assert!(
            docs.contains(want),
            "docs/kubernetes.md must show `meshctl k8s` exactly as printed here"
        );
    }
}
