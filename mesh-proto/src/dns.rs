//! Names for members: every member of a network answers to `<label>.<network>.<domain>`.
//!
//! - [`label`] turns a member's name into a DNS label (lowercase `[a-z0-9-]`, other
//!   characters to `-`, runs of `-` collapsed, no `-` at either end, at most 63 bytes, never
//!   empty).
//! - [`labels`] resolves collisions, the same way on every node and in the admin API: the
//!   members that share a label are ordered by (overlay address, key); the first keeps the
//!   plain label, the others get `-` and the first 6 hex digits of their key appended (8,
//!   10, … 16 while that is still taken). Plain labels are claimed before suffixed ones, so
//!   a member literally named like another's suffixed label keeps its name.
//! - [`Zone`] is a network's zone built from a netmap and the network's domain, and
//!   [`Zone::answer`] answers one DNS query, bytes in, bytes out (hickory-proto does the
//!   parsing and encoding): A (and AAAA) for members, PTR for their addresses, NXDOMAIN
//!   with the SOA for names in the zone that are not members (or addresses in the overlay
//!   prefix that no member holds), REFUSED for everything else (no recursion: RA is never
//!   set). Names are compared case-insensitively.
//!
//! Pure: no sockets, no clock; the server loop lives in meshd (`meshd/src/dns/`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;

use crate::netmap::Netmap;
use crate::Key;

/// The domain a network's names live under unless its admin sets another.
pub const DEFAULT_DOMAIN: &str = "mesh.internal";
/// Time to live of the answers, in seconds: short, so caches (systemd-resolved) follow
/// renames quickly.
pub const TTL: u32 = 5;
/// The SOA's minimum: how long resolvers cache a "no such name" (RFC 2308), in seconds.
pub const NEGATIVE_TTL: u32 = 1;
/// The longest a DNS label may be (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;
/// The longest a domain may be as text here (RFC 1035's 255 octets on the wire, minus room
/// for a member label and a network name).
pub const MAX_DOMAIN: usize = 120;
/// What a name with no usable character becomes.
const EMPTY_LABEL: &str = "member";
/// UDP answers without EDNS fit in this many bytes (RFC 1035 §4.2.1).
const PLAIN_UDP: usize = 512;
/// The largest UDP answer offered to EDNS clients (the DNS flag day 2020 figure).
const EDNS_UDP: u16 = 1232;

/// `name` as a DNS label: lowercase ASCII letters and digits, `-` for every other
/// character (runs collapsed, none at the ends), at most [`MAX_LABEL`] bytes, never empty.
pub fn label(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(MAX_LABEL));
    let mut dash = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            let sep = dash && !out.is_empty();
            if out.len() + usize::from(sep) + 1 > MAX_LABEL {
                break;
            }
            if sep {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            dash = true;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str(EMPTY_LABEL);
    }
    out
}

/// One member, as collision resolution sees it.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// Its public key.
    pub key: &'a Key,
    /// Its name as the coordinator knows it.
    pub name: &'a str,
    /// Its overlay address.
    pub address: IpAddr,
    /// Its IPv6 overlay address in a dual-stack network (answers AAAA and its PTR).
    pub address6: Option<Ipv6Addr>,
}

/// The label of every member, in the order given, unique among them (see the module doc
/// for the rule). Depends only on the set of members, not on their order.
pub fn labels(members: &[Member<'_>]) -> Vec<String> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&members[a], &members[b]);
        (a.address, a.key.0).cmp(&(b.address, b.key.0))
    });
    let bases: Vec<String> = members.iter().map(|m| label(m.name)).collect();
    let mut out: Vec<Option<String>> = vec![None; members.len()];
    let mut taken: HashSet<String> = HashSet::with_capacity(members.len());
    for &i in &order {
        if taken.insert(bases[i].clone()) {
            out[i] = Some(bases[i].clone());
        }
    }
    for &i in &order {
        if out[i].is_some() {
            continue;
        }
        let hex = key_hex(members[i].key);
        let mut chosen = None;
        for digits in (6..=16).step_by(2) {
            let candidate = suffixed(&bases[i], &hex[..digits]);
            if !taken.contains(&candidate) {
                chosen = Some(candidate);
                break;
            }
        }
        // Sixteen hex digits of a key still taken: only members made to collide get here.
        let mut n = 2u64;
        let chosen = chosen.unwrap_or_else(|| loop {
            let candidate = suffixed(&bases[i], &format!("{}-{n}", &hex[..16]));
            if !taken.contains(&candidate) {
                break candidate;
            }
            n += 1;
        });
        taken.insert(chosen.clone());
        out[i] = Some(chosen);
    }
    out.into_iter()
        .map(|l| l.unwrap_or_else(|| EMPTY_LABEL.to_owned()))
        .collect()
}

