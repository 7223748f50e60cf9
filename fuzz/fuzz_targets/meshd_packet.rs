//! The policy filter's reading of raw IP packets (`meshd/src/device/filter/packet.rs`:
//! `parse` for every packet from the TUN or a peer, `quoted` for the packet an ICMP error
//! carries). meshd is a binary crate; packet.rs depends on nothing but `std`, so it is
//! compiled into this target as it is (`#[path]`).
//!
//! Checked on every input, for both entry points:
//! - the answer (headers or error) is the one a reference reading gives, written here apart
//!   from packet.rs from the layouts its module docs draw (IPv4 header and options; IPv6
//!   extension headers, at most 8; the fragment rules; the upper-layer header lengths);
//!   since the reference indexes the buffer directly, it also shows that every header read
//!   lies within the datagram;
//! - what parses is consistent with itself: ports only for TCP and UDP, ICMP kinds only for
//!   the family's own ICMP, no upper layer for a non-first fragment, 16-bit IPv4 ids, the
//!   flow's port fields as `ECHO_SIDE` marks them;
//! - bytes after the datagram change nothing, and a cut before the end its length fields
//!   give is an error (no flow read from bytes that are not there);
//! - an ICMP error sent back to the sender, quoting the packet (its first 8 upper-layer
//!   bytes, or all of it), names the packet's flow, in the reverse direction of the error;
//! - the packet with its addresses and ports swapped (an echo request turned into the
//!   reply) names the reversed flow;
//! - what `quoted` reads lies in the bytes it is given: more bytes change nothing.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../meshd/src/device/filter/packet.rs"]
mod packet;

use packet::{ParseError, Parsed, Tuple, ECHO_SIDE, ICMP, ICMPV6, L4, TCP, UDP};

/// packet.rs's `MAX_EXTENSIONS` (private there): most IPv6 extension headers walked.
const MAX_EXTENSIONS: usize = 8;

/// Bytes appended to check that what lies after a datagram is not read.
const PADDING: [u8; 16] = [0xa5; 16];

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn own_icmp(v6: bool) -> u8 {
    if v6 {
        ICMPV6
    } else {
        ICMP
    }
}

/// Where the layers of a datagram lie, by the reference reading.
#[derive(Debug)]
struct Layout {
    v6: bool,
    src: IpAddr,
    dst: IpAddr,
    /// Upper-layer protocol (after the extension headers).
    proto: u8,
    /// Where the upper-layer header starts.
    l4: usize,
    /// Where the datagram ends: its length fields, or the buffer's end when quoted or an
    /// IPv6 payload length of 0 (jumbogram).
    end: usize,
    /// Whether `end` comes from the length fields.
    end_from_header: bool,
    /// (offset, more fragments, identification) when fragmented (atomic fragments are not).
    fragment: Option<(u16, bool, u32)>,
}

impl Layout {
    fn later_fragment(&self) -> bool {
        self.fragment.is_some_and(|(offset, ..)| offset != 0)
    }
}

