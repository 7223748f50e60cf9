//! Policy between members: who may open what to whom, as a document per network, compiled
//! by the coordinator into one filter per node, enforced by meshd on both ends.
//!
//! # The document (TOML)
//!
//! ```toml
//! default = "deny"            # what no rule decides: "allow" (a new network) or "deny"
//!
//! [groups]                    # named sets of tags, members, other groups, prefixes
//! cluster = ["tag:control", "tag:worker"]
//!
//! [[rule]]                    # first rule that matches decides; in document order
//! from = ["group:cluster"]
//! to = ["tag:control"]
//! ports = ["tcp/2379-2380", "tcp/6443"]
//!
//! [[rule]]
//! action = "deny"             # "allow" when left out
//! from = ["tag:ops"]
//! to = ["*"]
//! ports = ["tcp/10250"]
//!
//! [[test]]                    # must hold before the coordinator accepts the document
//! from = "tag:ops"
//! to = "tag:control"
//! port = "tcp/22"
//! expect = "deny"
//! ```
//!
//! Selectors: `*` (any member), `tag:NAME`, `group:NAME`, `member:NAME`, or a prefix or
//! address (`10.244.1.0/24`: traffic from or to those addresses, e.g. an approved pod
//! route). Ports: `*` (everything), `tcp`, `udp`, `icmp` (every port of it), `tcp/22`,
//! `udp/8000-8100`. A test's `from`/`to` name a hypothetical member by its tags and name
//! (`"tag:ops"`, `"member:laptop"`, `"tag:a tag:b"`); it passes when the policy gives
//! `expect` for a connection from such a member to such a member on `port`.
//!
//! Every error names the line and the reason ([`PolicyError`]); a document with errors or a
//! failing test changes nothing.
//!
//! # Compilation
//!
//! [`Policy::filter_for`] turns the document into what one node needs, a [`NodeFilter`]:
//! per peer, the rules that can concern traffic between the two (selectors resolved
//! against both members' tags, names and addresses), in order, for each direction. meshd
//! looks a packet up in the peer's [`PortTable`]: disjoint port ranges per protocol with
//! the first matching rule already resolved, so the cost is a binary search over that
//! peer's ranges, not a walk over the rules. Rules that depend on addresses inside the
//! peer's routes (prefix selectors) are kept as a short ordered list checked first.
//! [`NodeFilter::hash`] names a filter; nodes report the hash they run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Largest policy document accepted (bytes).
pub const MAX_DOCUMENT: usize = 256 * 1024;
/// Most rules a document may have.
pub const MAX_RULES: usize = 4096;

/// What a rule or the default does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Let it through.
    Allow,
    /// Drop it.
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// The transport protocols rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1) and ICMPv6 (58).
    Icmp,
}

impl Proto {
    /// The protocol of IP protocol number `n`, if rules can name it.
    pub fn from_ip(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            1 | 58 => Some(Proto::Icmp),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// A rule's `ports` entry: a protocol (or any) and an inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ports {
    /// `None`: every protocol (then the range is everything).
    pub proto: Option<Proto>,
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

impl Ports {
    /// Everything.
    pub const ANY: Ports = Ports {
        proto: None,
        lo: 0,
        hi: u16::MAX,
    };

    /// Parses `*`, `tcp`, `udp`, `icmp`, `tcp/22`, `udp/8000-8100`.
    pub fn parse(text: &str) -> Result<Ports, String> {
        let text = text.trim();
        if text == "*" || text == "any" {
            return Ok(Ports::ANY);
        }
        let (proto, range) = match text.split_once('/') {
            Some((p, r)) => (p, Some(r)),
            None => (text, None),
        };
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" => Proto::Icmp,
            other => {
                return Err(format!(
                    "unknown protocol {other:?} in {text:?} (tcp, udp, icmp or *)"
                ))
            }
        };
        let Some(range) = range else {
            return Ok(Ports {
                proto: Some(proto),
                lo: 0,
                hi: u16::MAX,
            });
        };
        if proto == Proto::Icmp {
            return Err(format!("{text:?}: icmp has no ports (write \"icmp\")"));
        }
        let port = |s: &str| -> Result<u16, String> {
            s.trim()
                .parse::<u16>()
                .map_err(|_| format!("{s:?} in {text:?} is not a port (0-65535)"))
        };
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None if range.trim() == "*" => (0, u16::MAX),
            None => {
                let p = port(range)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("{text:?}: the range runs backwards"));
        }
        Ok(Ports {
            proto: Some(proto),
            lo,
            hi,
        })
    }

    /// Whether a packet of `proto` to `port` falls in this entry (ICMP has no port).
    pub fn contains(&self, proto: Proto, port: u16) -> bool {
        match self.proto {
            None => true,
            Some(p) if p != proto => false,
            Some(Proto::Icmp) => true,
            Some(_) => (self.lo..=self.hi).contains(&port),
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            None => f.write_str("*"),
            Some(p) if self.lo == 0 && self.hi == u16::MAX => f.write_str(p.name()),
            Some(p) if self.lo == self.hi => write!(f, "{}/{}", p.name(), self.lo),
            Some(p) => write!(f, "{}/{}-{}", p.name(), self.lo, self.hi),
        }
    }
}

