//! Where a packet from a network peer may go once decrypted: this node's own overlay
//! addresses and the prefixes it advertises, nothing else.
//!
//! A node in several networks runs one meshd (and one interface) per network. With IP
//! forwarding on (every Kubernetes node has it), the kernel would route a packet that a
//! member of network A sent into this node's A interface, addressed to a member of
//! network B, out of the B interface: the node would join the networks. So the inbound
//! path checks each decrypted packet from a network peer against [`LocalSet`], after the
//! source check: its destination must be one of this node's overlay addresses (IPv4 or
//! IPv6, from the netmap or the config) or inside an `advertise-routes` prefix (what the
//! admin approved forwarding into). Anything else is dropped and counted (`not-local`).
//! Static peers from the config file are exempt: their allowed IPs are the admin's own
//! word on what they may send.
//!
//! The set is rebuilt by `Device::apply_netmap` and read once per batch through an
//! `ArcSwap`, like the peer table; a check is a scan of a handful of entries, without
//! allocating.

use std::net::IpAddr;

use boringtun::noise::Tunn;
use ipnet::IpNet;

/// This node's overlay addresses and advertised prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalSet {
    addresses: Vec<IpAddr>,
    prefixes: Vec<IpNet>,
}

impl LocalSet {
    /// The set of `addresses` (overlay addresses, prefix lengths ignored) and `prefixes`
    /// (advertised routes).
    pub fn new(
        addresses: impl IntoIterator<Item = IpNet>,
        prefixes: impl IntoIterator<Item = IpNet>,
    ) -> LocalSet {
        let mut addresses: Vec<IpAddr> = addresses.into_iter().map(|a| a.addr()).collect();
        addresses.sort_unstable();
        addresses.dedup();
        LocalSet {
            addresses,
            prefixes: prefixes.into_iter().map(|p| p.trunc()).collect(),
        }
    }

    /// Whether a packet to `dst` is for this node (or behind it, by an advertised route).
    #[inline]
    pub fn contains(&self, dst: IpAddr) -> bool {
        self.addresses.contains(&dst) || self.prefixes.iter().any(|p| p.contains(&dst))
    }

    /// Whether the decrypted IP `packet` is addressed to this node; a packet too short
    /// to carry a destination is not.
    #[inline]
    pub fn admits(&self, packet: &[u8]) -> bool {
        Tunn::dst_address(packet).is_some_and(|dst| self.contains(dst))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn v4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn v6(dst: Ipv6Addr) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[24..40].copy_from_slice(&dst.octets());
        p
    }

    fn set() -> LocalSet {
        LocalSet::new(
            [
                "10.9.8.3/24".parse().unwrap(),
                "fd00:9::3/64".parse().unwrap(),
                "10.0.0.1/32".parse().unwrap(),
            ],
            [
                "10.244.1.0/24".parse().unwrap(),
                "fd10::/64".parse().unwrap(),
            ],
        )
    }

    #[test]
    fn own_addresses_and_advertised_prefixes_pass() {
        let s = set();
        for dst in [
            "10.9.8.3",
            "10.0.0.1",
            "10.244.1.0",
            "10.244.1.77",
            "fd00:9::3",
            "fd10::5",
        ] {
            let dst: IpAddr = dst.parse().unwrap();
            assert!(s.contains(dst), "{dst}");
        }
        assert!(s.admits(&v4([10, 9, 8, 2], [10, 9, 8, 3])));
        assert!(s.admits(&v4([10, 9, 8, 2], [10, 244, 1, 9])));
        assert!(s.admits(&v6("fd00:9::3".parse().unwrap())));
    }

    /// Another member of the overlay, another network's member, the overlay's broadcast,
    /// anything on the internet: not this node's, so not forwarded.
    #[test]
    fn everything_else_is_dropped() {
        let s = set();
        for dst in [
            [10, 9, 8, 4],
            [10, 7, 0, 2],
            [10, 9, 8, 255],
            [10, 244, 2, 1],
            [192, 0, 2, 1],
            [0, 0, 0, 0],
        ] {
            assert!(!s.admits(&v4([10, 9, 8, 2], dst)), "{dst:?}");
        }
        assert!(!s.admits(&v6("fd00:9::4".parse().unwrap())));
        assert!(!s.admits(&v6("fd10:0:0:1::1".parse().unwrap())));
        // Nothing local at all (no netmap yet): nothing passes.
        assert!(!LocalSet::default().admits(&v4([10, 9, 8, 2], [10, 9, 8, 3])));
    }

    #[test]
    fn short_or_odd_packets_are_dropped() {
        let s = set();
        let p = v4([10, 9, 8, 2], [10, 9, 8, 3]);
        assert!(!s.admits(&p[..19]));
        assert!(!s.admits(&[]));
        let mut odd = p.clone();
        odd[0] = 0x55;
        assert!(!s.admits(&odd));
        assert!(!s.admits(&v6("fd00:9::3".parse().unwrap())[..39]));
        assert_eq!(
            Tunn::dst_address(&p[..20]),
            Some(IpAddr::from([10, 9, 8, 3]))
        );
    }
}
