//! The compact binary encoding of netmaps and netmap changes (control protocol 2).
//!
//! Small control messages stay JSON ([`crate::control`]); the two that grow with the
//! network (a full netmap, O(members), and the changes pushed to every member) are binary,
//! so that a 10,000-member network's map is about 0.8 MB instead of 2.5 MB of JSON and
//! costs no parsing beyond copying keys and addresses.
//!
//! Both are built to be encoded **once** by the coordinator and sent unchanged to every
//! member: a full netmap lists *every* authorised member, the receiver included (it finds
//! itself by its key: its own address and name), and a changes message lists upserts of
//! every touched member, the receiver's own entry included (decoded as
//! [`PeerChange::SelfUpdate`]). [`decode_netmap`] and [`decode_changes`] take the
//! receiver's key and return exactly the [`Netmap`] and [`PeerChange`]s of the JSON form.
//!
//! # Layout
//!
//! A frame body (after the 4-byte length prefix of [`crate::control`]) whose first byte is
//! not `{` is binary. All integers are big endian.
//!
//! ```text
//! body     = kind:u8 format:u8 version:u64 ...
//!   kind 1 (netmap)  ... network count:u32 peer*count
//!   kind 2 (changes) ... prefix-len:u8 count:u32 change*count
//! change   = 1 peer                   upsert
//!          | 2 key:[32]               remove
//!          | 3 network                network settings
//! network  = name:str cidr:net mtu:u16 keepalive:u16
//! peer     = key:[32] address:ip name:str n:u16 net*n   allowed IPs
//!                                       m:u16 sock*m  endpoints
//! ip       = 4 [4] | 6 [16]
//! net      = ip prefix:u8
//! sock     = ip port:u16
//! str      = len:u16 utf8
//! ```
//! `format` is [`FORMAT`] for an IPv4-only (or IPv6-only) network and [`FORMAT_DUAL`] for a
//! dual-stack one, which adds, in that order:
//!
//! ```text
//! network  = ... cidr6:net            the IPv6 prefix beside the IPv4 cidr
//! peer     = ... address6:ip          the member's IPv6 overlay address
//!   kind 2 (changes) ... prefix-len:u8 prefix-len6:u8 count:u32 change*count
//! ```
//! so frames of networks without an IPv6 prefix are byte for byte what older nodes read. A
//! reader refuses formats it does not know with an error naming the format, never guesses.
//! `prefix-len` (`prefix-len6`) in a changes message is the network's (IPv6) prefix length,
//! so a member's own upsert becomes its addresses with those prefixes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use crate::netmap::{Netmap, NetworkInfo, PeerChange, PeerInfo};
use crate::Key;

/// The binary format of networks without an IPv6 prefix beside an IPv4 one.
pub const FORMAT: u8 = 1;
/// The binary format of dual-stack networks ([`NetworkInfo::cidr6`]); meshd reads it from
/// control protocol 6 ([`crate::control::DUAL_STACK_PROTOCOL`]).
pub const FORMAT_DUAL: u8 = 2;
/// `kind` of a full netmap.
pub const KIND_NETMAP: u8 = 1;
/// `kind` of a changes message.
pub const KIND_CHANGES: u8 = 2;

const CHANGE_UPSERT: u8 = 1;
const CHANGE_REMOVE: u8 = 2;
const CHANGE_NETWORK: u8 = 3;
/// kind, format, version.
const HEADER: usize = 10;

/// Why a binary body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body ended before a field it announced.
    #[error("binary message truncated at byte {0}")]
    Truncated(usize),
    /// Bytes follow the last announced entry.
    #[error("binary message has {0} trailing bytes")]
    Trailing(usize),
    /// An unknown message kind.
    #[error("unknown binary message kind {0}")]
    Kind(u8),
    /// A format this build does not read.
    #[error("binary message format {got}, this build reads formats {FORMAT} and {FORMAT_DUAL}: upgrade meshd")]
    Format {
        /// The format the message is in.
        got: u8,
    },
    /// A malformed field.
    #[error("malformed binary message: {0}")]
    Malformed(&'static str),
    /// A full netmap that does not list the receiver.
    #[error("the netmap does not list this member")]
    NotListed,
}