/// What a selector names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selector {
    /// Every member.
    Any,
    /// Members with this tag.
    Tag(String),
    /// The members (and prefixes) of a group.
    Group(String),
    /// The member with this name.
    Member(String),
    /// Traffic from or to these addresses.
    Prefix(IpNet),
}

/// Whether `s` is a valid tag, group or member name: a DNS label (lowercase letters,
/// digits, `-`, 1 to 63 characters, not starting or ending with `-`).
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Selector {
    /// Parses `*`, `tag:NAME`, `group:NAME`, `member:NAME`, a prefix or an address.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Selector::Any);
        }
        let named = |kind: &str, name: &str, make: fn(String) -> Selector| {
            if is_label(name) {
                Ok(make(name.to_owned()))
            } else {
                Err(format!(
                    "{kind} name {name:?} is not a DNS label (a-z, 0-9, -; at most 63)"
                ))
            }
        };
        if let Some(t) = text.strip_prefix("tag:") {
            return named("tag", t, Selector::Tag);
        }
        if let Some(g) = text.strip_prefix("group:") {
            return named("group", g, Selector::Group);
        }
        if let Some(m) = text.strip_prefix("member:") {
            return named("member", m, Selector::Member);
        }
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Selector::Prefix(net.trunc()));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Selector::Prefix(IpNet::from(ip)));
        }
        Err(format!(
            "{text:?} is not a selector (*, tag:NAME, group:NAME, member:NAME, a prefix or an address)"
        ))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Any => f.write_str("*"),
            Selector::Tag(t) => write!(f, "tag:{t}"),
            Selector::Group(g) => write!(f, "group:{g}"),
            Selector::Member(m) => write!(f, "member:{m}"),
            Selector::Prefix(p) => write!(f, "{p}"),
        }
    }
}

/// A rule, with its groups not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it does.
    pub action: Action,
    /// Sources.
    pub from: Vec<Selector>,
    /// Destinations.
    pub to: Vec<Selector>,
    /// What traffic.
    pub ports: Vec<Ports>,
    /// Its line in the document (1-based).
    pub line: usize,
}

/// A test the document carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTest {
    /// The source member: its tags and name.
    pub from: Probe,
    /// The destination member.
    pub to: Probe,
    /// The traffic.
    pub proto: Proto,
    /// Its port (0 for ICMP).
    pub port: u16,
    /// What the policy must decide.
    pub expect: Action,
    /// Its line in the document.
    pub line: usize,
}

/// A hypothetical member in a test or a `meshctl acl why`: tags, a name, an address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Its tags.
    pub tags: BTreeSet<String>,
    /// Its name, if given.
    pub name: Option<String>,
    /// Its address, if given.
    pub addr: Option<IpAddr>,
}

impl Probe {
    /// Parses `"tag:a tag:b member:name 10.9.8.5"` (any of them, space or comma separated).
    pub fn parse(text: &str) -> Result<Probe, String> {
        let mut p = Probe::default();
        for word in text.split([' ', ',']).filter(|w| !w.is_empty()) {
            match Selector::parse(word)? {
                Selector::Tag(t) => {
                    p.tags.insert(t);
                }
                Selector::Member(m) => p.name = Some(m),
                Selector::Prefix(net) if net.prefix_len() == net.max_prefix_len() => {
                    p.addr = Some(net.addr());
                }
                other => {
                    return Err(format!(
                        "{other} cannot describe one member (use tag:, member: or an address)"
                    ))
                }
            }
        }
        if p.tags.is_empty() && p.name.is_none() && p.addr.is_none() {
            return Err(format!("{text:?} names no member"));
        }
        Ok(p)
    }
}

/// A member as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its tags.
    pub tags: &'a BTreeSet<String>,
    /// Its overlay address and approved routes.
    pub prefixes: &'a [IpNet],
}

/// A document error: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct PolicyError {
    /// 1-based line (0: the document as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A network's policy, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// What no rule decides.
    pub default: Action,
    /// Groups, resolved to their tags, members and prefixes (no groups inside).
    pub groups: BTreeMap<String, Vec<Selector>>,
    /// The rules in order.
    pub rules: Vec<Rule>,
    /// The tests.
    pub tests: Vec<PolicyTest>,
}

