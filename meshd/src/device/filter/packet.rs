//! A zero-copy reading of the headers the policy filter needs from a raw IP packet (what
//! the TUN hands over, what decryption produces): addresses, the upper-layer protocol after
//! IPv6 extension headers, ports, TCP flags, ICMP type and echo identifier, fragmentation,
//! and for ICMP errors the embedded packet's flow.
//!
//! No allocation, no panics on any input (slices are taken with `get`); this file depends
//! on nothing but `std`, so a fuzz target can compile it in with `#[path]`.
//!
//! ```text
//! IPv4 (RFC 791)                            IPv6 (RFC 8200)
//!  0       4       8              16      31  0    4            12     16       24     31
//! +-------+-------+---------------+--------+ +----+-------------+---------------------+
//! |version|  IHL  |      TOS      | length | |ver | class       | flow label          |
//! +-------+-------+-------+-------+--------+ +----+-------------+------+-------+------+
//! |  identification       |flags| offset   | | payload length        | next  | hops |
//! +-----------------------+-----+----------+ +-----------------------+-------+------+
//! |  TTL  | protocol      | checksum       | | source (16 bytes), destination (16)   |
//! +-------+---------------+----------------+ +---------------------------------------+
//! | source | destination | options ...     | | extension headers (0, 43, 44, 51, 60)|
//! ```
//! A non-first fragment (IPv4 offset ≠ 0, IPv6 fragment header offset ≠ 0) carries no
//! upper-layer header: [`L4::Fragment`]. A first fragment must hold the whole upper-layer
//! header we read (RFC 7112 for IPv6; for IPv4 a first fragment too short for its ports is
//! malformed, which defeats the "tiny fragment" trick of RFC 1858).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers read here.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// ICMP for IPv4.
pub const ICMP: u8 = 1;
/// ICMPv6.
pub const ICMPV6: u8 = 58;

/// Most IPv6 extension headers walked before the packet counts as malformed.
const MAX_EXTENSIONS: usize = 8;

/// TCP flags (RFC 9293).
pub const FIN: u8 = 0x01;
/// Reset.
pub const RST: u8 = 0x04;
/// Synchronise.
pub const SYN: u8 = 0x02;
/// Acknowledgement.
pub const ACK: u8 = 0x10;

/// Marks the requester's side of an ICMP echo in a flow's port fields, so that an echo
/// request and its reply (identifier in either field) form one flow, and two requests
/// with the same identifier in opposite directions do not.
pub const ECHO_SIDE: u32 = 0x1_0000;

/// Why a packet could not be read. Tiny, no allocation (smoltcp style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than its headers say.
    Truncated,
    /// Not IP version 4 or 6.
    Version,
    /// A header field is impossible (IHL < 5, total length below the header).
    Header,
    /// More than [`MAX_EXTENSIONS`] IPv6 extension headers.
    Extensions,
}

/// A flow's identity as seen on one packet: addresses, protocol, and two "ports" (TCP and
/// UDP ports; for ICMP echo the identifier on the requester's side, marked with
/// [`ECHO_SIDE`]; 0 for protocols without ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol.
    pub proto: u8,
    /// Source port (see above).
    pub sport: u32,
    /// Destination port (see above).
    pub dport: u32,
}

/// What follows the IP header(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP with its ports and flags.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// The flags byte (FIN, SYN, RST, ACK, ...).
        flags: u8,
    },
    /// UDP with its ports.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// An ICMP echo request or reply.
    Echo {
        /// Request (else reply).
        request: bool,
        /// The identifier.
        id: u16,
    },
    /// An ICMP error (destination unreachable, packet too big, time exceeded, parameter
    /// problem) and the flow of the packet it is about, when that could be read.
    Error {
        /// The embedded packet's flow.
        inner: Option<Tuple>,
    },
    /// Any other ICMP message.
    Icmp {
        /// Its type.
        kind: u8,
    },
    /// A protocol without ports (or one rules do not name).
    Other,
    /// A fragment other than the first: no upper-layer header.
    Fragment {
        /// The datagram's identification (IPv4: 16 bits).
        id: u32,
    },
}

/// The headers of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// The upper layer.
    pub l4: L4,
    /// The datagram's identification when this is the first fragment of several.
    pub first_fragment: Option<u32>,
}