/// What the fixed header of a binary body says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// [`KIND_NETMAP`] or [`KIND_CHANGES`].
    pub kind: u8,
    /// The network version the message brings the receiver to.
    pub version: u64,
    /// Entries: members listed (netmap) or changes.
    pub count: u32,
}

/// Reads the header without decoding entries (cheap: for counting, e.g. a load generator).
pub fn peek(body: &[u8]) -> Result<Header, WireError> {
    let mut r = Reader::new(body);
    let (kind, version) = r.header()?;
    match kind {
        KIND_NETMAP => {
            r.network()?;
        }
        KIND_CHANGES => {
            r.prefix_lens()?;
        }
        other => return Err(WireError::Kind(other)),
    }
    Ok(Header {
        kind,
        version,
        count: r.u32()?,
    })
}

/// What an entry of a binary body does, for [`for_each_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOp {
    /// A member listed in a full netmap.
    Member,
    /// A member added or changed.
    Upsert,
    /// A member gone.
    Remove,
}

/// Walks the keys of a binary body without building peers (no allocation): `f` gets each
/// member's key with what happens to it (network settings changes are skipped). For tools
/// that follow thousands of netmaps (the load generator) and check them by key and count;
/// [`decode_netmap`]/[`decode_changes`] are what nodes apply.
pub fn for_each_key(body: &[u8], mut f: impl FnMut(KeyOp, &Key)) -> Result<Header, WireError> {
    let header = peek(body)?;
    let mut r = Reader::new(body);
    r.header()?;
    match header.kind {
        KIND_NETMAP => {
            r.network()?;
            r.u32()?;
            for _ in 0..header.count {
                f(KeyOp::Member, &r.skip_peer()?);
            }
        }
        _ => {
            r.prefix_lens()?;
            r.u32()?;
            for _ in 0..header.count {
                match r.u8()? {
                    CHANGE_UPSERT => f(KeyOp::Upsert, &r.skip_peer()?),
                    CHANGE_REMOVE => f(KeyOp::Remove, &r.key()?),
                    CHANGE_NETWORK => {
                        r.network()?;
                    }
                    _ => return Err(WireError::Malformed("change tag")),
                }
            }
        }
    }
    r.end()?;
    Ok(header)
}

/// Appends the encoding of one peer entry to `out` (what the coordinator caches per member).
/// A peer with an IPv6 address ([`PeerInfo::address6`]) is encoded for [`FORMAT_DUAL`]:
/// in a dual-stack network every member has one, in other networks none.
pub fn encode_peer(peer: &PeerInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(&peer.public_key.0);
    put_ip(out, peer.address);
    put_str(out, &peer.name);
    put_len(out, peer.allowed_ips.len());
    for net in peer.allowed_ips.iter().take(u16::MAX as usize) {
        put_net(out, net);
    }
    put_len(out, peer.endpoints.len());
    for ep in peer.endpoints.iter().take(u16::MAX as usize) {
        put_ip(out, ep.ip());
        out.extend_from_slice(&ep.port().to_be_bytes());
    }
    if let Some(a) = peer.address6 {
        put_ip(out, IpAddr::V6(a));
    }
}

/// The format of `network`'s frames.
fn format_of(network: &NetworkInfo) -> u8 {
    if network.cidr6.is_some() {
        FORMAT_DUAL
    } else {
        FORMAT
    }
}

/// Builds one frame (length prefix included) of either kind, entries appended already
/// encoded. The count and the length prefix are filled in by [`FrameBuilder::finish`].
#[derive(Debug)]
pub struct FrameBuilder {
    buf: Vec<u8>,
    count_at: usize,
    count: u32,
}

impl FrameBuilder {
    fn start(kind: u8, format: u8, version: u64, capacity: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(capacity + 4 + HEADER + 64);
        buf.extend_from_slice(&[0; 4]);
        buf.push(kind);
        buf.push(format);
        buf.extend_from_slice(&version.to_be_bytes());
        buf
    }