impl Default for Policy {
    /// A new network's: everything allowed between members.
    fn default() -> Policy {
        Policy {
            default: Action::Allow,
            groups: BTreeMap::new(),
            rules: Vec::new(),
            tests: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    #[serde(default)]
    default: Option<toml::Spanned<String>>,
    #[serde(default)]
    groups: BTreeMap<String, toml::Spanned<Vec<toml::Spanned<String>>>>,
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
    #[serde(default)]
    test: Vec<toml::Spanned<RawTest>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    action: Option<String>,
    from: Vec<toml::Spanned<String>>,
    to: Vec<toml::Spanned<String>>,
    #[serde(default)]
    ports: Option<Vec<toml::Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    from: String,
    to: String,
    port: String,
    expect: String,
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len()))
        .map_or(1, |s| s.bytes().filter(|&b| b == b'\n').count() + 1)
}

fn action(text: &str) -> Result<Action, String> {
    match text {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        other => Err(format!("{other:?} is not an action (allow or deny)")),
    }
}

impl Policy {
    /// Parses and checks a document: syntax, selectors, ports, group references (known,
    /// no cycles), then its tests. Any problem is an error with its line.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_DOCUMENT {
            return Err(PolicyError {
                line: 0,
                message: format!(
                    "the document has {} bytes, at most {MAX_DOCUMENT} are accepted",
                    text.len()
                ),
            });
        }
        let raw: RawDoc = toml::from_str(text).map_err(|e| PolicyError {
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            message: e.message().split_whitespace().collect::<Vec<_>>().join(" "),
        })?;
        let at = |span: std::ops::Range<usize>| line_of(text, span.start);
        let default = match &raw.default {
            None => Action::Allow,
            Some(d) => action(d.get_ref()).map_err(|message| PolicyError {
                line: at(d.span()),
                message: format!("default: {message}"),
            })?,
        };
        if raw.rule.len() > MAX_RULES {
            return Err(PolicyError {
                line: 0,
                message: format!("{} rules, at most {MAX_RULES} are accepted", raw.rule.len()),
            });
        }
        // Groups as written, then resolved (groups in groups, no cycles).
        let mut written: BTreeMap<String, (usize, Vec<Selector>)> = BTreeMap::new();
        for (name, members) in &raw.groups {
            let line = at(members.span());
            if !is_label(name) {
                return Err(PolicyError {
                    line,
                    message: format!("group name {name:?} is not a DNS label"),
                });
            }
            let mut sels = Vec::new();
            for m in members.get_ref() {
                let sel = Selector::parse(m.get_ref()).map_err(|message| PolicyError {
                    line: at(m.span()),
                    message: format!("group {name}: {message}"),
                })?;
                if sel == Selector::Any {
                    return Err(PolicyError {
                        line: at(m.span()),
                        message: format!("group {name}: \"*\" in a group (use \"*\" in the rule)"),
                    });
                }
                sels.push(sel);
            }
            written.insert(name.clone(), (line, sels));
        }
        let mut groups = BTreeMap::new();
        for name in written.keys() {
            let mut out = BTreeSet::new();
            resolve(name, &written, &mut Vec::new(), &mut out)?;
            groups.insert(name.clone(), out.into_iter().collect());
        }
        let known = |sel: &Selector, line: usize| -> Result<(), PolicyError> {
            match sel {
                Selector::Group(g) if !groups.contains_key(g) => Err(PolicyError {
                    line,
                    message: format!("group:{g} is not defined under [groups]"),
                }),
                _ => Ok(()),
            }
        };
        let mut rules = Vec::new();
        for r in &raw.rule {
            let line = at(r.span());
            let raw = r.get_ref();
            let fail = |message: String| PolicyError { line, message };
            let action = match &raw.action {
                None => Action::Allow,
                Some(a) => action(a).map_err(|m| fail(format!("action: {m}")))?,
            };
            let mut sides = [Vec::new(), Vec::new()];
            for (side, (name, texts)) in
                sides.iter_mut().zip([("from", &raw.from), ("to", &raw.to)])
            {
                if texts.is_empty() {
                    return Err(fail(format!(
                        "{name} is empty (use [\"*\"] for every member)"
                    )));
                }
                for t in texts {
                    // Errors in a selector point at its own line.
                    let line = at(t.span());
                    let sel = Selector::parse(t.get_ref()).map_err(|m| PolicyError {
                        line,
                        message: format!("{name}: {m}"),
                    })?;
                    known(&sel, line)?;
                    side.push(sel);
                }
            }
            let ports = match &raw.ports {
                None => vec![Ports::ANY],
                Some(list) if list.is_empty() => {
                    return Err(fail("ports is empty (leave it out for every port)".into()))
                }
                Some(list) => list
                    .iter()
                    .map(|p| {
                        Ports::parse(p.get_ref()).map_err(|m| PolicyError {
                            line: at(p.span()),
                            message: format!("ports: {m}"),
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            let [from, to] = sides;
            rules.push(Rule {
                action,
                from,
                to,
                ports,
                line,
            });
        }
        let mut tests = Vec::new();
        for t in &raw.test {
            let line = at(t.span());
            let raw = t.get_ref();
            let fail = |message: String| PolicyError { line, message };
            let ports = Ports::parse(&raw.port).map_err(|m| fail(format!("port: {m}")))?;
            let (Some(proto), true) = (
                ports.proto,
                ports.lo == ports.hi || ports.proto == Some(Proto::Icmp),
            ) else {
                return Err(fail(format!(
                    "port: a test names one protocol and port (\"tcp/22\", \"icmp\"), not {:?}",
                    raw.port
                )));
            };
            tests.push(PolicyTest {
                from: Probe::parse(&raw.from).map_err(|m| fail(format!("from: {m}")))?,
                to: Probe::parse(&raw.to).map_err(|m| fail(format!("to: {m}")))?,
                proto,
                port: if proto == Proto::Icmp { 0 } else { ports.lo },
                expect: action(&raw.expect).map_err(|m| fail(format!("expect: {m}")))?,
                line,
            });
        }
        let policy = Policy {
            default,
            groups,
            rules,
            tests,
        };
        policy.run_tests()?;
        Ok(policy)
    }

    /// Runs the document's tests; the first that fails is the error.
    pub fn run_tests(&self) -> Result<(), PolicyError> {
        for t in &self.tests {
            let got = self.decide_probe(&t.from, &t.to, t.proto, t.port);
            if got.action != t.expect {
                let why = match got.rule {
                    Some(i) => {
                        format!("rule at line {} decides {}", self.rules[i].line, got.action)
                    }
                    None => format!("no rule matches, the default is {}", got.action),
                };
                return Err(PolicyError {
                    line: t.line,
                    message: format!("test expects {}, but {why}", t.expect),
                });
            }
        }
        Ok(())
    }

    /// The decision for traffic from `from` to `to` (hypothetical members).
    pub fn decide_probe(&self, from: &Probe, to: &Probe, proto: Proto, port: u16) -> Decision {
        let prefixes = |p: &Probe| p.addr.map(IpNet::from).into_iter().collect::<Vec<_>>();
        let (fp, tp) = (prefixes(from), prefixes(to));
        let subject = |p: &'_ Probe, pre: &'_ [IpNet]| -> (String, Vec<IpNet>) {
            (p.name.clone().unwrap_or_default(), pre.to_vec())
        };
        let (fname, fpre) = subject(from, &fp);
        let (tname, tpre) = subject(to, &tp);
        let f = Subject {
            name: &fname,
            tags: &from.tags,
            prefixes: &fpre,
        };
        let t = Subject {
            name: &tname,
            tags: &to.tags,
            prefixes: &tpre,
        };
        self.decide(&f, from.addr, &t, to.addr, proto, port)
    }

    /// The decision for a packet from member `from` (source address `src`, if known) to
    /// member `to` (destination `dst`) of `proto` to `port`: the first rule that matches,
    /// else the default. Prefix selectors match the packet's addresses.
    pub fn decide(
        &self,
        from: &Subject<'_>,
        src: Option<IpAddr>,
        to: &Subject<'_>,
        dst: Option<IpAddr>,
        proto: Proto,
        port: u16,
    ) -> Decision {
        for (i, r) in self.rules.iter().enumerate() {
            if r.ports.iter().any(|p| p.contains(proto, port))
                && r.from.iter().any(|s| self.matches(s, from, src))
                && r.to.iter().any(|s| self.matches(s, to, dst))
            {
                return Decision {
                    action: r.action,
                    rule: Some(i),
                };
            }
        }
        Decision {
            action: self.default,
            rule: None,
        }
    }

    fn matches(&self, sel: &Selector, who: &Subject<'_>, ip: Option<IpAddr>) -> bool {
        match sel {
            Selector::Any => true,
            Selector::Tag(t) => who.tags.contains(t),
            Selector::Member(m) => who.name == m,
            Selector::Prefix(p) => ip.is_some_and(|ip| p.contains(&ip)),
            Selector::Group(g) => self
                .groups
                .get(g)
                .is_some_and(|sels| sels.iter().any(|s| self.matches(s, who, ip))),
        }
    }

    /// The selectors `sel` stands for, groups expanded.
    fn expand<'a>(&'a self, sel: &'a Selector) -> Box<dyn Iterator<Item = &'a Selector> + 'a> {
        match sel {
            Selector::Group(g) => Box::new(self.groups.get(g).into_iter().flatten()),
            other => Box::new(std::iter::once(other)),
        }
    }

    /// How `sel` can match traffic of member `who`: never (`None`), always (`Some(None)`),
    /// or when the packet's address is in a prefix (`Some(Some(p))`, one per prefix).
    fn conditions(&self, sels: &[Selector], who: &Subject<'_>) -> Vec<Option<IpNet>> {
        let mut out = Vec::new();
        for s in sels.iter().flat_map(|s| self.expand(s)) {
            match s {
                Selector::Prefix(p) => {
                    // Only prefixes that overlap what this member sends from or receives at.
                    let overlaps = who
                        .prefixes
                        .iter()
                        .any(|q| q.contains(&p.network()) || p.contains(&q.network()));
                    if overlaps {
                        // The part inside the member's own prefix when the rule's is wider.
                        let narrow = who
                            .prefixes
                            .iter()
                            .filter(|q| {
                                p.contains(&q.network()) && q.prefix_len() >= p.prefix_len()
                            })
                            .copied()
                            .collect::<Vec<_>>();
                        if narrow.is_empty() {
                            out.push(Some(*p));
                        } else {
                            out.extend(narrow.into_iter().map(Some));
                        }
                    }
                }
                other => {
                    if self.matches(other, who, None) {
                        out.push(None);
                    }
                }
            }
        }
        // "Always" makes the prefix conditions redundant.
        if out.contains(&None) {
            return vec![None];
        }
        out.sort();
        out.dedup();
        out
    }

    /// The filter node `me` enforces toward each of `peers` (see the module docs).
    pub fn filter_for<'a>(
        &self,
        me: &Subject<'_>,
        peers: impl IntoIterator<Item = (crate::Key, Subject<'a>)>,
    ) -> NodeFilter {
        let mut out = BTreeMap::new();
        for (key, peer) in peers {
            let pf = PeerFilter {
                inbound: self.entries(&peer, me),
                outbound: self.entries(me, &peer),
            };
            out.insert(key, pf);
        }
        NodeFilter {
            default: self.default,
            peers: out,
        }
    }

    /// What of a member this policy's decisions depend on ([`ClassKey`]): its tags, and its
    /// name or prefixes only when some rule or group names members or prefixes. Members of
    /// one class get the same entries with every peer, and peers of one class the same
    /// entries from every member: the coordinator compiles per pair of classes.
    pub fn class_of(&self, who: &Subject<'_>) -> ClassKey {
        self.classifier().class_of(who)
    }

    /// [`Policy::class_of`] for many members: what the policy looks at, found once.
    pub fn classifier(&self) -> Classifier {
        let (mut names, mut prefixes) = (false, false);
        for r in &self.rules {
            for s in r.from.iter().chain(&r.to).flat_map(|s| self.expand(s)) {
                names |= matches!(s, Selector::Member(_));
                prefixes |= matches!(s, Selector::Prefix(_));
            }
        }
        Classifier { names, prefixes }
    }

    /// The entries between a member of class `me` and a peer of class `peer` (what
    /// [`Policy::filter_for`] gives that peer).
    pub fn pair_filter(&self, me: &ClassKey, peer: &ClassKey) -> PeerFilter {
        let (me, peer) = (me.subject(), peer.subject());
        PeerFilter {
            inbound: self.entries(&peer, &me),
            outbound: self.entries(&me, &peer),
        }
    }

    /// The rules that can decide traffic from `from` to `to`, as entries in order.
    fn entries(&self, from: &Subject<'_>, to: &Subject<'_>) -> Vec<Entry> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let srcs = self.conditions(&r.from, from);
            if srcs.is_empty() {
                continue;
            }
            let dsts = self.conditions(&r.to, to);
            for src in &srcs {
                for dst in &dsts {
                    for p in &r.ports {
                        out.push(Entry {
                            action: r.action,
                            ports: *p,
                            src: *src,
                            dst: *dst,
                            rule: u32::try_from(i).unwrap_or(u32::MAX),
                            line: u32::try_from(r.line).unwrap_or(u32::MAX),
                        });
                    }
                }
            }
        }
        out
    }
}

