//! Endpoint reflection: a STUN-like "which address and port did you see me from?".
//!
//! meshd sends a [`request`] **from its WireGuard socket** to the coordinator's reflector
//! UDP port(s); the reflector answers with a [`response`] naming the source address it
//! observed. Because the request leaves through the same socket as WireGuard, the NAT
//! mapping it reveals is the one WireGuard traffic uses (a mapping is per socket). The
//! answer becomes one of the node's endpoint candidates in the netmap.
//!
//! Asking two reflector addresses and comparing the answers tells the NAT's mapping
//! behaviour (RFC 4787 section 4.1; [`classify`]): the same observed address from both
//! means endpoint-independent mapping (hole punching can work), different ones mean
//! endpoint-dependent mapping ("symmetric" NAT: a peer only ever sees a port it cannot
//! predict).
//!
//! # Wire format
//!
//! Everything is big endian. Request, 36 bytes:
//!
//! ```text
//!  0       1       2       3       4                              15
//! +-------+-------+-------+-------+-------------------------------+
//! |  'w'  |  'm'  |  'R'  |  '1'  | transaction id (12 bytes)     |
//! +-------+-------+-------+-------+-------------------------------+
//!  16                                                             35
//! +---------------------------------------------------------------+
//! | zeros (20 bytes)                                              |
//! +---------------------------------------------------------------+
//! ```
//!
//! The padding makes a request longer than any response, so a reflector never answers
//! with more bytes than it received: a forged source address gains its owner nothing.
//!
//! Response, 23 bytes (IPv4) or 35 bytes (IPv6):
//!
//! ```text
//!  0       1       2       3       4                              15
//! +-------+-------+-------+-------+-------------------------------+
//! |  'w'  |  'm'  |  'R'  |  '1'  | transaction id (12 bytes)     |
//! +-------+-------+-------+-------+-------------------------------+
//!  16      17      18      19 ..
//! +-------+---------------+---------------------------------------+
//! |family | port (u16 BE) | address: 4 bytes (family 4) or       |
//! | 4 | 6 |               |          16 bytes (family 6)         |
//! +-------+---------------+---------------------------------------+
//! ```
//!
//! The transaction id is random (drawn by meshd) and echoed, so a node matches answers to
//! its requests and ignores unsolicited ones. A request and a response are told apart by
//! length; any other length, an unknown family or trailing bytes make the datagram invalid.
//! The four magic bytes let meshd demultiplex reflection answers from WireGuard and disco
//! traffic on one socket ([`crate::disco::classify`]).
//!
//! IPv4-mapped IPv6 addresses (what a dual-stack reflector socket reports for IPv4
//! clients) are sent as family 4, so the candidate is the address the node's peers use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The four bytes every reflection datagram starts with.
pub const MAGIC: [u8; 4] = *b"wmR1";
/// Length of a request.
pub const REQUEST_LEN: usize = 36;
/// Length of a response carrying an IPv4 address.
pub const RESPONSE_V4_LEN: usize = 23;
/// Length of a response carrying an IPv6 address (the longest reflection datagram).
pub const RESPONSE_V6_LEN: usize = 35;

/// The request for transaction `txid`.
pub fn request(txid: [u8; 12]) -> [u8; REQUEST_LEN] {
    let mut out = [0u8; REQUEST_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4..16].copy_from_slice(&txid);
    out
}

/// The reflector's answer to transaction `txid`: `observed` is the source address the
/// request arrived from.
pub fn response(txid: [u8; 12], observed: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(RESPONSE_V6_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&txid);
    put_addr(&mut out, observed);
    out
}

/// The transaction id of a request, or `None` if `datagram` is not exactly a request.
pub fn parse_request(datagram: &[u8]) -> Option<[u8; 12]> {
    let bytes: &[u8; REQUEST_LEN] = datagram.try_into().ok()?;
    let (magic, rest) = bytes.split_first_chunk::<4>()?;
    let (txid, padding) = rest.split_first_chunk::<12>()?;
    (*magic == MAGIC && padding.iter().all(|&b| b == 0)).then_some(*txid)
}

/// The transaction id and observed address of a response, or `None` if `datagram` is not
/// exactly a well-formed response.
pub fn parse_response(datagram: &[u8]) -> Option<([u8; 12], SocketAddr)> {
    let (magic, rest) = datagram.split_first_chunk::<4>()?;
    if *magic != MAGIC {
        return None;
    }
    let (txid, rest) = rest.split_first_chunk::<12>()?;
    let (addr, rest) = take_addr(rest)?;
    rest.is_empty().then_some((*txid, addr))
}

/// Writes `family | port | address` (the address part of a response; also used by
/// disco messages). IPv4-mapped IPv6 addresses are written as IPv4.
pub(crate) fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match canonical_ip(addr.ip()) {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&addr.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&addr.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
    }
}

/// Reads `family | port | address` from the front of `bytes`; returns it and the rest.
pub(crate) fn take_addr(bytes: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let (&family, rest) = bytes.split_first()?;
    let (port, rest) = rest.split_first_chunk::<2>()?;
    let port = u16::from_be_bytes(*port);
    match family {
        4 => {
            let (ip, rest) = rest.split_first_chunk::<4>()?;
            Some((SocketAddr::new(Ipv4Addr::from(*ip).into(), port), rest))
        }
        6 => {
            let (ip, rest) = rest.split_first_chunk::<16>()?;
            Some((SocketAddr::new(Ipv6Addr::from(*ip).into(), port), rest))
        }
        _ => None,
    }
}