/// The IP layer read the plain way. `quoted`: the length fields are not held against the
/// buffer (an ICMP error quotes a cut packet).
fn layout(b: &[u8], quoted: bool) -> Result<Layout, ParseError> {
    let Some(&first) = b.first() else {
        return Err(ParseError::Truncated);
    };
    match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 {
                return Err(ParseError::Header);
            }
            if b.len() < ihl {
                return Err(ParseError::Truncated);
            }
            let total = usize::from(be16(b, 2));
            let end = if quoted {
                b.len()
            } else if total < ihl {
                return Err(ParseError::Header);
            } else if total > b.len() {
                return Err(ParseError::Truncated);
            } else {
                total
            };
            let word = be16(b, 6);
            let (offset, more) = (word & 0x1fff, word & 0x2000 != 0);
            Ok(Layout {
                v6: false,
                src: IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15])),
                dst: IpAddr::V4(Ipv4Addr::new(b[16], b[17], b[18], b[19])),
                proto: b[9],
                l4: ihl,
                end,
                end_from_header: !quoted,
                fragment: (offset != 0 || more).then_some((offset, more, u32::from(be16(b, 4)))),
            })
        }
        6 => {
            if b.len() < 40 {
                return Err(ParseError::Truncated);
            }
            let payload = usize::from(be16(b, 4));
            let end_from_header = !quoted && payload != 0;
            let end = if !end_from_header {
                b.len()
            } else if 40 + payload > b.len() {
                return Err(ParseError::Truncated);
            } else {
                40 + payload
            };
            let addr = |at: usize| {
                let octets: [u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let (mut next, mut at, mut fragment, mut walked) = (b[6], 40, None, 0);
            loop {
                // Each header's length, once the bytes saying it are there.
                let (size, needs) = match next {
                    0 | 43 | 60 => ((usize::from(*b.get(at + 1).unwrap_or(&0)) + 1) * 8, 2),
                    51 => ((usize::from(*b.get(at + 1).unwrap_or(&0)) + 2) * 4, 2),
                    44 => (8, 8),
                    _ => break,
                };
                if at + needs > end {
                    return Err(ParseError::Truncated);
                }
                if walked == MAX_EXTENSIONS {
                    return Err(ParseError::Extensions);
                }
                walked += 1;
                if at + size > end {
                    return Err(ParseError::Truncated);
                }
                if next == 44 {
                    let word = be16(b, at + 2);
                    let (offset, more) = (word >> 3, word & 1 != 0);
                    if offset != 0 || more {
                        fragment = Some((offset, more, be32(b, at + 4)));
                    }
                }
                next = b[at];
                at += size;
                if fragment.is_some_and(|(offset, ..)| offset != 0) {
                    break;
                }
            }
            Ok(Layout {
                v6: true,
                src: addr(8),
                dst: addr(24),
                proto: next,
                l4: at,
                end,
                end_from_header,
                fragment,
            })
        }
        _ => Err(ParseError::Version),
    }
}

/// ICMP echo by type: `Some(true)` request, `Some(false)` reply.
fn echo_kind(v6: bool, kind: u8) -> Option<bool> {
    match (v6, kind) {
        (false, 8) | (true, 128) => Some(true),
        (false, 0) | (true, 129) => Some(false),
        _ => None,
    }
}

/// RFC 792 / RFC 4443 error types (IPv4 source quench included, as packet.rs reads it).
fn error_kind(v6: bool, kind: u8) -> bool {
    match v6 {
        false => matches!(kind, 3 | 4 | 11 | 12),
        true => matches!(kind, 1..=4),
    }
}

/// The reference `parse`.
fn expected_parse(b: &[u8]) -> Result<Parsed, ParseError> {
    let ip = layout(b, false)?;
    let done = |l4, first_fragment| {
        Ok(Parsed {
            src: ip.src,
            dst: ip.dst,
            proto: ip.proto,
            l4,
            first_fragment,
        })
    };
    if let Some((offset, _, id)) = ip.fragment {
        if offset != 0 {
            return done(L4::Fragment { id }, None);
        }
    }
    let first_fragment = ip.fragment.map(|(.., id)| id);
    let p = &b[ip.l4..ip.end];
    let needs = |n: usize| {
        if p.len() < n {
            Err(ParseError::Truncated)
        } else {
            Ok(())
        }
    };
    let l4 = match ip.proto {
        TCP => {
            needs(20)?;
            L4::Tcp {
                sport: be16(p, 0),
                dport: be16(p, 2),
                flags: p[13],
            }
        }
        UDP => {
            needs(8)?;
            L4::Udp {
                sport: be16(p, 0),
                dport: be16(p, 2),
            }
        }
        proto if proto == own_icmp(ip.v6) => {
            needs(8)?;
            match echo_kind(ip.v6, p[0]) {
                Some(request) => L4::Echo {
                    request,
                    id: be16(p, 4),
                },
                None if error_kind(ip.v6, p[0]) => L4::Error {
                    inner: expected_quoted(&p[8..]),
                },
                None => L4::Icmp { kind: p[0] },
            }
        }
        _ => L4::Other,
    };
    done(l4, first_fragment)
}