/// Resolves group `name` into `out` (tags, members, prefixes), following groups inside;
/// `path` detects cycles.
fn resolve(
    name: &str,
    written: &BTreeMap<String, (usize, Vec<Selector>)>,
    path: &mut Vec<String>,
    out: &mut BTreeSet<Selector>,
) -> Result<(), PolicyError> {
    let Some((line, sels)) = written.get(name) else {
        return Err(PolicyError {
            line: 0,
            message: format!("group:{name} is not defined under [groups]"),
        });
    };
    if path.iter().any(|p| p == name) {
        path.push(name.to_owned());
        return Err(PolicyError {
            line: *line,
            message: format!("groups contain each other: {}", path.join(" → ")),
        });
    }
    path.push(name.to_owned());
    for s in sels {
        match s {
            Selector::Group(g) => {
                if !written.contains_key(g) {
                    return Err(PolicyError {
                        line: *line,
                        message: format!("group {name}: group:{g} is not defined"),
                    });
                }
                resolve(g, written, path, out)?;
            }
            other => {
                out.insert(other.clone());
            }
        }
    }
    path.pop();
    Ok(())
}

/// What the policy decided, and which rule did (`None`: the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub action: Action,
    /// The deciding rule's index in [`Policy::rules`].
    pub rule: Option<usize>,
}