impl Parsed {
    /// The port rules name: the destination port of TCP and UDP, else 0.
    pub fn port(&self) -> u16 {
        match self.l4 {
            L4::Tcp { dport, .. } | L4::Udp { dport, .. } => dport,
            _ => 0,
        }
    }

    /// The flow this packet belongs to, for packets that belong to one (TCP, UDP, echo,
    /// other protocols); `None` for ICMP errors, other ICMP and non-first fragments.
    pub fn tuple(&self) -> Option<Tuple> {
        let (sport, dport) = match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => {
                (u32::from(sport), u32::from(dport))
            }
            L4::Echo { request: true, id } => (u32::from(id) | ECHO_SIDE, 0),
            L4::Echo { request: false, id } => (0, u32::from(id) | ECHO_SIDE),
            L4::Other => (0, 0),
            L4::Error { .. } | L4::Icmp { .. } | L4::Fragment { .. } => return None,
        };
        Some(Tuple {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport,
            dport,
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

fn v4(b: &[u8], at: usize) -> Option<IpAddr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(o)))
}

fn v6(b: &[u8], at: usize) -> Option<IpAddr> {
    let o: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(o)))
}

/// The IP layer of a packet: addresses, protocol, where the upper layer lies, fragments.
struct Ip<'a> {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    /// The upper-layer bytes (to the end of the packet, or of what an ICMP error quoted).
    payload: &'a [u8],
    /// `Some((offset_is_zero, more, id))` when fragmented.
    fragment: Option<(bool, bool, u32)>,
    v6: bool,
}

/// Reads the IP header(s). `quoted`: the packet is the one embedded in an ICMP error, which
/// is cut short by design, so its length fields are not checked against what is there.
fn ip_layer(b: &[u8], quoted: bool) -> Result<Ip<'_>, ParseError> {
    let first = *b.first().ok_or(ParseError::Truncated)?;
    match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 {
                return Err(ParseError::Header);
            }
            if b.len() < ihl {
                return Err(ParseError::Truncated);
            }
            let total = usize::from(u16_at(b, 2).ok_or(ParseError::Truncated)?);
            let end = if quoted {
                b.len()
            } else {
                if total < ihl {
                    return Err(ParseError::Header);
                }
                if total > b.len() {
                    return Err(ParseError::Truncated);
                }
                total
            };
            let frag = u16_at(b, 6).ok_or(ParseError::Truncated)?;
            let (more, offset) = (frag & 0x2000 != 0, frag & 0x1fff);
            let id = u32::from(u16_at(b, 4).ok_or(ParseError::Truncated)?);
            Ok(Ip {
                src: v4(b, 12).ok_or(ParseError::Truncated)?,
                dst: v4(b, 16).ok_or(ParseError::Truncated)?,
                proto: b[9],
                payload: b.get(ihl..end).ok_or(ParseError::Truncated)?,
                fragment: (more || offset != 0).then_some((offset == 0, more, id)),
                v6: false,
            })
        }
        6 => {
            if b.len() < 40 {
                return Err(ParseError::Truncated);
            }
            let payload_len = usize::from(u16_at(b, 4).ok_or(ParseError::Truncated)?);
            let end = if quoted || payload_len == 0 {
                // Quoted, or a jumbogram (RFC 2675): what is there.
                b.len()
            } else if 40 + payload_len > b.len() {
                return Err(ParseError::Truncated);
            } else {
                40 + payload_len
            };
            let b = &b[..end];
            let mut next = b[6];
            let mut at = 40;
            let mut fragment = None;
            let mut walked = 0;
            loop {
                let len = match next {
                    // Hop-by-hop, routing, destination options: (hdr ext len + 1) * 8.
                    0 | 43 | 60 => {
                        (usize::from(*b.get(at + 1).ok_or(ParseError::Truncated)?) + 1) * 8
                    }
                    // Fragment header: 8 bytes.
                    44 => {
                        let off_m = u16_at(b, at + 2).ok_or(ParseError::Truncated)?;
                        let id = u32_at(b, at + 4).ok_or(ParseError::Truncated)?;
                        let (offset, more) = (off_m >> 3, off_m & 1 != 0);
                        // An atomic fragment (offset 0, no more) is a whole datagram.
                        if offset != 0 || more {
                            fragment = Some((offset == 0, more, id));
                        }
                        8
                    }
                    // Authentication header: (payload len + 2) * 4.
                    51 => (usize::from(*b.get(at + 1).ok_or(ParseError::Truncated)?) + 2) * 4,
                    _ => break,
                };
                walked += 1;
                if walked > MAX_EXTENSIONS {
                    return Err(ParseError::Extensions);
                }
                let header_next = *b.get(at).ok_or(ParseError::Truncated)?;
                if b.len() < at + len {
                    return Err(ParseError::Truncated);
                }
                at += len;
                next = header_next;
                // Past a non-first fragment's header there is no upper layer to read.
                if matches!(fragment, Some((false, _, _))) {
                    break;
                }
            }
            Ok(Ip {
                src: v6(b, 8).ok_or(ParseError::Truncated)?,
                dst: v6(b, 24).ok_or(ParseError::Truncated)?,
                proto: next,
                payload: b.get(at..).ok_or(ParseError::Truncated)?,
                fragment,
                v6: true,
            })
        }
        _ => Err(ParseError::Version),
    }
}