/// `base-suffix`, `base` shortened so the whole stays within [`MAX_LABEL`].
fn suffixed(base: &str, suffix: &str) -> String {
    let room = MAX_LABEL - suffix.len() - 1;
    let base = base[..base.len().min(room)].trim_end_matches('-');
    format!("{base}-{suffix}")
}

fn key_hex(key: &Key) -> String {
    let mut s = String::with_capacity(64);
    for b in key.0 {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Why a domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Empty, or only dots.
    #[error("a domain must not be empty")]
    Empty,
    /// Longer than [`MAX_DOMAIN`].
    #[error("a domain has at most {MAX_DOMAIN} characters")]
    TooLong,
    /// A label that is not `[a-z0-9]([a-z0-9-]*[a-z0-9])?` of at most 63 characters.
    #[error("{0:?} is not a DNS label (letters, digits and inner '-', at most 63)")]
    Label(String),
}

/// Checks a network's DNS domain (e.g. `mesh.internal`) and returns its canonical form,
/// lowercase. Labels are letters, digits and inner `-`; no final dot.
pub fn check_domain(domain: &str) -> Result<String, DomainError> {
    let d = domain;
    if d.is_empty() {
        return Err(DomainError::Empty);
    }
    if d.len() > MAX_DOMAIN {
        return Err(DomainError::TooLong);
    }
    for l in d.split('.') {
        let ok = !l.is_empty()
            && l.len() <= MAX_LABEL
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-');
        if !ok {
            return Err(DomainError::Label(l.to_owned()));
        }
    }
    Ok(d.to_ascii_lowercase())
}

/// The zone a network's names live in: `<network label>.<domain>`.
pub fn zone_name(network: &str, domain: &str) -> String {
    let domain = check_domain(domain).unwrap_or_else(|_| DEFAULT_DOMAIN.to_owned());
    format!("{}.{domain}", label(network))
}

/// Every member's fully qualified name (without the final dot), by key, for the members
/// given (collisions resolved among them).
pub fn fqdns(network: &str, domain: &str, members: &[Member<'_>]) -> BTreeMap<Key, String> {
    let zone = zone_name(network, domain);
    members
        .iter()
        .zip(labels(members))
        .map(|(m, l)| (*m.key, format!("{l}.{zone}")))
        .collect()
}

/// A network's names, ready to answer queries.
#[derive(Debug, Clone)]
pub struct Zone {
    /// `<network>.<domain>`, lowercase, no final dot.
    origin: String,
    /// The zone's SOA record (for answers and negative answers).
    soa: Record,
    /// Member label → its addresses.
    hosts: HashMap<String, Vec<IpAddr>>,
    /// Member key → its fully qualified name (no final dot).
    by_key: BTreeMap<Key, String>,
    /// Reverse name (`4.3.2.1.in-addr.arpa`, lowercase, no final dot) → the member's name.
    reverse: HashMap<String, Name>,
    /// The reverse zone's SOA (for negative answers to addresses in `cidr`).
    reverse_soa: Record,
    /// The overlay prefix: reverse names inside it are ours to deny.
    cidr: IpNet,
}

impl Zone {
    /// The zone of `netmap`'s network under `domain` (an invalid domain falls back to
    /// [`DEFAULT_DOMAIN`]); the members are the netmap's own node (key `own_key`) and its
    /// peers.
    pub fn new(netmap: &Netmap, own_key: &Key, domain: &str) -> Zone {
        let origin = zone_name(&netmap.network.name, domain);
        let me = Member {
            key: own_key,
            name: &netmap.name,
            address: netmap.address.addr(),
            address6: netmap.address6.and_then(|a| match a.addr() {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            }),
        };
        let mut members = Vec::with_capacity(netmap.peers.len() + 1);
        members.push(me);
        members.extend(netmap.peers.values().map(|p| Member {
            key: &p.public_key,
            name: &p.name,
            address: p.address,
            address6: p.address6,
        }));
        Self::build(origin, netmap.network.cidr, netmap.version, &members)
    }

    /// The zone `origin` (e.g. `lab.mesh.internal`) holding `members`; `serial` goes into
    /// the SOA. `origin` must be a valid name (e.g. from [`zone_name`]).
    pub fn build(origin: String, cidr: IpNet, serial: u64, members: &[Member<'_>]) -> Zone {
        let origin = origin.to_ascii_lowercase();
        let origin_name = fqdn(&origin);
        let soa = soa_record(origin_name.clone(), serial);
        let reverse_apex = reverse_apex(cidr);
        let reverse_soa = Record::from_rdata(
            fqdn(&reverse_apex),
            NEGATIVE_TTL,
            RData::SOA(SOA::new(
                origin_name.clone(),
                fqdn(&format!("hostmaster.{origin}")),
                serial as u32,
                3600,
                600,
                86400,
                NEGATIVE_TTL,
            )),
        );
        let mut hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
        let mut reverse = HashMap::new();
        let mut by_key = BTreeMap::new();
        for (m, l) in members.iter().zip(labels(members)) {
            let name = format!("{l}.{origin}");
            reverse.insert(reverse_name(m.address), fqdn(&name));
            let addresses = hosts.entry(l).or_default();
            addresses.push(m.address);
            if let Some(a6) = m.address6 {
                reverse.insert(reverse_name(IpAddr::V6(a6)), fqdn(&name));
                addresses.push(IpAddr::V6(a6));
            }
            by_key.insert(*m.key, name);
        }
        Zone {
            origin,
            soa,
            hosts,
            by_key,
            reverse,
            reverse_soa,
            cidr,
        }
    }

    /// The zone's name, e.g. `lab.mesh.internal`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A member's fully qualified name (no final dot).
    pub fn fqdn_of(&self, key: &Key) -> Option<&str> {
        self.by_key.get(key).map(String::as_str)
    }

    /// Every member name and its addresses, sorted by name: what an /etc/hosts block lists.
    pub fn hosts(&self) -> Vec<(String, Vec<IpAddr>)> {
        let mut out: Vec<(String, Vec<IpAddr>)> = self
            .hosts
            .iter()
            .map(|(l, a)| (format!("{l}.{}", self.origin), a.clone()))
            .collect();
        out.sort();
        out
    }

    /// The answer to the DNS message `query`, or `None` when it deserves none (too short
    /// to carry an id, or itself a response). `udp`: the answer goes in one datagram, so it
    /// is truncated (TC) beyond 512 bytes, or the client's EDNS size (at most 1232).
    pub fn answer(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        // The QR bit: never answer an answer (no loops between two servers).
        if query[2] & 0x80 != 0 {
            return None;
        }
        let id = u16::from_be_bytes([query[0], query[1]]);
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => {
                let op = OpCode::from_u8((query[2] >> 3) & 0x0f);
                return Message::error_msg(id, op, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
        };
        let mut response = self.respond(&request);
        let limit = match (udp, request.extensions()) {
            (false, _) => usize::from(u16::MAX),
            (true, Some(edns)) => usize::from(edns.max_payload().clamp(512, EDNS_UDP)),
            (true, None) => PLAIN_UDP,
        };
        let bytes = response.to_vec().ok()?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
        response.take_answers();
        response.take_name_servers();
        response.take_additionals();
        response.set_truncated(true);
        response.to_vec().ok()
    }

    /// The response to a parsed request.
    fn respond(&self, request: &Message) -> Message {
        let mut r = Message::new();
        r.set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(request.op_code())
            .set_recursion_desired(request.recursion_desired())
            .set_recursion_available(false);
        if request.extensions().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_UDP).set_version(0);
            r.set_edns(edns);
        }
        if request.op_code() != OpCode::Query {
            r.set_response_code(ResponseCode::NotImp);
            return r;
        }
        let [query] = request.queries() else {
            r.set_response_code(ResponseCode::FormErr);
            return r;
        };
        r.add_query(query.clone());
        if query.query_class() != DNSClass::IN {
            r.set_response_code(ResponseCode::Refused);
            return r;
        }
        let qtype = query.query_type();
        let qname = query.name();
        let text = lower_text(qname);
        if let Some(prefix) = under(&text, &self.origin) {
            r.set_authoritative(true);
            match prefix {
                None => {
                    // The apex: it has an SOA and nothing else.
                    if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                        r.add_answer(self.soa.clone());
                    } else {
                        r.add_name_server(self.soa.clone());
                    }
                }
                Some(l) => match self.hosts.get(l) {
                    Some(addresses) => {
                        let mut any = false;
                        for a in addresses {
                            let rdata = match (a, qtype) {
                                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                                    RData::A(A(*v4))
                                }
                                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                                    RData::AAAA(AAAA(*v6))
                                }
                                _ => continue,
                            };
                            any = true;
                            r.add_answer(Record::from_rdata(qname.clone(), TTL, rdata));
                        }
                        if !any {
                            r.add_name_server(self.soa.clone());
                        }
                    }
                    None => {
                        r.set_response_code(ResponseCode::NXDomain);
                        r.add_name_server(self.soa.clone());
                    }
                },
            }
            return r;
        }
        if text.ends_with(".in-addr.arpa") || text.ends_with(".ip6.arpa") {
            if let Some(target) = self.reverse.get(&text) {
                r.set_authoritative(true);
                if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                    r.add_answer(Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::PTR(PTR(target.clone())),
                    ));
                } else {
                    r.add_name_server(self.reverse_soa.clone());
                }
                return r;
            }
            let mut name = qname.clone();
            name.set_fqdn(true);
            if let Ok(net) = name.parse_arpa_name() {
                if self.cidr.contains(&net) {
                    r.set_authoritative(true);
                    if net.prefix_len() == net.max_prefix_len() {
                        r.set_response_code(ResponseCode::NXDomain);
                    }
                    r.add_name_server(self.reverse_soa.clone());
                    return r;
                }
            }
        }
        r.set_response_code(ResponseCode::Refused);
        r
    }
}