/// One compiled rule between two members: the rule's action for `ports` when the packet's
/// source is in `src` and its destination in `dst` (`None`: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Entry {
    /// What it does.
    pub action: Action,
    /// Protocol and ports.
    pub ports: Ports,
    /// Source prefix condition.
    pub src: Option<IpNet>,
    /// Destination prefix condition.
    pub dst: Option<IpNet>,
    /// The rule's index in the document.
    pub rule: u32,
    /// The rule's line in the document.
    pub line: u32,
}

/// The entries of one peer, both directions, in rule order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PeerFilter {
    /// Traffic from the peer to this node (checked after decryption).
    pub inbound: Vec<Entry>,
    /// Traffic from this node to the peer (checked before encryption).
    pub outbound: Vec<Entry>,
}

/// What one node enforces: per peer, the entries; the default for what none decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeFilter {
    /// What no entry decides.
    pub default: Action,
    /// By peer key.
    pub peers: BTreeMap<crate::Key, PeerFilter>,
}

impl NodeFilter {
    /// Everything allowed (no policy, or a policy of no rules and default allow).
    pub fn allow_all() -> NodeFilter {
        NodeFilter {
            default: Action::Allow,
            peers: BTreeMap::new(),
        }
    }

    /// A short stable name of this filter: its [`FilterDigest`] in 16 hex digits.
    pub fn hash(&self) -> String {
        FilterDigest::of(self).hex()
    }

