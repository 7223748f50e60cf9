//! Creating the TUN interface: name, address, MTU, offloads, queues, up.

use anyhow::Context as _;
use ipnet::IpNet;

/// Creates the interface with virtio-net offloads (TSO/USO in, GRO out) so the kernel
/// hands meshd TCP super-packets of up to 64 KiB and accepts coalesced ones back, and with
/// `queues` queues (IFF_MULTI_QUEUE): the kernel spreads flows over them by hash, and each
/// queue gets its own outbound thread. Returns the first queue and the extra ones.
pub fn create(
    name: &str,
    address: Option<IpNet>,
    mtu: u16,
    queues: usize,
) -> anyhow::Result<(tun_rs::SyncDevice, Vec<tun_rs::SyncDevice>)> {
    let mut builder = tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .offload(true)
        .multi_queue(true)
        .enable(true);
    match address {
        Some(IpNet::V4(net)) => builder = builder.ipv4(net.addr(), net.prefix_len(), None),
        Some(IpNet::V6(net)) => builder = builder.ipv6(net.addr(), net.prefix_len()),
        None => {}
    }
    let dev = builder
        .build_sync()
        .with_context(|| format!("creating TUN interface {name}"))?;
    let extra = (1..queues.max(1))
        .map(|i| {
            dev.try_clone()
                .with_context(|| format!("opening TUN queue {i} of {name}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    tracing::info!(
        interface = name,
        queues = 1 + extra.len(),
        tcp_gso = dev.tcp_gso(),
        udp_gso = dev.udp_gso(),
        "TUN interface up"
    );
    Ok((dev, extra))
}
