//! The cluster's own services over the mesh (issue 14): what `meshctl k8s --json` tells a
//! node, etcd members started with exactly the URLs it prints, and flannel-style pod
//! networks between "pod" namespaces: the vxlan backend (kernel VXLAN devices whose FDB
//! points at overlay addresses) and the host-gw backend (approved mesh routes).
//!
//! ```text
//!   pod i (netns)                       node i (netns, meshd)
//!   eth0 10.244.<i+1>.2/24 ── veth ── pod0 10.244.<i+1>.1/24    flannel.1 10.244.<i+1>.0/32 ─┐ VXLAN 8472
//!   eth1 10.245.<i+1>.2/24 ── veth ── hgw0 10.245.<i+1>.1/24    (10.245.<j+1>.0/24 dev mesh) │ to overlay
//!                                                               mesh TUN (10.9.8.x) ─────────┘ addresses
//! ```
//! The pod prefixes (10.244.0.0/16, 10.245.0.0/16) are outside every lab range (underlay
//! documentation ranges, 192.168.x site LANs, the 10.9.8.0/24 overlay).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::meshd::Meshd;
use crate::netns::Netns;
use crate::util::{self, TempDir};

/// What `meshctl --socket … k8s --json` prints for `node` (the real meshctl binary against
/// the node's meshd socket).
pub fn report(node: &Meshd) -> anyhow::Result<Value> {
    let out = node.meshctl_ok(&["k8s", "--json"])?;
    serde_json::from_str(out.trim())
        .with_context(|| format!("meshctl k8s --json printed no JSON: {out:?}"))
}

/// A string field of a report (`"etcd"`, `"listen-peer-urls"`), or an error naming it.
pub fn field<'a>(report: &'a Value, section: &str, key: &str) -> anyhow::Result<&'a str> {
    report[section][key]
        .as_str()
        .with_context(|| format!("meshctl k8s --json has no {section}.{key}: {report}"))
}

/// A numeric field of a report's top level or a section (`None`: top level).
pub fn number(report: &Value, section: Option<&str>, key: &str) -> anyhow::Result<u16> {
    let v = match section {
        Some(s) => &report[s][key],
        None => &report[key],
    };
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .with_context(|| format!("meshctl k8s --json has no {section:?}.{key}: {report}"))
}

/// The hosts of comma-separated https URLs (`https://10.9.8.1:2379` → `10.9.8.1`), for
/// the certificates' subject alternative names. Anything but an https URL with a port is
/// an error (so a change in what meshctl prints is noticed, not papered over).
pub fn https_hosts(urls: &str) -> anyhow::Result<Vec<String>> {
    urls.split(',')
        .map(|u| {
            u.strip_prefix("https://")
                .and_then(|rest| rest.rsplit_once(':'))
                .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                .map(|(host, _)| host.to_owned())
                .with_context(|| format!("not an https URL with a port: {u:?} (in {urls:?})"))
        })
        .collect()
}

/// Runs openssl with `args` in `dir`; fails with its output unless it exits 0.
fn openssl(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    util::run(
        std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args),
    )
    .map(|_| ())
    .context("openssl (apt-get install openssl)")
}

/// An etcd CA and, per member, one key and certificate for its client and peer ports (as
/// kubeadm's `etcd/ca`, `etcd/server` and `etcd/peer`, in one): P-256 keys, both
/// `serverAuth` and `clientAuth`, the hosts of the member's URLs as IP addresses.
fn issue_certificates(
    dir: &std::path::Path,
    members: &[(String, Vec<String>)],
) -> anyhow::Result<()> {
    let curve = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=etcd-ca"];
    ca.extend_from_slice(&curve);
    ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &ca)?;
    for (name, hosts) in members {
        let mut sans: Vec<String> = hosts.iter().map(|h| format!("IP:{h}")).collect();
        sans.sort();
        sans.dedup();
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
                sans.join(",")
            ),
        )?;
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let subject = format!("/CN={name}");
        let mut req = vec!["req", "-subj", &subject];
        req.extend_from_slice(&curve);
        req.extend_from_slice(&["-keyout", &key, "-out", &csr]);
        openssl(dir, &req)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        )?;
    }
    Ok(())
}