/// The name as lowercase text without the final dot.
fn lower_text(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// `Some(None)`: `name` is `origin`; `Some(Some(rest))`: `name` is `rest.origin`; `None`:
/// outside.
fn under<'a>(name: &'a str, origin: &str) -> Option<Option<&'a str>> {
    if name == origin {
        return Some(None);
    }
    let rest = name.strip_suffix(origin)?.strip_suffix('.')?;
    Some(Some(rest))
}

/// A fully qualified name from checked text; the root if it is not one (it always is when
/// built from labels and checked domains).
fn fqdn(text: &str) -> Name {
    let mut n = Name::from_ascii(text).unwrap_or_else(|_| Name::root());
    n.set_fqdn(true);
    n
}

fn soa_record(origin: Name, serial: u64) -> Record {
    let rname = Name::from_ascii("hostmaster")
        .ok()
        .and_then(|h| h.append_domain(&origin).ok())
        .unwrap_or_else(|| origin.clone());
    Record::from_rdata(
        origin.clone(),
        NEGATIVE_TTL,
        RData::SOA(SOA::new(
            origin,
            rname,
            serial as u32,
            3600,
            600,
            86400,
            NEGATIVE_TTL,
        )),
    )
}

/// `4.3.2.1.in-addr.arpa` / the nibbles `.ip6.arpa` of an address, lowercase.
fn reverse_name(a: IpAddr) -> String {
    lower_text(&Name::from(a))
}

