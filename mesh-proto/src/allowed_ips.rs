//! The cryptokey routing table: allowed-IP prefixes mapped to peers, looked up by
//! longest-prefix match (WireGuard whitepaper, section 2: "Cryptokey Routing").
//!
//! Outbound, the destination address picks the peer whose key encrypts the packet.
//! Inbound, a decrypted packet is accepted only if the table maps its *source* address
//! back to the peer whose key decrypted it.
//!
//! Layout: one hash map per prefix length in use, searched from the longest length down,
//! so a lookup costs one hash probe per distinct prefix length (usually one or two), not
//! one per peer.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// A longest-prefix-match table from IP prefixes to values (peer handles in `meshd`).
///
/// Inserting a prefix that is already present replaces its value, as WireGuard does when a
/// second peer claims the same allowed IP.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Family<u32, T>,
    v6: Family<u128, T>,
}

#[derive(Debug, Clone)]
struct Family<A, T> {
    /// (prefix length, masked network address -> value), longest prefix first.
    by_len: Vec<(u8, HashMap<A, T>)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            v4: Family { by_len: Vec::new() },
            v6: Family { by_len: Vec::new() },
        }
    }
}

trait Bits: Copy + Eq + std::hash::Hash {
    const WIDTH: u8;
    fn mask(self, len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn mask(self, len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - u32::from(len)))
        }
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn mask(self, len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - u32::from(len)))
        }
    }
}

impl<A: Bits, T> Family<A, T> {
    fn insert(&mut self, addr: A, len: u8, value: T) -> Option<T> {
        debug_assert!(len <= A::WIDTH);
        let key = addr.mask(len);
        match self.by_len.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(i) => self.by_len[i].1.insert(key, value),
            Err(i) => {
                let mut map = HashMap::new();
                map.insert(key, value);
                self.by_len.insert(i, (len, map));
                None
            }
        }
    }

    fn remove(&mut self, addr: A, len: u8) -> Option<T> {
        let i = self.by_len.binary_search_by(|(l, _)| len.cmp(l)).ok()?;
        let old = self.by_len[i].1.remove(&addr.mask(len));
        if self.by_len[i].1.is_empty() {
            self.by_len.remove(i);
        }
        old
    }

    fn get(&self, addr: A) -> Option<&T> {
        self.by_len
            .iter()
            .find_map(|(len, map)| map.get(&addr.mask(*len)))
    }

    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for (_, map) in &mut self.by_len {
            map.retain(|_, v| keep(v));
        }
        self.by_len.retain(|(_, map)| !map.is_empty());
    }

    fn len(&self) -> usize {
        self.by_len.iter().map(|(_, m)| m.len()).sum()
    }
}

impl<T> AllowedIps<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `net` (host bits are ignored) to `value`; returns the value it replaced.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        match net {
            IpNet::V4(n) => self.v4.insert(u32::from(n.addr()), n.prefix_len(), value),
            IpNet::V6(n) => self.v6.insert(u128::from(n.addr()), n.prefix_len(), value),
        }
    }

    /// Removes exactly the prefix `net`, returning its value.
    pub fn remove(&mut self, net: IpNet) -> Option<T> {
        match net {
            IpNet::V4(n) => self.v4.remove(u32::from(n.addr()), n.prefix_len()),
            IpNet::V6(n) => self.v6.remove(u128::from(n.addr()), n.prefix_len()),
        }
    }

    /// The value of the longest prefix that contains `addr`.
    #[inline]
    pub fn get(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(a) => self.v4.get(u32::from(a)),
            IpAddr::V6(a) => self.v6.get(u128::from(a)),
        }
    }

    /// Drops every prefix whose value fails `keep` (e.g. all prefixes of a removed peer).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.v4.retain(&mut keep);
        self.v6.retain(&mut keep);
    }

    /// Number of prefixes in the table.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True when no prefix is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::new();
        t.insert(net("0.0.0.0/0"), "default");
        t.insert(net("10.9.8.0/24"), "site");
        t.insert(net("10.9.8.2/32"), "host");
        t.insert(net("10.9.0.0/16"), "region");
        let cases = [
            ("10.9.8.2", Some("host")),
            ("10.9.8.3", Some("site")),
            ("10.9.7.1", Some("region")),
            ("192.0.2.1", Some("default")),
        ];
        for (addr, want) in cases {
            assert_eq!(t.get(ip(addr)).copied(), want, "{addr}");
        }
        assert_eq!(t.get(ip("2001:db8::1")), None, "families are separate");
    }

    #[test]
    fn host_bits_are_ignored_and_replace_works() {
        let mut t = AllowedIps::new();
        assert_eq!(t.insert(net("10.9.8.77/24"), 1), None);
        assert_eq!(t.insert(net("10.9.8.0/24"), 2), Some(1));
        assert_eq!(t.get(ip("10.9.8.1")), Some(&2));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn ipv6_and_zero_length() {
        let mut t = AllowedIps::new();
        t.insert(net("::/0"), 'a');
        t.insert(net("2001:db8::/32"), 'b');
        t.insert(net("2001:db8::1/128"), 'c');
        assert_eq!(t.get(ip("2001:db8::1")), Some(&'c'));
        assert_eq!(t.get(ip("2001:db8::2")), Some(&'b'));
        assert_eq!(t.get(ip("fe80::1")), Some(&'a'));
        assert_eq!(t.get(ip("10.0.0.1")), None);
    }

    #[test]
    fn remove_and_retain() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.0/8"), 1);
        t.insert(net("10.1.0.0/16"), 2);
        t.insert(net("10.1.2.0/24"), 2);
        assert_eq!(t.remove(net("10.1.0.0/16")), Some(2));
        assert_eq!(t.remove(net("10.1.0.0/16")), None);
        assert_eq!(t.get(ip("10.1.9.9")), Some(&1));
        t.retain(|v| *v != 2);
        assert_eq!(t.get(ip("10.1.2.3")), Some(&1));
        assert_eq!(t.len(), 1);
        assert!(!t.is_empty());
    }
}