/// One etcd member: where it runs, its client URL and its process.
#[derive(Debug)]
struct Member {
    name: String,
    ns: Arc<Netns>,
    /// `--advertise-client-urls` (one URL).
    client_url: String,
    /// `--initial-advertise-peer-urls`.
    peer_url: String,
    /// The CA, its certificate and key: what etcdctl in its namespace presents.
    tls: [String; 3],
    argv: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// `--cacert`, `--cert`, `--key` for etcdctl: this member's certificate as a client
    /// (kubeadm's API server and health check have their own, from the same CA).
    fn tls_args(&self) -> [String; 6] {
        let [ca, cert, key] = &self.tls;
        [
            "--cacert".into(),
            ca.clone(),
            "--cert".into(),
            cert.clone(),
            "--key".into(),
            key.clone(),
        ]
    }
}

/// An etcd cluster with one member per node, each started with exactly the etcd URLs that
/// node's `meshctl k8s --json` printed, over TLS as kubeadm runs it (a CA of its own,
/// client and peer certificate authentication: [`issue_certificates`]). Dropping it kills
/// the members and removes their data.
#[derive(Debug)]
pub struct MeshEtcd {
    members: Vec<Member>,
    dir: TempDir,
}

impl MeshEtcd {
    /// Starts a member named `name` in `ns` for each `(name, ns, report)`, with
    /// `--listen-client-urls`, `--advertise-client-urls`, `--listen-peer-urls` and
    /// `--initial-advertise-peer-urls` taken verbatim from the report's `etcd` section,
    /// certificates for their hosts, and waits until every member answers `endpoint
    /// health`.
    pub fn start(nodes: &[(String, Arc<Netns>, Value)]) -> anyhow::Result<MeshEtcd> {
        if !crate::etcd::have_etcd() {
            bail!("etcd is not installed (apt-get install etcd-server etcd-client)");
        }
        let dir = TempDir::new("k8setcd")?;
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "wm-k8s-etcd".into());
        let urls = |report: &Value| -> anyhow::Result<Vec<String>> {
            [
                "listen-client-urls",
                "advertise-client-urls",
                "listen-peer-urls",
                "initial-advertise-peer-urls",
            ]
            .iter()
            .map(|k| field(report, "etcd", k).and_then(https_hosts))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(|v| v.concat())
        };
        let names = nodes
            .iter()
            .map(|(name, _, report)| Ok((name.clone(), urls(report)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        issue_certificates(dir.path(), &names)?;
        let pem = |file: String| dir.path().join(file).to_string_lossy().into_owned();
        let ca = pem("ca.crt".to_owned());
        let mut members = Vec::new();
        for (name, ns, report) in nodes {
            let client_url = field(report, "etcd", "advertise-client-urls")?.to_owned();
            let peer_url = field(report, "etcd", "initial-advertise-peer-urls")?.to_owned();
            let data = dir.path().join(name);
            let (cert, key) = (pem(format!("{name}.crt")), pem(format!("{name}.key")));
            let mut argv = vec![
                "etcd".to_owned(),
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                data.to_string_lossy().into_owned(),
                "--listen-client-urls".into(),
                field(report, "etcd", "listen-client-urls")?.to_owned(),
                "--advertise-client-urls".into(),
                client_url.clone(),
                "--listen-peer-urls".into(),
                field(report, "etcd", "listen-peer-urls")?.to_owned(),
                "--initial-advertise-peer-urls".into(),
                peer_url.clone(),
                "--initial-cluster-token".into(),
                token.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--log-level".into(),
                "warn".into(),
            ];
            // kubeadm's etcd manifest: both ports authenticate clients against the CA.
            for (flag, value) in [
                ("--cert-file", &cert),
                ("--key-file", &key),
                ("--trusted-ca-file", &ca),
                ("--peer-cert-file", &cert),
                ("--peer-key-file", &key),
                ("--peer-trusted-ca-file", &ca),
            ] {
                argv.push(flag.into());
                argv.push(value.clone());
            }
            argv.push("--client-cert-auth=true".into());
            argv.push("--peer-client-cert-auth=true".into());
            members.push(Member {
                name: name.clone(),
                ns: ns.clone(),
                client_url,
                peer_url,
                tls: [ca.clone(), cert, key],
                argv,
                log: dir.path().join(format!("{name}.log")),
                child: None,
            });
        }
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.argv.push("--initial-cluster".into());
            m.argv.push(initial.clone());
        }
        let mut cluster = MeshEtcd { members, dir };
        for m in &mut cluster.members {
            let argv: Vec<&str> = m.argv.iter().map(String::as_str).collect();
            eprintln!("[k8s] {} in {}: {}", m.name, m.ns.name(), argv.join(" "));
            m.child = Some(m.ns.spawn_logged(&argv, &[], &m.log)?);
        }
        cluster.wait_healthy(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`'s advertised client URL (on the overlay).
    pub fn client_url(&self, i: usize) -> &str {
        &self.members[i].client_url
    }

    /// Member `i`'s advertised peer URL (on the overlay).
    pub fn peer_url(&self, i: usize) -> &str {
        &self.members[i].peer_url
    }

    /// `etcdctl --endpoints ENDPOINTS ARGS…` run in member `i`'s namespace (as that node's
    /// API server would); fails with etcdctl's output unless it exits 0.
    pub fn ctl_at(&self, i: usize, endpoints: &str, args: &[&str]) -> anyhow::Result<String> {
        let m = &self.members[i];
        let mut cmd = m.ns.command("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoints, "--command-timeout=5s"])
            .args(m.tls_args())
            .args(args);
        util::run(&mut cmd).with_context(|| format!("etcdctl on {}", m.name))
    }

    /// How many of `endpoints` `etcdctl endpoint health`, run in member `i`'s namespace,
    /// reports healthy (etcdctl 3.4 prints the verdicts on stderr).
    pub fn healthy_count(&self, i: usize, endpoints: &str) -> usize {
        let m = &self.members[i];
        let mut cmd = m.ns.command("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoints, "--command-timeout=5s"])
            .args(m.tls_args())
            .args(["endpoint", "health"]);
        util::output(&mut cmd)
            .map(|o| {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                text.lines().filter(|l| l.contains(" is healthy")).count()
            })
            .unwrap_or(0)
    }

    /// `etcdctl ARGS…` in member `i`'s namespace against that member's own client URL.
    pub fn ctl(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        self.ctl_at(i, &self.members[i].client_url, args)
    }

    /// The value of `key` as member `i` serves it (a linearizable read through its own
    /// client URL), or None when absent.
    pub fn get(&self, i: usize, key: &str) -> anyhow::Result<Option<String>> {
        let out = self.ctl(i, &["get", key, "--print-value-only"])?;
        let v = out.trim_end_matches('\n');
        Ok((!v.is_empty()).then(|| v.to_owned()))
    }

    /// Whether member `i` answers a health check (it has a leader and commits).
    pub fn member_healthy(&self, i: usize) -> bool {
        self.healthy_count(i, &self.members[i].client_url) == 1
    }

    /// Waits until every member is healthy; the error carries a sick member's log.
    pub fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<Duration> {
        util::wait_until(timeout, "every etcd member is healthy", || {
            (0..self.members.len()).all(|i| self.member_healthy(i))
        })
        .map_err(|e| {
            let sick: Vec<usize> = (0..self.members.len())
                .filter(|&i| !self.member_healthy(i))
                .collect();
            let logs: String = sick
                .iter()
                .map(|&i| format!("\n---- {} ----\n{}", self.members[i].name, self.log_tail(i)))
                .collect();
            e.context(format!("sick members {sick:?}:{logs}"))
        })
    }

    /// The end of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        util::tail(&self.members[i].log, 30)
    }

    /// The data directory (for failure reports).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for MeshEtcd {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for i in 0..self.members.len() {
            if panicking {
                eprintln!(
                    "---- etcd {} log ----\n{}",
                    self.members[i].name,
                    self.log_tail(i)
                );
            }
            if let Some(mut child) = self.members[i].child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The VXLAN device flannel's vxlan backend makes (VNI 1).
pub const FLANNEL_DEV: &str = "flannel.1";
/// The UDP port of flannel's vxlan backend on Linux (the kernel's legacy VXLAN port).
pub const FLANNEL_PORT: u16 = 8472;

/// The vxlan backend's pod subnet of node `i` (0-based): `10.244.<i+1>.0/24`.
pub fn vxlan_subnet(i: usize) -> String {
    format!("10.244.{}.0/24", i + 1)
}

/// The host-gw pod subnet of node `i`: `10.245.<i+1>.0/24` (a second cluster CIDR, so
/// both backends run side by side: one node cannot route one prefix two ways).
pub fn host_gw_subnet(i: usize) -> String {
    format!("10.245.{}.0/24", i + 1)
}

/// Pod `i`'s address on the vxlan backend's network: `10.244.<i+1>.2`.
pub fn vxlan_pod_ip(i: usize) -> String {
    format!("10.244.{}.2", i + 1)
}

/// Pod `i`'s address on the host-gw network: `10.245.<i+1>.2`.
pub fn host_gw_pod_ip(i: usize) -> String {
    format!("10.245.{}.2", i + 1)
}

/// A "pod" namespace behind a node: `eth0` on the vxlan network (MTU `vxlan_mtu`, as
/// flannel's CNI config sets the pod's interface), `eth1` on the host-gw network (MTU
/// `host_gw_mtu`); the node forwards. Dropping it deletes the namespace and both veths.
#[derive(Debug)]
pub struct Pod {
    /// The pod's namespace.
    pub ns: Netns,
    /// Its vxlan-network address.
    pub vxlan_ip: String,
    /// Its host-gw-network address.
    pub host_gw_ip: String,
}

impl Pod {
    /// Makes pod `i` behind `node`.
    pub fn behind(node: &Netns, i: usize, vxlan_mtu: u16, host_gw_mtu: u16) -> anyhow::Result<Pod> {
        let ns = Netns::new(&format!("pod{i}"))?;
        let n = i + 1;
        for (node_if, pod_if, net, mtu) in [
            ("pod0", "eth0", "10.244", vxlan_mtu),
            ("hgw0", "eth1", "10.245", host_gw_mtu),
        ] {
            let mtu = mtu.to_string();
            node.ip(&[
                "link",
                "add",
                node_if,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                pod_if,
                "mtu",
                &mtu,
                "netns",
                ns.name(),
            ])?;
            node.ip(&["addr", "add", &format!("{net}.{n}.1/24"), "dev", node_if])?;
            node.ip(&["link", "set", node_if, "up"])?;
            ns.ip(&["addr", "add", &format!("{net}.{n}.2/24"), "dev", pod_if])?;
            ns.ip(&["link", "set", pod_if, "up"])?;
            ns.ip(&[
                "route",
                "add",
                &format!("{net}.0.0/16"),
                "via",
                &format!("{net}.{n}.1"),
                "dev",
                pod_if,
            ])?;
        }
        node.sysctl("net.ipv4.ip_forward=1")?;
        Ok(Pod {
            ns,
            vxlan_ip: vxlan_pod_ip(i),
            host_gw_ip: host_gw_pod_ip(i),
        })
    }
}

/// A node's VXLAN endpoint as flannel publishes it in the node's annotations
/// (`flannel.alpha.coreos.com/backend-data` and `public-ip`).
#[derive(Debug, Clone)]
pub struct Vtep {
    /// Node index (its pod subnet is [`vxlan_subnet`]).
    pub index: usize,
    /// `flannel.1`'s MAC address.
    pub mac: String,
    /// The node's overlay address (flannel's public IP with `--iface` = the mesh
    /// interface).
    pub overlay_ip: String,
}

/// Creates `flannel.1` on `node` as flannel's vxlan backend does (`ip link add flannel.1
/// type vxlan id 1 local <overlay ip> dev <mesh iface> dstport 8472 nolearning`, MTU
/// `vxlan_mtu`, the subnet's `.0/32` on it) and returns its VTEP.
pub fn flannel_up(
    node: &Netns,
    index: usize,
    overlay_ip: &str,
    mesh_iface: &str,
    vxlan_mtu: u16,
) -> anyhow::Result<Vtep> {
    let port = FLANNEL_PORT.to_string();
    let mtu = vxlan_mtu.to_string();
    node.ip(&[
        "link",
        "add",
        FLANNEL_DEV,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        overlay_ip,
        "dev",
        mesh_iface,
        "dstport",
        &port,
        "nolearning",
    ])?;
    node.ip(&["link", "set", FLANNEL_DEV, "mtu", &mtu])?;
    let addr = vxlan_subnet(index).replace(".0/24", ".0/32");
    node.ip(&["addr", "add", &addr, "dev", FLANNEL_DEV])?;
    node.ip(&["link", "set", FLANNEL_DEV, "up"])?;
    let shown: Value = serde_json::from_str(&node.ip(&["-j", "link", "show", FLANNEL_DEV])?)
        .context("ip -j link show flannel.1")?;
    let mac = shown[0]["address"]
        .as_str()
        .with_context(|| format!("no MAC for {FLANNEL_DEV}: {shown}"))?
        .to_owned();
    Ok(Vtep {
        index,
        mac,
        overlay_ip: overlay_ip.to_owned(),
    })
}

/// What flannel's vxlan backend adds on a node for a remote node's lease: the FDB entry
/// (its VTEP MAC at its overlay address), the permanent neighbour entry for its subnet's
/// `.0` and the route to its pod subnet through `flannel.1`, onlink.
pub fn flannel_add_peer(node: &Netns, peer: &Vtep) -> anyhow::Result<()> {
    let subnet = vxlan_subnet(peer.index);
    let gateway = subnet.replace(".0/24", ".0");
    node.exec(&[
        "bridge",
        "fdb",
        "replace",
        &peer.mac,
        "dev",
        FLANNEL_DEV,
        "dst",
        &peer.overlay_ip,
        "self",
        "permanent",
    ])?;
    node.ip(&[
        "neigh",
        "replace",
        &gateway,
        "lladdr",
        &peer.mac,
        "dev",
        FLANNEL_DEV,
        "nud",
        "permanent",
    ])?;
    node.ip(&[
        "route",
        "replace",
        &subnet,
        "via",
        &gateway,
        "dev",
        FLANNEL_DEV,
        "onlink",
    ])?;
    Ok(())
}

/// The `Ip:` counters of a namespace's `/proc/net/snmp` (`FragCreates`, `ReasmReqds`, …).
pub fn ip_counters(ns: &Netns) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = ns.exec(&["cat", "/proc/net/snmp"])?;
    let mut lines = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (
        lines.next().context("no Ip: header in /proc/net/snmp")?,
        lines.next().context("no Ip: values in /proc/net/snmp")?,
    );
    Ok(names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect())
}

/// A ping with the don't-fragment bit: `ping -M do -s SIZE -c COUNT`. Returns whether
/// every echo was answered, and ping's output (stdout and stderr).
pub fn df_ping(from: &Netns, to: &str, size: u16, count: u32) -> anyhow::Result<(bool, String)> {
    let mut cmd = from.command("ping");
    cmd.args([
        "-n",
        "-M",
        "do",
        "-s",
        &size.to_string(),
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "2",
        to,
    ]);
    let out = util::output(&mut cmd)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let all =
        out.status.success() && crate::lab::parse_ping_loss(&text).is_some_and(|loss| loss == 0.0);
    Ok((all, text))
}

/// Whether ping's output says the packet was too big for the path (a local `message too
/// long`, or an ICMP "frag needed" from a router on the way).
pub fn says_too_big(ping_output: &str) -> bool {
    let t = ping_output.to_ascii_lowercase();
    t.contains("message too long") || t.contains("frag needed")
}

/// An nftables table in `ns` counting, before defragmentation (prerouting, priority
/// -450), the UDP datagrams to `port` arriving on `iface` whose IP packet is exactly
/// `length` bytes and not a fragment. Removed with the namespace.
pub fn count_whole_arrivals(
    ns: &Netns,
    table: &str,
    iface: &str,
    port: u16,
    length: u16,
) -> anyhow::Result<()> {
    ns.nft(&format!(
        "table inet {table} {{\n  chain pre {{\n    type filter hook prerouting priority -450;\n    \
         iifname \"{iface}\" ip frag-off & 0x3fff == 0 ip length {length} udp dport {port} counter\n  }}\n}}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_hosts_of_urls() {
        assert_eq!(
            https_hosts("https://127.0.0.1:2379,https://10.9.8.1:2379").unwrap_or_default(),
            vec!["127.0.0.1", "10.9.8.1"]
        );
        assert!(https_hosts("http://10.9.8.1:2379").is_err());
        assert!(https_hosts("https://a:1,10.9.8.1:2").is_err());
        assert!(https_hosts("https://10.9.8.1").is_err());
    }

    #[test]
    fn pod_networks_stay_out_of_the_lab_ranges() {
        for i in 0..8 {
            for s in [vxlan_subnet(i), host_gw_subnet(i)] {
                assert!(!s.starts_with("10.9.8.") && !s.starts_with("192."), "{s}");
            }
        }
        assert_eq!(vxlan_subnet(0), "10.244.1.0/24");
        assert_eq!(host_gw_pod_ip(2), "10.245.3.2");
    }

    #[test]
    fn too_big_messages() {
        assert!(says_too_big(
            "ping: local error: message too long, mtu=1230"
        ));
        assert!(says_too_big(
            "From 10.0.0.1 icmp_seq=1 Frag needed and DF set (mtu = 1230)"
        ));
        assert!(!says_too_big(
            "1 packets transmitted, 0 received, 100% packet loss"
        ));
    }
}