/// The reverse zone covering `cidr`, at a label boundary (octets for IPv4, nibbles for
/// IPv6) at or above its prefix length.
fn reverse_apex(cidr: IpNet) -> String {
    match cidr {
        IpNet::V4(n) => {
            let octets = n.network().octets();
            let keep = usize::from(n.prefix_len() / 8);
            let mut labels: Vec<String> = octets[..keep].iter().map(|o| o.to_string()).collect();
            labels.reverse();
            labels.push("in-addr.arpa".to_owned());
            labels.join(".")
        }
        IpNet::V6(n) => {
            let keep = usize::from(n.prefix_len() / 4);
            let mut nibbles: Vec<String> = n
                .network()
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0x0f])
                .take(keep)
                .map(|x| format!("{x:x}"))
                .collect();
            nibbles.reverse();
            nibbles.push("ip6.arpa".to_owned());
            nibbles.join(".")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netmap::{NetworkInfo, PeerInfo};
    use hickory_proto::op::Query;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn key(n: u8) -> Key {
        Key([n; 32])
    }

    fn netmap(peers: &[(u8, &str, &str)]) -> Netmap {
        Netmap {
            address6: None,
            version: 7,
            network: NetworkInfo {
                cidr6: None,
                name: "Lab".into(),
                cidr: "10.9.8.0/24".parse().unwrap(),
                mtu: 1420,
                keepalive: 0,
            },
            address: "10.9.8.1/24".parse().unwrap(),
            name: "alpha".into(),
            peers: peers
                .iter()
                .map(|(k, name, a)| {
                    let address: IpAddr = a.parse().unwrap();
                    (
                        key(*k),
                        PeerInfo {
                            address6: None,
                            public_key: key(*k),
                            name: (*name).into(),
                            address,
                            allowed_ips: vec![IpNet::from(address)],
                            endpoints: vec![],
                        },
                    )
                })
                .collect(),
        }
    }

    fn zone() -> Zone {
        Zone::new(
            &netmap(&[(2, "Bravo", "10.9.8.2"), (3, "charlie_1", "10.9.8.3")]),
            &key(1),
            "Mesh.Internal",
        )
    }

    fn ask(zone: &Zone, name: &str, t: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        let bytes = zone.answer(&m.to_vec().unwrap(), true).unwrap();
        Message::from_vec(&bytes).unwrap()
    }

    fn addresses(m: &Message) -> Vec<IpAddr> {
        m.answers()
            .iter()
            .filter_map(|r| r.data().ip_addr())
            .collect()
    }

    #[test]
    fn labels_are_normalised() {
        for (name, want) in [
            ("alpha", "alpha"),
            ("Web-01", "web-01"),
            ("db_primary.eu", "db-primary-eu"),
            ("--x--y--", "x-y"),
            ("Bücher", "b-cher"),
            ("", "member"),
            ("___", "member"),
            ("日本", "member"),
            ("9lives", "9lives"),
        ] {
            assert_eq!(label(name), want, "{name:?}");
        }
        let long = "a".repeat(100);
        assert_eq!(label(&long).len(), 63);
        let long = format!("{}-b", "a".repeat(62));
        assert_eq!(
            label(&long),
            "a".repeat(62),
            "no dash at the end after cutting"
        );
    }

    #[test]
    fn collisions_go_to_the_lowest_address_and_stay_unique() {
        let (k1, k2, k3) = (key(0x11), key(0x22), key(0x33));
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let members = [
            Member {
                address6: None,
                key: &k1,
                name: "Web",
                address: a("10.0.0.9"),
            },
            Member {
                address6: None,
                key: &k2,
                name: "web",
                address: a("10.0.0.2"),
            },
            Member {
                address6: None,
                key: &k3,
                name: "web-111111",
                address: a("10.0.0.5"),
            },
        ];
        let got = labels(&members);
        assert_eq!(got[1], "web", "lowest address keeps the plain label");
        assert_eq!(
            got[2], "web-111111",
            "a plain name is claimed before suffixes"
        );
        assert_eq!(got[0], "web-11111111", "the suffix grows past a taken one");
        // Order of the input does not matter.
        let reversed = [members[2], members[1], members[0]];
        let again = labels(&reversed);
        assert_eq!(again, vec![got[2].clone(), got[1].clone(), got[0].clone()]);
        // Uniqueness when everything collides, also with long names cut to fit.
        let keys: Vec<Key> = (0..40u8).map(|i| Key([i / 4; 32])).collect();
        let long = "x".repeat(80);
        let many: Vec<Member<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Member {
                address6: None,
                key: k,
                name: &long,
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 1, i as u8)),
            })
            .collect();
        let got = labels(&many);
        let set: HashSet<&String> = got.iter().collect();
        assert_eq!(set.len(), got.len(), "{got:?}");
        assert!(
            got.iter().all(|l| l.len() <= MAX_LABEL && label(l) == *l),
            "{got:?}"
        );
    }

    #[test]
    fn domains_are_checked() {
        assert_eq!(check_domain("Mesh.Internal").unwrap(), "mesh.internal");
        assert_eq!(check_domain("corp").unwrap(), "corp");
        for bad in [
            "",
            ".",
            "a.",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(check_domain(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_domain(&"a.".repeat(70)), Err(DomainError::TooLong));
    }

    #[test]
    fn members_resolve_case_insensitively() {
        let z = zone();
        assert_eq!(z.origin(), "lab.mesh.internal");
        let m = ask(&z, "BRAVO.lab.mesh.internal.", RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(m.id(), 4242);
        assert!(m.authoritative());
        assert!(!m.recursion_available());
        assert!(m.recursion_desired());
        assert_eq!(addresses(&m), vec![IpAddr::from([10, 9, 8, 2])]);
        let me = ask(&z, "alpha.lab.mesh.internal.", RecordType::A);
        assert_eq!(addresses(&me), vec![IpAddr::from([10, 9, 8, 1])]);
        let c = ask(&z, "charlie-1.lab.mesh.internal", RecordType::A);
        assert_eq!(addresses(&c), vec![IpAddr::from([10, 9, 8, 3])]);
        assert_eq!(
            z.fqdn_of(&key(3)),
            Some("charlie-1.lab.mesh.internal"),
            "the name the admin sees"
        );
        assert_eq!(z.fqdn_of(&key(1)), Some("alpha.lab.mesh.internal"));
    }

    #[test]
    fn aaaa_for_a_v4_member_is_empty_but_no_error() {
        let z = zone();
        let m = ask(&z, "bravo.lab.mesh.internal.", RecordType::AAAA);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
        assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn aaaa_for_a_v6_member() {
        let mut n = netmap(&[]);
        n.network.cidr = "fd00:9::/64".parse().unwrap();
        n.address = "fd00:9::1/64".parse().unwrap();
        let z = Zone::new(&n, &key(1), DEFAULT_DOMAIN);
        let m = ask(&z, "alpha.lab.mesh.internal.", RecordType::AAAA);
        assert_eq!(
            addresses(&m),
            vec![IpAddr::V6("fd00:9::1".parse::<Ipv6Addr>().unwrap())]
        );
        let p = ask(
            &z,
            &reverse_name(m.answers()[0].data().ip_addr().unwrap()),
            RecordType::PTR,
        );
        assert_eq!(p.response_code(), ResponseCode::NoError);
        assert_eq!(p.answers().len(), 1);
        let other = ask(
            &z,
            &reverse_name("fd00:9::77".parse().unwrap()),
            RecordType::PTR,
        );
        assert_eq!(other.response_code(), ResponseCode::NXDomain);
    }

    #[test]
    fn unknown_names_in_the_zone_are_nxdomain_with_soa() {
        let z = zone();
        for name in ["zulu.lab.mesh.internal.", "x.bravo.lab.mesh.internal."] {
            let m = ask(&z, name, RecordType::A);
            assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
            assert!(m.answers().is_empty());
            assert_eq!(m.name_servers().len(), 1);
            assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
            assert!(!m.recursion_available());
        }
        let apex = ask(&z, "lab.mesh.internal.", RecordType::SOA);
        assert_eq!(apex.response_code(), ResponseCode::NoError);
        assert_eq!(apex.answers().len(), 1);
    }

    #[test]
    fn everything_else_is_refused() {
        let z = zone();
        for name in [
            "example.com.",
            "mesh.internal.",
            "bravo.other.mesh.internal.",
            "lab.mesh.internal.evil.",
            "1.0.0.127.in-addr.arpa.",
            "",
        ] {
            let m = ask(&z, if name.is_empty() { "." } else { name }, RecordType::A);
            assert_eq!(m.response_code(), ResponseCode::Refused, "{name}");
            assert!(!m.recursion_available());
            assert!(m.answers().is_empty());
        }
    }

    #[test]
    fn ptr_for_members_nxdomain_for_free_addresses() {
        let z = zone();
        let m = ask(&z, "2.8.9.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        match m.answers()[0].data() {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "bravo.lab.mesh.internal."),
            other => panic!("{other:?}"),
        }
        let free = ask(&z, "77.8.9.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(free.response_code(), ResponseCode::NXDomain);
        assert_eq!(
            free.name_servers()[0].name().to_ascii(),
            "8.9.10.in-addr.arpa."
        );
    }

    #[test]
    fn malformed_input_never_panics() {
        let z = zone();
        assert_eq!(z.answer(&[], true), None);
        assert_eq!(z.answer(&[1, 2, 3], true), None);
        // A header promising a question that is not there: FORMERR with the id.
        let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let r = Message::from_vec(&z.answer(&q, true).unwrap()).unwrap();
        assert_eq!(r.id(), 0xabcd);
        assert_eq!(r.response_code(), ResponseCode::FormErr);
        // A response is not answered.
        q[2] |= 0x80;
        assert_eq!(z.answer(&q, true), None);
        // Two questions: FORMERR.
        let mut m = Message::new();
        m.add_query(Query::query(
            Name::from_ascii("a.lab.mesh.internal.").unwrap(),
            RecordType::A,
        ));
        m.add_query(Query::query(
            Name::from_ascii("b.lab.mesh.internal.").unwrap(),
            RecordType::A,
        ));
        let r = Message::from_vec(&z.answer(&m.to_vec().unwrap(), false).unwrap()).unwrap();
        assert_eq!(r.response_code(), ResponseCode::FormErr);
        // Every prefix and some bit flips of a good query.
        let mut good = Message::new();
        good.add_query(Query::query(
            Name::from_ascii("bravo.lab.mesh.internal.").unwrap(),
            RecordType::A,
        ));
        let good = good.to_vec().unwrap();
        for n in 0..good.len() {
            let _ = z.answer(&good[..n], true);
            for bit in 0..8 {
                let mut flipped = good.clone();
                flipped[n] ^= 1 << bit;
                let _ = z.answer(&flipped, true);
            }
        }
    }

    #[test]
    fn non_queries_are_not_implemented() {
        let z = zone();
        let mut m = Message::new();
        m.set_op_code(OpCode::Update);
        let r = Message::from_vec(&z.answer(&m.to_vec().unwrap(), true).unwrap()).unwrap();
        assert_eq!(r.response_code(), ResponseCode::NotImp);
    }

    #[test]
    fn hosts_lists_every_member() {
        let z = zone();
        let names: Vec<String> = z.hosts().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "alpha.lab.mesh.internal",
                "bravo.lab.mesh.internal",
                "charlie-1.lab.mesh.internal"
            ]
        );
    }

    #[test]
    fn fqdns_match_the_zone() {
        let n = netmap(&[(2, "alpha", "10.9.8.2")]);
        let me = key(9);
        let z = Zone::new(&n, &me, "corp");
        let members = [
            Member {
                address6: None,
                key: &me,
                name: "alpha",
                address: n.address.addr(),
            },
            Member {
                address6: None,
                key: &key(2),
                name: "alpha",
                address: "10.9.8.2".parse().unwrap(),
            },
        ];
        let admin = fqdns("Lab", "corp", &members);
        assert_eq!(admin[&me], z.fqdn_of(&me).unwrap());
        assert_eq!(admin[&key(2)], z.fqdn_of(&key(2)).unwrap());
        assert_eq!(admin[&me], "alpha.lab.corp");
        assert_eq!(admin[&key(2)], "alpha-020202.lab.corp");
    }
}