    /// Whether any traffic between this node and `peer` can be allowed (else the
    /// coordinator leaves the peer out of the netmap).
    pub fn reaches(&self, peer: &crate::Key) -> bool {
        match self.peers.get(peer) {
            None => self.default == Action::Allow,
            Some(f) => f.reaches(self.default),
        }
    }
}

/// What a policy's decisions about a member depend on ([`Policy::class_of`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassKey {
    /// Its tags.
    pub tags: BTreeSet<String>,
    /// Its name, when the policy names members.
    pub name: Option<String>,
    /// Its address and routes, when the policy names prefixes.
    pub prefixes: Vec<IpNet>,
}

/// Puts members into classes for one policy ([`Policy::classifier`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classifier {
    names: bool,
    prefixes: bool,
}

impl Classifier {
    /// `who`'s class.
    pub fn class_of(&self, who: &Subject<'_>) -> ClassKey {
        ClassKey {
            tags: who.tags.clone(),
            name: self.names.then(|| who.name.to_owned()),
            prefixes: if self.prefixes {
                who.prefixes.to_vec()
            } else {
                Vec::new()
            },
        }
    }
}

impl ClassKey {
    /// A member of this class as the policy sees it (what the policy does not look at
    /// left empty).
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            name: self.name.as_deref().unwrap_or(""),
            tags: &self.tags,
            prefixes: &self.prefixes,
        }
    }
}

impl PeerFilter {
    /// Whether any traffic with this peer can be allowed under `default` (else the peer
    /// is left out of the member's netmap and filter).
    pub fn reaches(&self, default: Action) -> bool {
        default == Action::Allow
            || self
                .inbound
                .iter()
                .chain(&self.outbound)
                .any(|e| e.action == Action::Allow)
    }
}

/// A change of a node's filter, as the coordinator sends it: only the peers whose entries
/// changed (or all of them when `full`), and the hash the whole filter has afterwards, so a
/// node that missed or misapplied something notices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FilterUpdate {
    /// This replaces the whole filter (else it changes the one the node has).
    pub full: bool,
    /// What no entry decides.
    pub default: Action,
    /// Peers whose entries are new or changed (on the wire each distinct entry list once,
    /// and per peer its index: the peers of a class all have the same).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "by_shape")]
    pub upsert: BTreeMap<crate::Key, PeerFilter>,
    /// Peers no longer in the filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<crate::Key>,
    /// [`NodeFilter::hash`] of the filter after this update.
    pub hash: String,
}

impl FilterUpdate {
    /// The update from a filter of `old` peers (`None`: nothing sent yet: a full one) to
    /// one of `new` peers with `default`, whose [`NodeFilter::hash`] is `hash`. Entry
    /// lists may be held in any form that borrows as one (an `Arc`, shared between
    /// filters, compares by pointer first).
    pub fn between<P: std::borrow::Borrow<PeerFilter> + PartialEq>(
        default: Action,
        old: Option<&BTreeMap<crate::Key, P>>,
        new: &BTreeMap<crate::Key, P>,
        hash: String,
    ) -> FilterUpdate {
        let upsert = new
            .iter()
            .filter(|(k, p)| old.is_none_or(|old| old.get(k) != Some(p)))
            .map(|(k, p)| (*k, p.borrow().clone()))
            .collect();
        let remove = old.map_or_else(Vec::new, |old| {
            old.keys()
                .filter(|k| !new.contains_key(k))
                .copied()
                .collect()
        });
        FilterUpdate {
            full: old.is_none(),
            default,
            upsert,
            remove,
            hash,
        }
    }
}

impl NodeFilter {
    /// The update that turns `old` (`None`: nothing sent yet) into `self`.
    pub fn update_from(&self, old: Option<&NodeFilter>) -> FilterUpdate {
        self.update_from_hashed(old, self.hash())
    }