/// The reference `quoted`.
fn expected_quoted(b: &[u8]) -> Option<Tuple> {
    let ip = layout(b, true).ok()?;
    if ip.later_fragment() {
        return None;
    }
    let p = &b[ip.l4..ip.end];
    let (sport, dport) = match ip.proto {
        TCP | UDP if p.len() >= 4 => (u32::from(be16(p, 0)), u32::from(be16(p, 2))),
        TCP | UDP => return None,
        proto if proto == own_icmp(ip.v6) && p.len() >= 6 => {
            let id = u32::from(be16(p, 4)) | ECHO_SIDE;
            match echo_kind(ip.v6, p[0])? {
                true => (id, 0),
                false => (0, id),
            }
        }
        proto if proto == own_icmp(ip.v6) => return None,
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

/// A flow's port fields: ports (16 bits), or an echo identifier on one side marked
/// `ECHO_SIDE` (the other side 0), or nothing.
fn check_tuple(t: &Tuple) {
    let icmp = (t.proto == ICMP && t.src.is_ipv4()) || (t.proto == ICMPV6 && t.src.is_ipv6());
    assert_eq!(t.src.is_ipv4(), t.dst.is_ipv4(), "{t:?}");
    match t.proto {
        TCP | UDP => assert!(t.sport <= 0xffff && t.dport <= 0xffff, "{t:?}"),
        _ if icmp => {
            let (echo, zero) = if t.sport == 0 {
                (t.dport, t.sport)
            } else {
                (t.sport, t.dport)
            };
            assert!(zero == 0 && (echo & !0xffff) == ECHO_SIDE, "{t:?}");
        }
        _ => assert_eq!((t.sport, t.dport), (0, 0), "{t:?}"),
    }
}

/// What one parsed packet must say of itself.
fn check_parsed(p: &Parsed, b: &[u8]) {
    let v6 = b[0] >> 4 == 6;
    assert!(p.src.is_ipv6() == v6 && p.dst.is_ipv6() == v6, "{p:?}");
    let icmp = own_icmp(v6);
    match p.l4 {
        L4::Tcp { dport, .. } => assert!(p.proto == TCP && p.port() == dport),
        L4::Udp { dport, .. } => assert!(p.proto == UDP && p.port() == dport),
        L4::Echo { .. } | L4::Error { .. } | L4::Icmp { .. } => {
            assert!(p.proto == icmp && p.port() == 0)
        }
        L4::Other => assert!(![TCP, UDP, icmp].contains(&p.proto) && p.port() == 0),
        L4::Fragment { id } => {
            assert!(p.first_fragment.is_none() && p.port() == 0);
            assert!(v6 || id <= 0xffff);
        }
    }
    if let L4::Icmp { kind } = p.l4 {
        assert!(echo_kind(v6, kind).is_none() && !error_kind(v6, kind));
    }
    assert!(v6 || p.first_fragment.is_none_or(|id| id <= 0xffff));
    match (p.tuple(), p.l4) {
        (None, L4::Error { .. } | L4::Icmp { .. } | L4::Fragment { .. }) => {}
        (Some(t), L4::Tcp { .. } | L4::Udp { .. } | L4::Echo { .. } | L4::Other) => {
            assert_eq!((t.src, t.dst, t.proto), (p.src, p.dst, p.proto));
            check_tuple(&t);
            match p.l4 {
                L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => {
                    assert_eq!((t.sport, t.dport), (sport.into(), dport.into()))
                }
                L4::Echo { request, id } => {
                    let marked = u32::from(id) | ECHO_SIDE;
                    let expect = if request { (marked, 0) } else { (0, marked) };
                    assert_eq!((t.sport, t.dport), expect);
                }
                _ => {}
            }
        }
        (t, l4) => panic!("tuple {t:?} for {l4:?}"),
    }
    if let L4::Error { inner: Some(t) } = p.l4 {
        check_tuple(&t);
    }
}

/// An ICMP error from the packet's destination back to its source, quoting `quote`.
fn error_back(p: &Parsed, quote: &[u8]) -> Option<Vec<u8>> {
    let mut m = Vec::with_capacity(48 + quote.len());
    match (p.dst, p.src) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let total = u16::try_from(20 + 8 + quote.len()).ok()?;
            m.extend_from_slice(&[0x45, 0]);
            m.extend_from_slice(&total.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0x40, 0, 64, ICMP, 0, 0]);
            m.extend_from_slice(&from.octets());
            m.extend_from_slice(&to.octets());
            m.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]); // port unreachable
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let payload = u16::try_from(8 + quote.len()).ok()?;
            m.extend_from_slice(&[0x60, 0, 0, 0]);
            m.extend_from_slice(&payload.to_be_bytes());
            m.extend_from_slice(&[ICMPV6, 64]);
            m.extend_from_slice(&from.octets());
            m.extend_from_slice(&to.octets());
            m.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // port unreachable
        }
        _ => unreachable!("one family per packet"),
    }
    m.extend_from_slice(quote);
    Some(m)
}