    /// The start of a full-netmap frame (length prefix, header, network, count) whose
    /// `count` entries, `entries_len` bytes in all, follow as they are: so one encoding of
    /// the entries can be sent behind a header made for each receiver.
    pub fn netmap_head(
        version: u64,
        network: &NetworkInfo,
        count: u32,
        entries_len: usize,
    ) -> Vec<u8> {
        let mut buf = FrameBuilder::start(KIND_NETMAP, format_of(network), version, 0);
        put_network(&mut buf, network);
        buf.extend_from_slice(&count.to_be_bytes());
        let len = u32::try_from(buf.len() - 4 + entries_len).unwrap_or(u32::MAX);
        buf[..4].copy_from_slice(&len.to_be_bytes());
        buf
    }

    /// A full netmap at `version`; `capacity`: the bytes of entries expected.
    pub fn netmap(version: u64, network: &NetworkInfo, capacity: usize) -> FrameBuilder {
        let mut buf = FrameBuilder::start(KIND_NETMAP, format_of(network), version, capacity);
        put_network(&mut buf, network);
        let count_at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        FrameBuilder {
            buf,
            count_at,
            count: 0,
        }
    }

    /// Changes reaching `version` in `network` (its prefix lengths give members' own
    /// upserts their prefixes).
    pub fn changes(version: u64, network: &NetworkInfo) -> FrameBuilder {
        FrameBuilder::changes_with(
            version,
            network.cidr.prefix_len(),
            network.cidr6.map(|c| c.prefix_len()),
        )
    }

    /// Changes reaching `version` with the prefix lengths given as they go on the wire:
    /// `prefix_len6` makes the frame [`FORMAT_DUAL`] (its upserts must then carry IPv6
    /// addresses, and its network changes IPv6 prefixes).
    pub fn changes_with(version: u64, prefix_len: u8, prefix_len6: Option<u8>) -> FrameBuilder {
        let format = if prefix_len6.is_some() {
            FORMAT_DUAL
        } else {
            FORMAT
        };
        let mut buf = FrameBuilder::start(KIND_CHANGES, format, version, 128);
        buf.push(prefix_len);
        if let Some(len6) = prefix_len6 {
            buf.push(len6);
        }
        let count_at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        FrameBuilder {
            buf,
            count_at,
            count: 0,
        }
    }

    /// A netmap entry: one member, encoded by [`encode_peer`].
    pub fn member(&mut self, encoded: &[u8]) {
        self.buf.extend_from_slice(encoded);
        self.count += 1;
    }

    /// A change: this member as it is now, encoded by [`encode_peer`].
    pub fn upsert(&mut self, encoded: &[u8]) {
        self.buf.push(CHANGE_UPSERT);
        self.member(encoded);
    }

    /// A change: this member is gone (or no longer authorised).
    pub fn remove(&mut self, key: &Key) {
        self.buf.push(CHANGE_REMOVE);
        self.buf.extend_from_slice(&key.0);
        self.count += 1;
    }

    /// A change: new network settings (of the same stack as the frame's network: a
    /// network does not change between IPv4-only and dual stack while it exists).
    pub fn network(&mut self, network: &NetworkInfo) {
        self.buf.push(CHANGE_NETWORK);
        put_network(&mut self.buf, network);
        self.count += 1;
    }

    /// Entries so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The frame: length prefix and body.
    pub fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len() - 4).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_be_bytes());
        self.buf
    }
}

/// Decodes a full netmap body as member `me` sees it.
pub fn decode_netmap(body: &[u8], me: &Key) -> Result<Netmap, WireError> {
    let mut r = Reader::new(body);
    let (kind, version) = r.header()?;
    if kind != KIND_NETMAP {
        return Err(WireError::Kind(kind));
    }
    let network = r.network()?;
    let count = r.u32()?;
    let mut peers = BTreeMap::new();
    let mut own = None;
    for _ in 0..count {
        let peer = r.peer()?;
        if peer.public_key == *me {
            own = Some(peer);
        } else {
            peers.insert(peer.public_key, peer);
        }
    }
    r.end()?;
    let own = own.ok_or(WireError::NotListed)?;
    let address6 = own
        .address6
        .zip(network.cidr6)
        .map(|(a, c)| IpNet::new(IpAddr::V6(a), c.prefix_len()))
        .transpose()
        .map_err(|_| WireError::Malformed("address prefix"))?;
    Ok(Netmap {
        version,
        address: IpNet::new(own.address, network.cidr.prefix_len())
            .map_err(|_| WireError::Malformed("address prefix"))?,
        address6,
        network,
        name: own.name,
        peers,
    })
}