    /// [`NodeFilter::update_from`] with this filter's [`NodeFilter::hash`] already known
    /// (a coordinator sends one filter to many members).
    pub fn update_from_hashed(&self, old: Option<&NodeFilter>, hash: String) -> FilterUpdate {
        FilterUpdate::between(self.default, old.map(|o| &o.peers), &self.peers, hash)
    }

    /// Applies `update`; an error when the result's hash is not the one announced (the
    /// filter is then left as it was: the caller fails closed).
    pub fn apply(&mut self, update: &FilterUpdate) -> Result<(), String> {
        let mut next = if update.full {
            NodeFilter {
                default: update.default,
                peers: BTreeMap::new(),
            }
        } else {
            self.clone()
        };
        next.default = update.default;
        for k in &update.remove {
            next.peers.remove(k);
        }
        for (k, f) in &update.upsert {
            next.peers.insert(*k, f.clone());
        }
        let got = next.hash();
        if got != update.hash {
            return Err(format!(
                "the filter after the update hashes to {got}, the coordinator announced {}",
                update.hash
            ));
        }
        *self = next;
        Ok(())
    }
}

/// A filter's digest: the sum (mod 2^64) of one term per peer (SHA-256 over its key and
/// its entries) and one for the default. A change of some peers changes it by theirs
/// alone, so a coordinator that edits a filter keeps its digest at the cost of the edit;
/// a node checks the announced one against the filter it holds after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterDigest(u64);

impl FilterDigest {
    /// The digest of a filter with no peers and `default`.
    pub fn empty(default: Action) -> FilterDigest {
        let json = serde_json::to_vec(&default).unwrap_or_default();
        FilterDigest(term(&[b"wiremesh filter default\0", &json]))
    }

    /// The digest of `filter` (each distinct entry list serialised once).
    pub fn of(filter: &NodeFilter) -> FilterDigest {
        FilterDigest::of_peers(filter.default, &filter.peers)
    }

    /// The digest of a filter with `default` and `peers` (each distinct entry list
    /// serialised once).
    pub fn of_peers<'a, P: std::borrow::Borrow<PeerFilter> + 'a>(
        default: Action,
        peers: impl IntoIterator<Item = (&'a crate::Key, &'a P)>,
    ) -> FilterDigest {
        let mut shapes: HashMap<&PeerFilter, [u8; 32]> = HashMap::new();
        let mut d = FilterDigest::empty(default);
        for (k, pf) in peers {
            let pf: &PeerFilter = pf.borrow();
            let shape = *shapes.entry(pf).or_insert_with(|| shape_digest(pf));
            d.0 = d.0.wrapping_add(peer_term(k, &shape));
        }
        d
    }

    /// With peer `key`'s entries `pf` added.
    pub fn add(&mut self, key: &crate::Key, pf: &PeerFilter) {
        self.0 = self.0.wrapping_add(peer_term(key, &shape_digest(pf)));
    }

    /// With peer `key`'s entries `pf` taken out.
    pub fn remove(&mut self, key: &crate::Key, pf: &PeerFilter) {
        self.0 = self.0.wrapping_sub(peer_term(key, &shape_digest(pf)));
    }

    /// As [`NodeFilter::hash`] shows it: 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

fn shape_digest(pf: &PeerFilter) -> [u8; 32] {
    let json = serde_json::to_vec(pf).unwrap_or_default();
    Sha256::digest(&json).into()
}

fn peer_term(key: &crate::Key, shape: &[u8; 32]) -> u64 {
    term(&[b"wiremesh filter peer\0", &key.0, shape])
}

fn term(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().unwrap_or_default())
}

/// [`FilterUpdate::upsert`] on the wire: the distinct entry lists once, and per peer the
/// index of its own, so that a class's thousand peers with the same entries cost a key
/// and a number each.
mod by_shape {
    use std::collections::{BTreeMap, HashMap};

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::PeerFilter;
    use crate::Key;

    #[derive(Serialize)]
    struct Out<'a> {
        entries: Vec<&'a PeerFilter>,
        peers: BTreeMap<&'a Key, u32>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct In {
        entries: Vec<PeerFilter>,
        peers: BTreeMap<Key, u32>,
    }

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<Key, PeerFilter>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut index: HashMap<&PeerFilter, u32> = HashMap::new();
        let mut out = Out {
            entries: Vec::new(),
            peers: BTreeMap::new(),
        };
        for (k, pf) in map {
            let i = *index.entry(pf).or_insert_with(|| {
                out.entries.push(pf);
                u32::try_from(out.entries.len() - 1).unwrap_or(u32::MAX)
            });
            out.peers.insert(k, i);
        }
        out.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Key, PeerFilter>, D::Error> {
        let wire = In::deserialize(d)?;
        wire.peers
            .into_iter()
            .map(|(k, i)| {
                let pf = usize::try_from(i).ok().and_then(|i| wire.entries.get(i));
                match pf {
                    Some(pf) => Ok((k, pf.clone())),
                    None => Err(D::Error::custom(format!(
                        "peer {} names entry list {i}, the update has {}",
                        k.fingerprint(),
                        wire.entries.len()
                    ))),
                }
            })
            .collect()
    }
}