/// ICMP error types: IPv4 destination unreachable (3), source quench (4), time exceeded
/// (11), parameter problem (12); ICMPv6 destination unreachable (1), packet too big (2),
/// time exceeded (3), parameter problem (4).
fn is_error(v6: bool, kind: u8) -> bool {
    if v6 {
        matches!(kind, 1..=4)
    } else {
        matches!(kind, 3 | 4 | 11 | 12)
    }
}

/// Echo request / reply types for the family: `Some(true)` request, `Some(false)` reply.
fn echo(v6: bool, kind: u8) -> Option<bool> {
    match (v6, kind) {
        (false, 8) | (true, 128) => Some(true),
        (false, 0) | (true, 129) => Some(false),
        _ => None,
    }
}

/// Reads a packet's headers (see the module docs). Never panics, never allocates.
pub fn parse(packet: &[u8]) -> Result<Parsed, ParseError> {
    let ip = ip_layer(packet, false)?;
    let first_fragment = match ip.fragment {
        Some((false, _, id)) => {
            return Ok(Parsed {
                src: ip.src,
                dst: ip.dst,
                proto: ip.proto,
                l4: L4::Fragment { id },
                first_fragment: None,
            })
        }
        Some((true, _, id)) => Some(id),
        None => None,
    };
    let p = ip.payload;
    let l4 = match ip.proto {
        TCP => {
            if p.len() < 20 {
                return Err(ParseError::Truncated);
            }
            L4::Tcp {
                sport: u16::from_be_bytes([p[0], p[1]]),
                dport: u16::from_be_bytes([p[2], p[3]]),
                flags: p[13],
            }
        }
        UDP => {
            if p.len() < 8 {
                return Err(ParseError::Truncated);
            }
            L4::Udp {
                sport: u16::from_be_bytes([p[0], p[1]]),
                dport: u16::from_be_bytes([p[2], p[3]]),
            }
        }
        ICMP | ICMPV6 if (ip.proto == ICMPV6) == ip.v6 => {
            if p.len() < 8 {
                return Err(ParseError::Truncated);
            }
            let kind = p[0];
            if let Some(request) = echo(ip.v6, kind) {
                L4::Echo {
                    request,
                    id: u16::from_be_bytes([p[4], p[5]]),
                }
            } else if is_error(ip.v6, kind) {
                L4::Error {
                    inner: quoted(&p[8..]),
                }
            } else {
                L4::Icmp { kind }
            }
        }
        _ => L4::Other,
    };
    Ok(Parsed {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        l4,
        first_fragment,
    })
}

/// The flow of the packet an ICMP error quotes: its IP header and at least the first 8
/// bytes after it (RFC 792; RFC 4443 quotes as much as fits). `None` if that is not there,
/// or the quoted packet is a non-first fragment or itself an ICMP error.
pub fn quoted(b: &[u8]) -> Option<Tuple> {
    let ip = ip_layer(b, true).ok()?;
    if matches!(ip.fragment, Some((false, _, _))) {
        return None;
    }
    let p = ip.payload;
    let (sport, dport) = match ip.proto {
        TCP | UDP => (u32::from(u16_at(p, 0)?), u32::from(u16_at(p, 2)?)),
        ICMP | ICMPV6 if (ip.proto == ICMPV6) == ip.v6 => {
            let id = u32::from(u16_at(p, 4)?);
            match echo(ip.v6, *p.first()?)? {
                true => (id | ECHO_SIDE, 0),
                false => (0, id | ECHO_SIDE),
            }
        }
        _ => (0, 0),
    };
    Some(Tuple {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        sport,
        dport,
    })
}