/// `ip` with IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) turned into IPv4.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A NAT's mapping behaviour as seen from two reflector addresses (RFC 4787 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// Both reflectors saw the same address and port: the NAT reuses one mapping for every
    /// destination (Linux `masquerade`, "cone"), so peers can reach the reflected address
    /// once the node has sent to them (hole punching).
    EndpointIndependent,
    /// The reflectors saw different addresses or ports: each destination gets its own
    /// mapping (Linux `masquerade random`, "symmetric"); the reflected address is useless to
    /// peers, and a direct path needs the other side to be reachable without punching.
    EndpointDependent,
    /// Fewer than two answers: nothing can be said.
    Unknown,
}

/// Classifies the NAT from the addresses two different reflector addresses observed.
///
/// Compared after turning IPv4-mapped IPv6 into IPv4 (a dual-stack reflector socket reports
/// IPv4 clients that way).
pub fn classify(observed_a: Option<SocketAddr>, observed_b: Option<SocketAddr>) -> Mapping {
    match (observed_a, observed_b) {
        (Some(a), Some(b)) => {
            if canonical_ip(a.ip()) == canonical_ip(b.ip()) && a.port() == b.port() {
                Mapping::EndpointIndependent
            } else {
                Mapping::EndpointDependent
            }
        }
        _ => Mapping::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn request_layout() {
        let r = request(TX);
        assert_eq!(&r[..4], b"wmR1");
        assert_eq!(&r[4..16], &TX);
        assert_eq!(&r[16..], &[0; 20]);
        assert_eq!(parse_request(&r), Some(TX));
        // Not a response, and not a request when one byte longer or shorter.
        assert_eq!(parse_response(&r), None);
        assert_eq!(parse_request(&r[..REQUEST_LEN - 1]), None);
        // The old 16-byte request is not answered (its answer would be larger).
        assert_eq!(parse_request(&r[..16]), None);
        let mut dirty = r;
        dirty[30] = 1;
        assert_eq!(parse_request(&dirty), None);
        let mut long = r.to_vec();
        long.push(0);
        assert_eq!(parse_request(&long), None);
        let mut bad = r;
        bad[3] = b'2';
        assert_eq!(parse_request(&bad), None);
    }

    #[test]
    fn no_response_is_longer_than_a_request() {
        const { assert!(RESPONSE_V4_LEN <= REQUEST_LEN && RESPONSE_V6_LEN <= REQUEST_LEN) };
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert!(response(TX, v6).len() <= request(TX).len());
    }

    #[test]
    fn response_layout_v4() {
        let addr: SocketAddr = "203.0.113.7:51820".parse().unwrap();
        let r = response(TX, addr);
        assert_eq!(r.len(), RESPONSE_V4_LEN);
        assert_eq!(&r[..4], b"wmR1");
        assert_eq!(&r[4..16], &TX);
        assert_eq!(r[16], 4);
        assert_eq!(&r[17..19], &51820u16.to_be_bytes());
        assert_eq!(&r[19..], &[203, 0, 113, 7]);
        assert_eq!(parse_response(&r), Some((TX, addr)));
        assert_eq!(parse_request(&r), None);
    }

    #[test]
    fn response_layout_v6_and_mapped() {
        let addr: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let r = response(TX, addr);
        assert_eq!(r.len(), RESPONSE_V6_LEN);
        assert_eq!(r[16], 6);
        assert_eq!(parse_response(&r), Some((TX, addr)));

        let mapped: SocketAddr = "[::ffff:198.51.100.2]:9".parse().unwrap();
        let r = response(TX, mapped);
        assert_eq!(r.len(), RESPONSE_V4_LEN);
        assert_eq!(
            parse_response(&r),
            Some((TX, "198.51.100.2:9".parse().unwrap()))
        );
    }

    #[test]
    fn rejects_malformed_responses() {
        let addr: SocketAddr = "203.0.113.7:51820".parse().unwrap();
        let good = response(TX, addr);
        for n in 0..good.len() {
            assert_eq!(parse_response(&good[..n]), None, "truncated to {n}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(parse_response(&trailing), None);
        let mut family = good.clone();
        family[16] = 5;
        assert_eq!(parse_response(&family), None);
        // A v4 family with a v6-sized body is trailing garbage.
        let mut v6 = response(TX, "[2001:db8::1]:1".parse().unwrap());
        v6[16] = 4;
        assert_eq!(parse_response(&v6), None);
    }

    #[test]
    fn classifies_mappings() {
        let a: SocketAddr = "203.0.113.7:51820".parse().unwrap();
        let b: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let c: SocketAddr = "203.0.113.8:51820".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:203.0.113.7]:51820".parse().unwrap();
        let table = [
            (Some(a), Some(a), Mapping::EndpointIndependent),
            (Some(a), Some(mapped), Mapping::EndpointIndependent),
            (Some(a), Some(b), Mapping::EndpointDependent),
            (Some(a), Some(c), Mapping::EndpointDependent),
            (Some(a), None, Mapping::Unknown),
            (None, Some(a), Mapping::Unknown),
            (None, None, Mapping::Unknown),
        ];
        for (x, y, want) in table {
            assert_eq!(classify(x, y), want, "{x:?} {y:?}");
        }
    }
}