/// Decodes a changes body as member `me` sees it: the version and the changes to apply.
pub fn decode_changes(body: &[u8], me: &Key) -> Result<(u64, Vec<PeerChange>), WireError> {
    let mut r = Reader::new(body);
    let (kind, version) = r.header()?;
    if kind != KIND_CHANGES {
        return Err(WireError::Kind(kind));
    }
    let (prefix_len, prefix_len6) = r.prefix_lens()?;
    let count = r.u32()?;
    let mut changes = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        match r.u8()? {
            CHANGE_UPSERT => {
                let peer = r.peer()?;
                if peer.public_key == *me {
                    let address6 = peer
                        .address6
                        .zip(prefix_len6)
                        .map(|(a, len)| IpNet::new(IpAddr::V6(a), len))
                        .transpose()
                        .map_err(|_| WireError::Malformed("address prefix"))?;
                    changes.push(PeerChange::SelfUpdate {
                        address: IpNet::new(peer.address, prefix_len)
                            .map_err(|_| WireError::Malformed("address prefix"))?,
                        address6,
                        name: peer.name,
                    });
                } else {
                    changes.push(PeerChange::Upsert { peer });
                }
            }
            CHANGE_REMOVE => {
                let key = r.key()?;
                // The receiver is not among its own peers; whether it is still a member
                // is said by `pending`/`denied`, not by changes.
                if key != *me {
                    changes.push(PeerChange::Remove { public_key: key });
                }
            }
            CHANGE_NETWORK => changes.push(PeerChange::Network {
                network: r.network()?,
            }),
            _ => return Err(WireError::Malformed("change tag")),
        }
    }
    r.end()?;
    Ok((version, changes))
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Longer strings are cut at a character boundary (the coordinator's limits are far
    // below: names are at most 63 bytes).
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_len(out, end);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn put_net(out: &mut Vec<u8>, net: &IpNet) {
    put_ip(out, net.addr());
    out.push(net.prefix_len());
}

fn put_network(out: &mut Vec<u8>, n: &NetworkInfo) {
    put_str(out, &n.name);
    put_net(out, &n.cidr);
    out.extend_from_slice(&n.mtu.to_be_bytes());
    out.extend_from_slice(&n.keepalive.to_be_bytes());
    if let Some(cidr6) = &n.cidr6 {
        put_net(out, cidr6);
    }
}

/// A bounds-checked cursor; every read fails cleanly at the end of the input.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    /// The message is in [`FORMAT_DUAL`] (set by [`Reader::header`]).
    dual: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            at: 0,
            dual: false,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(WireError::Truncated(self.at))?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn key(&mut self) -> Result<Key, WireError> {
        Ok(Key(self.array()?))
    }

    fn header(&mut self) -> Result<(u8, u64), WireError> {
        let kind = self.u8()?;
        let format = self.u8()?;
        if format != FORMAT && format != FORMAT_DUAL {
            return Err(WireError::Format { got: format });
        }
        self.dual = format == FORMAT_DUAL;
        Ok((kind, self.u64()?))
    }

    /// A changes message's prefix lengths: IPv4 (or the network's one), and IPv6 in
    /// [`FORMAT_DUAL`].
    fn prefix_lens(&mut self) -> Result<(u8, Option<u8>), WireError> {
        let len = self.u8()?;
        let len6 = if self.dual { Some(self.u8()?) } else { None };
        Ok((len, len6))
    }

    fn string(&mut self) -> Result<String, WireError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| WireError::Malformed("string is not UTF-8"))
    }

    fn ip(&mut self) -> Result<IpAddr, WireError> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            _ => Err(WireError::Malformed("address family")),
        }
    }

    fn net(&mut self) -> Result<IpNet, WireError> {
        let ip = self.ip()?;
        let prefix = self.u8()?;
        IpNet::new(ip, prefix).map_err(|_| WireError::Malformed("prefix length"))
    }

    fn network(&mut self) -> Result<NetworkInfo, WireError> {
        Ok(NetworkInfo {
            name: self.string()?,
            cidr: self.net()?,
            mtu: self.u16()?,
            keepalive: self.u16()?,
            cidr6: match self.dual {
                true => match self.net()? {
                    c @ IpNet::V6(_) => Some(c),
                    IpNet::V4(_) => return Err(WireError::Malformed("cidr6 is not IPv6")),
                },
                false => None,
            },
        })
    }

    fn peer(&mut self) -> Result<PeerInfo, WireError> {
        let public_key = self.key()?;
        let address = self.ip()?;
        let name = self.string()?;
        let n = self.u16()?;
        let mut allowed_ips = Vec::with_capacity(usize::from(n).min(64));
        for _ in 0..n {
            allowed_ips.push(self.net()?);
        }
        let m = self.u16()?;
        let mut endpoints = Vec::with_capacity(usize::from(m).min(16));
        for _ in 0..m {
            let ip = self.ip()?;
            endpoints.push(SocketAddr::new(ip, self.u16()?));
        }
        let address6 = if self.dual {
            match self.ip()? {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => return Err(WireError::Malformed("address6 is not IPv6")),
            }
        } else {
            None
        };
        Ok(PeerInfo {
            public_key,
            name,
            address,
            address6,
            allowed_ips,
            endpoints,
        })
    }

    /// A peer's key, the rest of the entry checked for length only.
    fn skip_peer(&mut self) -> Result<Key, WireError> {
        let key = self.key()?;
        self.skip_ip()?;
        let len = self.u16()? as usize;
        self.take(len)?;
        for _ in 0..self.u16()? {
            self.skip_ip()?;
            self.u8()?;
        }
        for _ in 0..self.u16()? {
            self.skip_ip()?;
            self.u16()?;
        }
        if self.dual {
            self.skip_ip()?;
        }
        Ok(key)
    }

    fn skip_ip(&mut self) -> Result<(), WireError> {
        match self.u8()? {
            4 => self.take(4).map(drop),
            6 => self.take(16).map(drop),
            _ => Err(WireError::Malformed("address family")),
        }
    }

    fn end(&self) -> Result<(), WireError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key([b; 32])
    }

    fn peer(b: u8, addr: &str) -> PeerInfo {
        let address: IpAddr = addr.parse().unwrap();
        PeerInfo {
            address6: None,
            public_key: key(b),
            name: format!("node-{b}-ü"),
            address,
            allowed_ips: vec![IpNet::from(address), "10.244.3.0/24".parse().unwrap()],
            endpoints: vec![
                format!("198.51.100.{b}:51820").parse().unwrap(),
                "[2001:db8::1]:4000".parse().unwrap(),
            ],
        }
    }

    fn network() -> NetworkInfo {
        NetworkInfo {
            cidr6: None,
            name: "lab".into(),
            cidr: "10.9.8.0/24".parse().unwrap(),
            mtu: 1280,
            keepalive: 25,
        }
    }

    fn body(frame: &[u8]) -> &[u8] {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        &frame[4..]
    }

    fn netmap_frame(version: u64, peers: &[PeerInfo]) -> Vec<u8> {
        let mut b = FrameBuilder::netmap(version, &network(), 0);
        for p in peers {
            let mut e = Vec::new();
            encode_peer(p, &mut e);
            b.member(&e);
        }
        b.finish()
    }

    #[test]
    fn netmap_round_trip_as_each_member() {
        let peers = [peer(1, "10.9.8.1"), peer(2, "10.9.8.2"), peer(3, "fd00::3")];
        let frame = netmap_frame(7, &peers);
        let h = peek(body(&frame)).unwrap();
        assert_eq!(
            h,
            Header {
                kind: KIND_NETMAP,
                version: 7,
                count: 3
            }
        );
        for me in &peers {
            let m = decode_netmap(body(&frame), &me.public_key).unwrap();
            assert_eq!(m.version, 7);
            assert_eq!(m.network, network());
            assert_eq!(m.name, me.name);
            assert_eq!(m.address.addr(), me.address);
            assert_eq!(m.address.prefix_len(), 24);
            assert_eq!(m.peers.len(), 2);
            for p in peers.iter().filter(|p| p.public_key != me.public_key) {
                assert_eq!(m.peers.get(&p.public_key), Some(p));
            }
        }
        assert_eq!(
            decode_netmap(body(&frame), &key(9)),
            Err(WireError::NotListed)
        );
    }

    #[test]
    fn dual_stack_round_trips_and_leaves_ipv4_frames_as_they_were() {
        let dual = NetworkInfo {
            cidr6: Some("fd5e:1f2a:9c00::/64".parse().unwrap()),
            ..network()
        };
        let with6 = |b: u8| {
            let mut p = peer(b, &format!("10.9.8.{b}"));
            let a6: Ipv6Addr = format!("fd5e:1f2a:9c00::{b}").parse().unwrap();
            p.address6 = Some(a6);
            p.allowed_ips.insert(1, IpNet::from(IpAddr::V6(a6)));
            p
        };
        let peers = [with6(1), with6(2)];
        let mut b = FrameBuilder::netmap(3, &dual, 0);
        for p in &peers {
            let mut e = Vec::new();
            encode_peer(p, &mut e);
            b.member(&e);
        }
        let frame = b.finish();
        assert_eq!(body(&frame)[1], FORMAT_DUAL);
        let m = decode_netmap(body(&frame), &key(1)).unwrap();
        assert_eq!(m.network, dual);
        assert_eq!(m.address6, Some("fd5e:1f2a:9c00::1/64".parse().unwrap()));
        assert_eq!(m.peers.get(&key(2)), Some(&peers[1]));
        let mut keys = Vec::new();
        for_each_key(body(&frame), |_, k| keys.push(*k)).unwrap();
        assert_eq!(keys, vec![key(1), key(2)]);

        let mut c = FrameBuilder::changes(4, &dual);
        for p in &peers {
            let mut e = Vec::new();
            encode_peer(p, &mut e);
            c.upsert(&e);
        }
        c.network(&dual);
        let frame = c.finish();
        let (_, changes) = decode_changes(body(&frame), &key(1)).unwrap();
        assert_eq!(
            changes,
            vec![
                PeerChange::SelfUpdate {
                    address: "10.9.8.1/24".parse().unwrap(),
                    address6: Some("fd5e:1f2a:9c00::1/64".parse().unwrap()),
                    name: peers[0].name.clone(),
                },
                PeerChange::Upsert {
                    peer: peers[1].clone()
                },
                PeerChange::Network { network: dual },
            ]
        );
        let mut n = 0;
        for_each_key(body(&frame), |_, _| n += 1).unwrap();
        assert_eq!(n, 2);

        // Without an IPv6 prefix: format 1, which nodes before dual stack read.
        let v4 = netmap_frame(3, &[peer(1, "10.9.8.1")]);
        assert_eq!(body(&v4)[1], FORMAT);
        // A dual frame cut anywhere is an error, never a panic.
        for cut in 0..body(&frame).len() {
            assert!(decode_changes(&body(&frame)[..cut], &key(1)).is_err());
        }
        // Format 3 is refused by name.
        let mut other = body(&frame).to_vec();
        other[1] = 3;
        assert_eq!(
            decode_changes(&other, &key(1)),
            Err(WireError::Format { got: 3 })
        );
    }

    #[test]
    fn changes_round_trip_with_self_update() {
        let mut b = FrameBuilder::changes(9, &network());
        let mut e = Vec::new();
        encode_peer(&peer(2, "10.9.8.2"), &mut e);
        b.upsert(&e);
        e.clear();
        encode_peer(&peer(1, "10.9.8.77"), &mut e);
        b.upsert(&e);
        b.remove(&key(3));
        b.remove(&key(1));
        b.network(&network());
        assert_eq!(b.count(), 5);
        let frame = b.finish();
        assert_eq!(peek(body(&frame)).unwrap().count, 5);
        let (version, changes) = decode_changes(body(&frame), &key(1)).unwrap();
        assert_eq!(version, 9);
        assert_eq!(
            changes,
            vec![
                PeerChange::Upsert {
                    peer: peer(2, "10.9.8.2")
                },
                PeerChange::SelfUpdate {
                    address6: None,
                    address: "10.9.8.77/24".parse().unwrap(),
                    name: peer(1, "10.9.8.1").name,
                },
                PeerChange::Remove { public_key: key(3) },
                PeerChange::Network { network: network() },
            ]
        );
    }

    #[test]
    fn a_shared_body_behind_its_own_head_is_the_same_frame() {
        let peers = [peer(1, "10.9.8.1"), peer(2, "10.9.8.2")];
        let whole = netmap_frame(7, &peers);
        let mut entries = Vec::new();
        for p in &peers {
            encode_peer(p, &mut entries);
        }
        let mut split = FrameBuilder::netmap_head(7, &network(), 2, entries.len());
        split.extend_from_slice(&entries);
        assert_eq!(split, whole);
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let frame = netmap_frame(3, &[peer(1, "10.9.8.1"), peer(2, "10.9.8.2")]);
        let good = body(&frame);
        // Every truncation fails cleanly.
        for cut in 0..good.len() {
            assert!(decode_netmap(&good[..cut], &key(1)).is_err(), "cut {cut}");
        }
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert_eq!(
            decode_netmap(&trailing, &key(1)),
            Err(WireError::Trailing(1))
        );
        let mut format = good.to_vec();
        format[1] = 9;
        let err = decode_netmap(&format, &key(1)).unwrap_err();
        assert_eq!(err, WireError::Format { got: 9 });
        assert!(err.to_string().contains("upgrade meshd"));
        assert!(matches!(
            decode_changes(good, &key(1)),
            Err(WireError::Kind(KIND_NETMAP))
        ));
        // Flipping any single byte never panics (it may still decode to something).
        for i in 0..good.len() {
            let mut flipped = good.to_vec();
            flipped[i] ^= 0xff;
            let _ = decode_netmap(&flipped, &key(1));
            let _ = decode_changes(&flipped, &key(1));
            let _ = peek(&flipped);
        }
        // A huge announced count with no entries is truncation, not an allocation.
        let mut huge = FrameBuilder::changes(1, &network()).finish();
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_changes(&huge[4..], &key(1)),
            Err(WireError::Truncated(_))
        ));
    }

    #[test]
    fn key_walk_agrees_with_the_decoders() {
        let peers = [peer(1, "10.9.8.1"), peer(2, "fd00::2")];
        let frame = netmap_frame(4, &peers);
        let mut seen = Vec::new();
        let h = for_each_key(body(&frame), |op, k| seen.push((op, *k))).unwrap();
        assert_eq!(h.count, 2);
        assert_eq!(seen, vec![(KeyOp::Member, key(1)), (KeyOp::Member, key(2))]);
        let mut b = FrameBuilder::changes(5, &network());
        let mut e = Vec::new();
        encode_peer(&peers[1], &mut e);
        b.upsert(&e);
        b.network(&network());
        b.remove(&key(1));
        let frame = b.finish();
        seen.clear();
        for_each_key(body(&frame), |op, k| seen.push((op, *k))).unwrap();
        assert_eq!(seen, vec![(KeyOp::Upsert, key(2)), (KeyOp::Remove, key(1))]);
        for cut in 0..frame.len() - 4 {
            assert!(for_each_key(&body(&frame)[..cut], |_, _| {}).is_err());
        }
    }

    #[test]
    fn entries_are_compact() {
        let p = PeerInfo {
            address6: None,
            public_key: key(1),
            name: "node-00001".into(),
            address: "10.9.8.1".parse().unwrap(),
            allowed_ips: vec!["10.9.8.1/32".parse().unwrap()],
            endpoints: vec!["203.0.113.1:51820".parse().unwrap()],
        };
        let mut e = Vec::new();
        encode_peer(&p, &mut e);
        // key 32, address 5, name 2+10, one net 2+6, one endpoint 2+7.
        assert_eq!(e.len(), 66);
        let json = serde_json::to_vec(&p).unwrap();
        assert!(e.len() * 2 < json.len(), "{} vs {}", e.len(), json.len());
    }
}
