//! Creating the TUN interface: name, address, MTU, offloads, up.

use anyhow::Context as _;
use ipnet::IpNet;

/// Creates the interface with virtio-net offloads (TSO/USO in, GRO out) so the kernel
/// hands meshd TCP super-packets of up to 64 KiB and accepts coalesced ones back.
pub fn create(name: &str, address: Option<IpNet>, mtu: u16) -> anyhow::Result<tun_rs::SyncDevice> {
    let mut builder = tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .offload(true)
        .enable(true);
    match address {
        Some(IpNet::V4(net)) => builder = builder.ipv4(net.addr(), net.prefix_len(), None),
        Some(IpNet::V6(net)) => builder = builder.ipv6(net.addr(), net.prefix_len()),
        None => {}
    }
    let dev = builder
        .build_sync()
        .with_context(|| format!("creating TUN interface {name}"))?;
    tracing::info!(
        interface = name,
        tcp_gso = dev.tcp_gso(),
        udp_gso = dev.udp_gso(),
        "TUN interface up"
    );
    Ok(dev)
}