/// The datagram sent the other way: addresses swapped, and ports (TCP, UDP) or the echo
/// type (request ↔ reply).
fn reversed(p: &Parsed, ip: &Layout, datagram: &[u8]) -> Vec<u8> {
    let mut r = datagram.to_vec();
    let (at, len) = if ip.v6 { (8, 16) } else { (12, 4) };
    let (src, dst) = r[at..at + 2 * len].split_at_mut(len);
    src.swap_with_slice(dst);
    let l4 = &mut r[ip.l4..];
    match p.l4 {
        L4::Tcp { .. } | L4::Udp { .. } => {
            let (sport, dport) = l4[..4].split_at_mut(2);
            sport.swap_with_slice(dport);
        }
        L4::Echo { request, .. } => {
            l4[0] = match (ip.v6, request) {
                (false, true) => 0,
                (false, false) => 8,
                (true, true) => 129,
                (true, false) => 128,
            }
        }
        _ => {}
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let parsed = packet::parse(data);
    assert_eq!(parsed, expected_parse(data), "parse of {data:?}");
    assert_eq!(
        packet::parse(&data.to_vec()),
        parsed,
        "parse is deterministic"
    );
    if let Err(e) = parsed {
        let version = data.first().map(|b| b >> 4);
        assert_eq!(
            e == ParseError::Version,
            !matches!(version, None | Some(4 | 6)),
            "{e:?}"
        );
    }

    let quoted = packet::quoted(data);
    assert_eq!(quoted, expected_quoted(data), "quoted of {data:?}");
    let mut longer = data.to_vec();
    longer.extend_from_slice(&PADDING);
    if let Some(t) = quoted {
        check_tuple(&t);
        assert_eq!(packet::quoted(&longer), Some(t), "more quoted bytes");
    }

    let Ok(p) = parsed else {
        return;
    };
    check_parsed(&p, data);
    let ip = layout(data, false).expect("what parses has a layout");
    // A jumbogram (IPv6 payload length 0) is what is there: more bytes may complete the
    // packet an error quotes, and change nothing else.
    if ip.end_from_header || !matches!(p.l4, L4::Error { inner: None }) {
        assert_eq!(packet::parse(&longer), Ok(p), "bytes after the datagram");
    }
    assert!(ip.l4 <= ip.end && ip.end <= data.len());
    let datagram = &data[..ip.end];
    if ip.end_from_header {
        assert_eq!(packet::parse(datagram), Ok(p));
        for cut in [ip.end - 1, ip.end / 2, ip.l4] {
            if cut < ip.end {
                assert!(packet::parse(&data[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    let Some(t) = p.tuple() else {
        return;
    };
    // The packet a host quotes in an error it sends back (RFC 792: the IP header and 8
    // bytes; RFC 4443: as much as fits).
    for quote in [&datagram[..ip.end.min(ip.l4 + 8)], datagram] {
        let Some(error) = error_back(&p, quote) else {
            continue;
        };
        let e = packet::parse(&error).expect("an error quoting a packet");
        assert_eq!((e.src, e.dst), (t.dst, t.src), "the error goes back");
        assert_eq!(e.l4, L4::Error { inner: Some(t) }, "quoting {quote:?}");
        assert_eq!(packet::quoted(quote), Some(t));
    }
    // The same flow seen from its other end.
    let back = packet::parse(&reversed(&p, &ip, datagram)).expect("the reversed packet");
    assert_eq!(back.first_fragment, p.first_fragment);
    assert_eq!(
        back.tuple(),
        Some(Tuple {
            src: t.dst,
            dst: t.src,
            proto: t.proto,
            sport: t.dport,
            dport: t.sport,
        })
    );
});