/// A peer's entries of one direction, compiled for the packet path: per protocol, disjoint
/// port ranges each with its decision (first matching entry resolved at build time);
/// entries with prefix conditions kept apart, checked first, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTable {
    /// Entries with a prefix condition, in rule order (rare: approved-route rules); one
    /// decides only when its rule comes before the unconditional decision's.
    conditional: Vec<Entry>,
    /// Disjoint ranges covering every port, in order.
    tcp: Vec<Range>,
    udp: Vec<Range>,
    icmp: Decided,
    other: Decided,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    lo: u16,
    hi: u16,
    decided: Decided,
}

/// An unconditional decision and the rule that made it (`u32::MAX`: the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decided {
    action: Action,
    rule: u32,
}

/// A lookup's answer: the action, and the rule (`None`: the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny.
    pub action: Action,
    /// The deciding rule's index.
    pub rule: Option<u32>,
}

impl PortTable {
    /// Builds the table of `entries` (one direction of a [`PeerFilter`]).
    pub fn build(entries: &[Entry], default: Action) -> PortTable {
        let uncond: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.src.is_none() && e.dst.is_none())
            .collect();
        let first = |proto: Proto, port: u16| -> Decided {
            uncond
                .iter()
                .find(|e| e.ports.contains(proto, port))
                .map_or(
                    Decided {
                        action: default,
                        rule: u32::MAX,
                    },
                    |e| Decided {
                        action: e.action,
                        rule: e.rule,
                    },
                )
        };
        let ranges = |proto: Proto| -> Vec<Range> {
            // Elementary segments between every boundary any entry of this protocol has.
            let mut cuts: BTreeSet<u32> = [0u32, 65_536].into();
            for e in &uncond {
                if e.ports.proto == Some(proto) {
                    cuts.insert(u32::from(e.ports.lo));
                    cuts.insert(u32::from(e.ports.hi) + 1);
                }
            }
            let cuts: Vec<u32> = cuts.into_iter().collect();
            let mut out: Vec<Range> = Vec::new();
            for w in cuts.windows(2) {
                let (lo, hi) = (w[0] as u16, (w[1] - 1) as u16);
                let decided = first(proto, lo);
                match out.last_mut() {
                    Some(last) if last.decided == decided => last.hi = hi,
                    _ => out.push(Range { lo, hi, decided }),
                }
            }
            out
        };
        PortTable {
            conditional: entries
                .iter()
                .filter(|e| e.src.is_some() || e.dst.is_some())
                .copied()
                .collect(),
            tcp: ranges(Proto::Tcp),
            udp: ranges(Proto::Udp),
            icmp: first(Proto::Icmp, 0),
            other: uncond.iter().find(|e| e.ports.proto.is_none()).map_or(
                Decided {
                    action: default,
                    rule: u32::MAX,
                },
                |e| Decided {
                    action: e.action,
                    rule: e.rule,
                },
            ),
        }
    }

    /// The verdict for a packet from `src` to `dst` of IP protocol `ip_proto` to `port`.
    /// No allocation; a binary search over this peer's ranges, plus the conditional
    /// entries (usually none).
    pub fn lookup(&self, src: IpAddr, dst: IpAddr, ip_proto: u8, port: u16) -> Verdict {
        let proto = Proto::from_ip(ip_proto);
        let plain = match proto {
            Some(Proto::Tcp) => find(&self.tcp, port),
            Some(Proto::Udp) => find(&self.udp, port),
            Some(Proto::Icmp) => self.icmp,
            None => self.other,
        };
        // A conditional entry decides only if its rule comes before the plain decision's.
        for e in &self.conditional {
            if e.rule >= plain.rule {
                break;
            }
            let ports_match = match proto {
                Some(p) => e.ports.contains(p, port),
                None => e.ports.proto.is_none(),
            };
            if ports_match
                && e.src.is_none_or(|n| n.contains(&src))
                && e.dst.is_none_or(|n| n.contains(&dst))
            {
                return Verdict {
                    action: e.action,
                    rule: Some(e.rule),
                };
            }
        }
        Verdict {
            action: plain.action,
            rule: (plain.rule != u32::MAX).then_some(plain.rule),
        }
    }
}

fn find(ranges: &[Range], port: u16) -> Decided {
    let i = ranges.partition_point(|r| r.hi < port);
    ranges[i.min(ranges.len() - 1)].decided
}

impl Rule {
    /// One line: `allow tag:ops, tag:dev -> * : tcp/22, icmp`.
    pub fn summary(&self) -> String {
        let list = |v: &[Selector]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ports = self
            .ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} {} -> {} : {}",
            self.action,
            list(&self.from),
            list(&self.to),
            ports
        )
    }
}

#[cfg(test)]
mod tests;
