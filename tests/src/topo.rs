//! Ready-made topologies of meshd nodes, shared by the tests and `wm-demo`.

use std::sync::Arc;

use crate::lab::Lab;
use crate::meshd::{Meshd, MeshdConfig};
use crate::netns::Netns;
use crate::wg::{NodeKey, Peer};

/// The UDP port every node listens on (each node has its own namespace).
pub const PORT: u16 = 51820;

/// One meshd node of a topology.
#[derive(Debug)]
pub struct Node {
    /// The daemon (owns a reference to the namespace).
    pub meshd: Meshd,
    /// Its label ("a", "b", ...).
    pub name: String,
    /// Underlay address without prefix, e.g. `198.51.100.1`.
    pub underlay_ip: String,
    /// Overlay address without prefix, e.g. `10.9.8.1`.
    pub overlay_ip: String,
    /// Its key pair.
    pub key: NodeKey,
}

impl Node {
    /// The node's namespace.
    pub fn ns(&self) -> &Arc<Netns> {
        self.meshd.ns()
    }

    /// `underlay_ip:PORT`.
    pub fn endpoint(&self) -> String {
        format!("{}:{PORT}", self.underlay_ip)
    }
}

/// The label of node `i`: a, b, c, ...
pub fn label(i: usize) -> String {
    char::from(b'a' + u8::try_from(i % 26).unwrap_or(0)).to_string()
}

/// `n` meshd nodes on the lab's internet (`198.51.100.<i+1>`), overlay `10.9.8.<i+1>/24`,
/// every node configured with every other one as a static peer with endpoint and
/// `keepalive`. Returns once every daemon answers on its socket.
pub fn full_mesh(lab: &Lab, n: usize, keepalive: Option<u16>) -> anyhow::Result<Vec<Node>> {
    let mut hosts = Vec::new();
    for i in 0..n {
        let underlay = format!("198.51.100.{}", i + 1);
        let (ns, _) = lab.internet_host(&label(i), &format!("{underlay}/24"))?;
        hosts.push((
            ns,
            underlay,
            format!("10.9.8.{}", i + 1),
            NodeKey::generate()?,
        ));
    }
    let mut nodes = Vec::new();
    for (i, (ns, underlay, overlay, key)) in hosts.iter().enumerate() {
        let mut config = MeshdConfig::new(&format!("{overlay}/24"), PORT, Some(key.clone()));
        for (j, (_, u, o, k)) in hosts.iter().enumerate() {
            if i != j {
                let mut p = Peer::new(&k.public, Some(format!("{u}:{PORT}")), &format!("{o}/32"));
                p.persistent_keepalive = keepalive;
                config = config.peer(p);
            }
        }
        nodes.push(Node {
            meshd: Meshd::start(ns, &label(i), config)?,
            name: label(i),
            underlay_ip: underlay.clone(),
            overlay_ip: overlay.clone(),
            key: key.clone(),
        });
    }
    Ok(nodes)
}

/// Two nodes "a" (198.51.100.1, 10.9.8.1) and "b" (198.51.100.2, 10.9.8.2) on a direct veth
/// link, each with the other as a static peer with endpoint.
pub fn linked_pair(lab: &Lab) -> anyhow::Result<(Node, Node)> {
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, &b, "198.51.100.1/24", "198.51.100.2/24")?;
    let (ka, kb) = (NodeKey::generate()?, NodeKey::generate()?);
    let ca = MeshdConfig::new("10.9.8.1/24", PORT, Some(ka.clone())).peer(Peer::new(
        &kb.public,
        Some(format!("198.51.100.2:{PORT}")),
        "10.9.8.2/32",
    ));
    let cb = MeshdConfig::new("10.9.8.2/24", PORT, Some(kb.clone())).peer(Peer::new(
        &ka.public,
        Some(format!("198.51.100.1:{PORT}")),
        "10.9.8.1/32",
    ));
    let na = Node {
        meshd: Meshd::start(&a, "a", ca)?,
        name: "a".into(),
        underlay_ip: "198.51.100.1".into(),
        overlay_ip: "10.9.8.1".into(),
        key: ka,
    };
    let nb = Node {
        meshd: Meshd::start(&b, "b", cb)?,
        name: "b".into(),
        underlay_ip: "198.51.100.2".into(),
        overlay_ip: "10.9.8.2".into(),
        key: kb,
    };
    Ok((na, nb))
}
