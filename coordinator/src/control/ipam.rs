//! Overlay address assignment: pure functions over a prefix and the set of addresses in
//! use. The coordinator calls them under its one state lock, so two members never get the
//! same address; it keeps a member's address for the member's whole life, so only deleting
//! a member frees one.
//!
//! Assignable addresses: every address of the prefix except, for IPv4, the network and
//! broadcast addresses (a /31 or /32 has neither), and, for IPv6, the subnet-router anycast
//! address (the prefix's first address; a /127 or /128 keeps it).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use mesh_proto::Key;

/// Why an address cannot be given out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Every assignable address is taken.
    #[error("no free address left in {0}")]
    Exhausted(IpNet),
    /// The address is not inside the network's prefix.
    #[error("address {addr} is outside the network's prefix {cidr}")]
    Outside {
        /// The address asked for.
        addr: IpAddr,
        /// The network's prefix.
        cidr: IpNet,
    },
    /// The prefix's network, broadcast or anycast address.
    #[error("address {addr} is reserved in {cidr} (network or broadcast address)")]
    Reserved {
        /// The address asked for.
        addr: IpAddr,
        /// The network's prefix.
        cidr: IpNet,
    },
    /// Another member has it.
    #[error("address {addr} is already used by member {owner}")]
    Taken {
        /// The address asked for.
        addr: IpAddr,
        /// The fingerprint of the member holding it.
        owner: String,
    },
}

/// First and last assignable address of `cidr`, as integers (inclusive).
fn range(cidr: &IpNet) -> (u128, u128) {
    match cidr {
        IpNet::V4(n) => {
            let first = u32::from(n.network()) as u128;
            let last = u32::from(n.broadcast()) as u128;
            if n.prefix_len() <= 30 {
                (first + 1, last - 1)
            } else {
                (first, last)
            }
        }
        IpNet::V6(n) => {
            let first = u128::from(n.network());
            let last = u128::from(n.broadcast());
            if n.prefix_len() <= 126 {
                (first + 1, last)
            } else {
                (first, last)
            }
        }
    }
}

fn to_int(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_int(cidr: &IpNet, n: u128) -> IpAddr {
    match cidr {
        // In range by construction: a v4 range never exceeds u32.
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Checks that `addr` may be assigned in `cidr` at all (inside, not reserved).
pub fn check_assignable(cidr: &IpNet, addr: IpAddr) -> Result<(), IpamError> {
    if !cidr.contains(&addr) {
        return Err(IpamError::Outside { addr, cidr: *cidr });
    }
    let (first, last) = range(cidr);
    let n = to_int(addr);
    if n < first || n > last {
        return Err(IpamError::Reserved { addr, cidr: *cidr });
    }
    Ok(())
}

/// The lowest assignable address of `cidr` not in `used`.
///
/// Takes at most `used.len() + 1` steps whatever the prefix size.
pub fn next_free(cidr: &IpNet, used: &BTreeMap<IpAddr, Key>) -> Result<IpAddr, IpamError> {
    let (first, last) = range(cidr);
    let mut n = first;
    loop {
        if n > last {
            return Err(IpamError::Exhausted(*cidr));
        }
        let addr = from_int(cidr, n);
        if !used.contains_key(&addr) {
            return Ok(addr);
        }
        match n.checked_add(1) {
            Some(next) => n = next,
            None => return Err(IpamError::Exhausted(*cidr)),
        }
    }
}

/// Checks an address an admin asks for on behalf of `member`: assignable, and free or
/// already the member's own.
pub fn check_request(
    cidr: &IpNet,
    addr: IpAddr,
    used: &BTreeMap<IpAddr, Key>,
    member: &Key,
) -> Result<(), IpamError> {
    check_assignable(cidr, addr)?;
    match used.get(&addr) {
        Some(owner) if owner != member => Err(IpamError::Taken {
            addr,
            owner: owner.fingerprint(),
        }),
        _ => Ok(()),
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

    fn used(addrs: &[&str]) -> BTreeMap<IpAddr, Key> {
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (ip(a), Key([i as u8 + 1; 32])))
            .collect()
    }

    #[test]
    fn next_free_table() {
        let cases: &[(&str, &[&str], Result<&str, ()>)] = &[
            ("10.9.8.0/24", &[], Ok("10.9.8.1")),
            ("10.9.8.0/24", &["10.9.8.1"], Ok("10.9.8.2")),
            ("10.9.8.0/24", &["10.9.8.1", "10.9.8.3"], Ok("10.9.8.2")),
            ("10.9.8.0/30", &["10.9.8.1"], Ok("10.9.8.2")),
            ("10.9.8.0/30", &["10.9.8.1", "10.9.8.2"], Err(())),
            ("10.9.8.0/31", &["10.9.8.0"], Ok("10.9.8.1")),
            ("10.9.8.7/32", &[], Ok("10.9.8.7")),
            ("10.9.8.7/32", &["10.9.8.7"], Err(())),
            ("fd00::/64", &[], Ok("fd00::1")),
            ("fd00::/64", &["fd00::1"], Ok("fd00::2")),
            ("fd00::/127", &[], Ok("fd00::")),
            ("fd00::/126", &["fd00::1", "fd00::2", "fd00::3"], Err(())),
            ("0.0.0.0/0", &[], Ok("0.0.0.1")),
            ("::/0", &[], Ok("::1")),
        ];
        for (cidr, taken, want) in cases {
            let got = next_free(&net(cidr), &used(taken));
            match want {
                Ok(w) => assert_eq!(got, Ok(ip(w)), "{cidr} minus {taken:?}"),
                Err(()) => assert_eq!(got, Err(IpamError::Exhausted(net(cidr))), "{cidr}"),
            }
        }
    }

    #[test]
    fn broadcast_is_never_handed_out() {
        let cidr = net("10.0.0.0/29");
        let mut taken = BTreeMap::new();
        while let Ok(a) = next_free(&cidr, &taken) {
            taken.insert(a, Key([0; 32]));
        }
        let got: Vec<String> = taken.keys().map(|a| a.to_string()).collect();
        assert_eq!(
            got,
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn requests_table() {
        let me = Key([1; 32]);
        let taken = used(&["10.9.8.1", "10.9.8.2"]); // .1 is mine (Key([1; 32]))
        let cidr = net("10.9.8.0/24");
        let cases: &[(&str, &str)] = &[
            ("10.9.8.5", "ok"),
            ("10.9.8.1", "ok"),
            ("10.9.8.2", "taken"),
            ("10.9.8.0", "reserved"),
            ("10.9.8.255", "reserved"),
            ("10.9.9.1", "outside"),
            ("fd00::1", "outside"),
        ];
        for (addr, want) in cases {
            let got = match check_request(&cidr, ip(addr), &taken, &me) {
                Ok(()) => "ok",
                Err(IpamError::Taken { .. }) => "taken",
                Err(IpamError::Reserved { .. }) => "reserved",
                Err(IpamError::Outside { .. }) => "outside",
                Err(IpamError::Exhausted(_)) => "exhausted",
            };
            assert_eq!(got, *want, "{addr}");
        }
    }
}