#[cfg(test)]
pub mod build {
    //! Packets for tests, byte by byte.

    use std::net::IpAddr;

    /// An IPv4 or IPv6 header (by the addresses' family) with `proto` around `payload`;
    /// `frag` = (offset in 8-byte units, more fragments, id) adds fragmentation.
    pub fn ip(
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        payload: &[u8],
        frag: Option<(u16, bool, u32)>,
    ) -> Vec<u8> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = 20 + payload.len();
                let mut p = vec![0x45, 0];
                p.extend_from_slice(&(total as u16).to_be_bytes());
                let (id, fl) = match frag {
                    Some((off, more, id)) => (id as u16, off | if more { 0x2000 } else { 0 }),
                    None => (0x1234, 0x4000), // DF
                };
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&fl.to_be_bytes());
                p.extend_from_slice(&[64, proto, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(payload);
                p
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let ext = if frag.is_some() { 8 } else { 0 };
                let mut p = vec![0x60, 0, 0, 0];
                p.extend_from_slice(&((payload.len() + ext) as u16).to_be_bytes());
                p.push(if frag.is_some() { 44 } else { proto });
                p.push(64);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                if let Some((off, more, id)) = frag {
                    p.extend_from_slice(&[proto, 0]);
                    p.extend_from_slice(&((off << 3) | u16::from(more)).to_be_bytes());
                    p.extend_from_slice(&id.to_be_bytes());
                }
                p.extend_from_slice(payload);
                p
            }
            _ => panic!("mixed address families"),
        }
    }

    /// A TCP header (20 bytes) with `flags` and a little data.
    pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0; 8]);
        t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(b"data");
        t
    }

    /// A UDP header and a little data.
    pub fn udp(sport: u16, dport: u16) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&12u16.to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(b"data");
        u
    }

    /// An ICMP(v6) message: type, code, checksum, 4 bytes of rest (echo: id and sequence),
    /// then `body`.
    pub fn icmp(kind: u8, id: u16, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0];
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(body);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_and_udp_over_both_families() {
        for (s, d) in [("10.9.8.1", "10.9.8.2"), ("fd00::1", "fd00::2")] {
            let p = parse(&ip(a(s), a(d), TCP, &tcp(40000, 443, SYN), None)).unwrap();
            assert_eq!((p.src, p.dst, p.proto), (a(s), a(d), TCP));
            assert_eq!(
                p.l4,
                L4::Tcp {
                    sport: 40000,
                    dport: 443,
                    flags: SYN
                }
            );
            assert_eq!(p.port(), 443);
            assert_eq!(p.first_fragment, None);
            let t = p.tuple().unwrap();
            assert_eq!((t.sport, t.dport), (40000, 443));

            let p = parse(&ip(a(s), a(d), UDP, &udp(5353, 53), None)).unwrap();
            assert_eq!(
                p.l4,
                L4::Udp {
                    sport: 5353,
                    dport: 53
                }
            );
        }
    }

    #[test]
    fn icmp_echo_and_other_types() {
        let (s, d) = (a("10.9.8.1"), a("10.9.8.2"));
        let req = parse(&ip(s, d, ICMP, &icmp(8, 77, b"ping"), None)).unwrap();
        assert_eq!(
            req.l4,
            L4::Echo {
                request: true,
                id: 77
            }
        );
        assert_eq!(req.port(), 0);
        let rep = parse(&ip(d, s, ICMP, &icmp(0, 77, b"ping"), None)).unwrap();
        assert_eq!(
            rep.l4,
            L4::Echo {
                request: false,
                id: 77
            }
        );
        // Request and reply name the same flow, seen from both ends.
        let (rq, rp) = (req.tuple().unwrap(), rep.tuple().unwrap());
        assert_eq!((rq.sport, rq.dport), (rp.dport, rp.sport));
        // ICMPv6 numbers its echo 128/129.
        let (s6, d6) = (a("fd00::1"), a("fd00::2"));
        let req6 = parse(&ip(s6, d6, ICMPV6, &icmp(128, 5, b""), None)).unwrap();
        assert_eq!(
            req6.l4,
            L4::Echo {
                request: true,
                id: 5
            }
        );
        // Timestamp request (13) is plain ICMP; ICMPv6 type 8 is not an echo.
        let ts = parse(&ip(s, d, ICMP, &icmp(13, 0, &[0; 12]), None)).unwrap();
        assert_eq!(ts.l4, L4::Icmp { kind: 13 });
        let odd = parse(&ip(s6, d6, ICMPV6, &icmp(8, 0, b""), None)).unwrap();
        assert_eq!(odd.l4, L4::Icmp { kind: 8 });
        // ICMPv6's number inside IPv4 is just another protocol.
        let other = parse(&ip(s, d, ICMPV6, &icmp(128, 5, b""), None)).unwrap();
        assert_eq!(other.l4, L4::Other);
    }

    #[test]
    fn icmp_errors_carry_the_quoted_flow() {
        let (me, peer) = (a("10.9.8.1"), a("10.9.8.2"));
        // We sent UDP to the peer's port 9999; it answers port unreachable.
        let sent = ip(me, peer, UDP, &udp(40000, 9999), None);
        let err = ip(peer, me, ICMP, &icmp(3, 0, &sent[..28]), None);
        let p = parse(&err).unwrap();
        assert_eq!(
            p.l4,
            L4::Error {
                inner: Some(Tuple {
                    src: me,
                    dst: peer,
                    proto: UDP,
                    sport: 40000,
                    dport: 9999
                })
            }
        );
        // IPv6 packet too big quoting a TCP segment.
        let (me6, peer6) = (a("fd00::1"), a("fd00::2"));
        let sent = ip(me6, peer6, TCP, &tcp(40000, 443, ACK), None);
        let err = ip(peer6, me6, ICMPV6, &icmp(2, 0, &sent), None);
        let L4::Error { inner: Some(t) } = parse(&err).unwrap().l4 else {
            panic!("not an error with a flow")
        };
        assert_eq!((t.src, t.dport, t.proto), (me6, 443, TCP));
        // An error quoting an echo request names the echo's flow.
        let ping = ip(me, peer, ICMP, &icmp(8, 99, b"x"), None);
        let err = ip(peer, me, ICMP, &icmp(11, 0, &ping), None);
        let L4::Error { inner: Some(t) } = parse(&err).unwrap().l4 else {
            panic!("not an error with a flow")
        };
        assert_eq!((t.sport, t.dport), (99 | ECHO_SIDE, 0));
        // Too little quoted: an error without a flow.
        let err = ip(peer, me, ICMP, &icmp(3, 0, &sent[..10]), None);
        assert_eq!(parse(&err).unwrap().l4, L4::Error { inner: None });
    }

    #[test]
    fn fragments() {
        let (s, d) = (a("10.9.8.1"), a("10.9.8.2"));
        // First fragment: ports readable, identification noted.
        let first = parse(&ip(s, d, UDP, &udp(1, 2), Some((0, true, 0x4242)))).unwrap();
        assert_eq!(first.l4, L4::Udp { sport: 1, dport: 2 });
        assert_eq!(first.first_fragment, Some(0x4242));
        // Later fragments: no ports, whatever the bytes look like.
        let later = parse(&ip(s, d, UDP, &[0xff; 16], Some((185, false, 0x4242)))).unwrap();
        assert_eq!(later.l4, L4::Fragment { id: 0x4242 });
        assert_eq!(later.tuple(), None);
        // The RFC 1858 overlap: offset 1 of TCP is a fragment like any other.
        let overlap = parse(&ip(s, d, TCP, &[0; 12], Some((1, true, 7)))).unwrap();
        assert_eq!(overlap.l4, L4::Fragment { id: 7 });
        // A first fragment too short for the TCP header is malformed (tiny fragment).
        let tiny = ip(s, d, TCP, &tcp(1, 22, SYN)[..8], Some((0, true, 9)));
        assert_eq!(parse(&tiny), Err(ParseError::Truncated));

        let (s6, d6) = (a("fd00::1"), a("fd00::2"));
        let first = parse(&ip(
            s6,
            d6,
            TCP,
            &tcp(1, 22, SYN),
            Some((0, true, 0xabcdef)),
        ))
        .unwrap();
        assert_eq!(first.proto, TCP);
        assert_eq!(first.first_fragment, Some(0xabcdef));
        assert_eq!(first.port(), 22);
        let later = parse(&ip(s6, d6, TCP, &[0; 16], Some((2, false, 0xabcdef)))).unwrap();
        assert_eq!(later.l4, L4::Fragment { id: 0xabcdef });
        // An atomic fragment (offset 0, no more) is a whole packet.
        let atomic = parse(&ip(s6, d6, UDP, &udp(1, 2), Some((0, false, 3)))).unwrap();
        assert_eq!(atomic.first_fragment, None);
        assert_eq!(atomic.l4, L4::Udp { sport: 1, dport: 2 });
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let (s, d) = (a("fd00::1"), a("fd00::2"));
        // Hop-by-hop (8 bytes) then destination options (16 bytes) then UDP.
        let mut payload = vec![60, 0, 0, 0, 0, 0, 0, 0];
        payload.extend_from_slice(&[UDP, 1]);
        payload.extend_from_slice(&[0; 14]);
        payload.extend_from_slice(&udp(7, 8));
        let p = parse(&ip(s, d, 0, &payload, None)).unwrap();
        assert_eq!((p.proto, p.port()), (UDP, 8));
        // A chain longer than MAX_EXTENSIONS.
        let mut chain = Vec::new();
        for _ in 0..=MAX_EXTENSIONS {
            chain.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(
            parse(&ip(s, d, 60, &chain, None)),
            Err(ParseError::Extensions)
        );
        // An extension header cut short.
        assert_eq!(
            parse(&ip(s, d, 60, &[UDP, 3, 0, 0], None)),
            Err(ParseError::Truncated)
        );
        // ESP: a protocol without ports.
        assert_eq!(parse(&ip(s, d, 50, &[0; 16], None)).unwrap().l4, L4::Other);
    }

    #[test]
    fn bad_headers_are_errors() {
        let good = ip(a("10.9.8.1"), a("10.9.8.2"), TCP, &tcp(1, 2, SYN), None);
        assert_eq!(parse(&[]), Err(ParseError::Truncated));
        assert_eq!(parse(&[0x00; 40]), Err(ParseError::Version));
        let mut bad_ihl = good.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(parse(&bad_ihl), Err(ParseError::Header));
        // Total length beyond the buffer.
        let mut long = good.clone();
        long[2..4].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(parse(&long), Err(ParseError::Truncated));
        // Total length below the header.
        let mut short = good.clone();
        short[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse(&short), Err(ParseError::Header));
        // Padding after the datagram is ignored.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(parse(&padded), parse(&good));
    }

    /// Every prefix of every kind of packet, and every byte flipped: an answer, never a
    /// panic, and never a flow read from bytes beyond the cut.
    #[test]
    fn truncated_and_mangled_packets_never_panic() {
        let (s, d) = (a("10.9.8.1"), a("10.9.8.2"));
        let (s6, d6) = (a("fd00::1"), a("fd00::2"));
        let sent = ip(s, d, UDP, &udp(40000, 9999), None);
        let mut ext = vec![TCP, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&tcp(1, 2, SYN));
        let samples = [
            ip(s, d, TCP, &tcp(1, 2, SYN), None),
            ip(s, d, UDP, &udp(1, 2), Some((0, true, 1))),
            ip(s, d, ICMP, &icmp(3, 0, &sent), None),
            ip(s6, d6, TCP, &tcp(1, 2, SYN), Some((0, true, 1))),
            ip(s6, d6, 0, &ext, None),
            ip(
                s6,
                d6,
                ICMPV6,
                &icmp(1, 0, &ip(s6, d6, UDP, &udp(1, 2), None)),
                None,
            ),
        ];
        for sample in &samples {
            assert!(parse(sample).is_ok());
            for cut in 0..sample.len() {
                // A cut packet whose length fields still claim the whole is truncated.
                assert!(parse(&sample[..cut]).is_err(), "cut {cut} of {sample:?}");
            }
            for i in 0..sample.len() {
                for bit in 0..8 {
                    let mut m = sample.clone();
                    m[i] ^= 1 << bit;
                    let _ = parse(&m);
                    for cut in [i, i + 1, m.len()] {
                        let _ = parse(&m[..cut.min(m.len())]);
                    }
                }
            }
        }
        // Fixed-length fields claiming more than there is, at every length.
        for len in 0..64 {
            for fill in [0x00, 0x45, 0x4f, 0x60, 0xff] {
                let _ = parse(&vec![fill; len]);
                let _ = quoted(&vec![fill; len]);
            }
        }
    }
}
