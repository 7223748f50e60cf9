//! Admin operations: what the HTTP API ([`crate::admin::http`]) calls, one method per route.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Bound;

use mesh_proto::admin::{
    CreateNetwork, CreateToken, MemberView, NetworkView, TokenCreated, TokenView, UpdateMember,
    MAX_EXPIRES_IN_SECS,
};
use mesh_proto::control::{secret_hash, JoinSecret, JoinToken};
use mesh_proto::Key;

use super::{random32, Change, Coordinator, Error, NetState, State};
use crate::control::ipam;
use crate::control::listing::{MemberFilter, Page, Search};
use crate::model::{
    check_address6, parse_route, route_conflict, validate_member_name, validate_network,
    validate_network_name, Member, Network, Token, DEFAULT_KEEPALIVE, DEFAULT_MTU,
};
use crate::store::{Expect, Op, StoreError};

/// Shortest key prefix accepted as a member reference.
const MIN_PREFIX: usize = 8;

fn no_network(net: &str) -> Error {
    Error::NotFound(format!("no network {net:?}"))
}

pub(super) fn network<'a>(st: &'a State, net: &str) -> Result<&'a NetState, Error> {
    st.networks.get(net).ok_or_else(|| no_network(net))
}

/// A key written in standard base64 or base64url (padding optional).
fn parse_any_key(s: &str) -> Option<Key> {
    if let Ok(k) = s.parse() {
        return Some(k);
    }
    let mut std: String = s
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    if std.len() == 43 {
        std.push('=');
    }
    std.parse().ok()
}

/// Finds the member `node` names: its public key, its name, or a unique prefix (at
/// least [`MIN_PREFIX`] characters) of its base64 key.
pub(super) fn find_member<'a>(ns: &'a NetState, node: &str) -> Result<&'a Member, Error> {
    if let Some(m) = parse_any_key(node).and_then(|k| ns.members.get(&k)) {
        return Ok(m);
    }
    let prefix: String = node
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let by_prefix = node.len() >= MIN_PREFIX;
    let found: Vec<&Member> = ns
        .members
        .values()
        .filter(|m| m.name == node || (by_prefix && m.public_key.to_base64().starts_with(&prefix)))
        .collect();
    match found.as_slice() {
        [m] => Ok(m),
        [] => Err(Error::NotFound(format!(
            "no member {node:?} in network {:?}",
            ns.network.name
        ))),
        several => {
            let list: Vec<String> = several
                .iter()
                .map(|m| format!("{} ({})", m.name, m.public_key.fingerprint()))
                .collect();
            Err(Error::Conflict(format!(
                "{node:?} matches several members: {}; give the full key",
                list.join(", ")
            )))
        }
    }
}

/// An admin-set public endpoint: `None` (cleared) for an unspecified address; otherwise
/// an address peers can send to, IPv4-mapped IPv6 written as IPv4.
fn public_endpoint(ep: SocketAddr) -> Result<Option<SocketAddr>, Error> {
    let ip = ep.ip().to_canonical();
    if ip.is_unspecified() {
        return Ok(None);
    }
    if ep.port() == 0 {
        return Err(Error::Invalid(format!(
            "public-endpoint {ep}: port 0 is not a port peers can send to"
        )));
    }
    if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(Error::Invalid(format!(
            "public-endpoint {ep}: not a unicast address"
        )));
    }
    Ok(Some(SocketAddr::new(ip, ep.port())))
}

impl Coordinator {
    fn member_view(&self, ns: &NetState, m: &Member) -> MemberView {
        let names = ns.dns_names(Some(m));
        ns.member_view(
            &self.sessions(),
            &|n, k| self.online_elsewhere(n, k),
            &names,
            m,
        )
    }

    /// `GET /api/networks`.
    pub async fn list_networks(&self) -> Vec<NetworkView> {
        let st = self.state.lock().await;
        st.networks
            .values()
            .map(|ns| ns.network.view(ns.members.len()))
            .collect()
    }

    /// `GET /api/networks/{net}`.
    pub async fn get_network(&self, net: &str) -> Result<NetworkView, Error> {
        let st = self.state.lock().await;
        let ns = network(&st, net)?;
        Ok(ns.network.view(ns.members.len()))
    }

    /// `POST /api/networks`.
    pub async fn create_network(&self, req: CreateNetwork) -> Result<NetworkView, Error> {
        validate_network_name(&req.name)?;
        let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
        let cidr = validate_network(req.cidr, mtu)?;
        let dns_domain = match req.dns_domain {
            Some(d) => Some(
                mesh_proto::dns::check_domain(&d)
                    .map_err(|e| Error::Invalid(format!("dns-domain: {e}")))?,
            ),
            None => None,
        };
        let cidr6 = match req.cidr6.as_deref().map(str::trim) {
            Some("off") => None,
            Some(text) => {
                let prefix: ipnet::IpNet = text.parse().map_err(|_| {
                    Error::Invalid(format!("cidr6 {text:?}: not an IPv6 prefix (or off)"))
                })?;
                // Well-formed but not for this cidr (an IPv6 network): a clash, as the
                // document says (the schema cannot relate two fields).
                Some(crate::model::check_cidr6(&cidr, &prefix).map_err(Error::Conflict)?)
            }
            // Dual stack by default beside an IPv4 prefix.
            None if cidr.addr().is_ipv4() => Some(crate::model::random_ula()),
            None => None,
        };
        let network = Network {
            cidr6,
            name: req.name,
            cidr,
            mtu,
            keepalive: req.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
            version: crate::model::initial_version(self.now()),
            policy: None,
            dns_domain,
        };
        let view = {
            let mut st = self.state.lock().await;
            if st.networks.contains_key(&network.name) {
                return Err(Error::Conflict(format!(
                    "network {:?} already exists",
                    network.name
                )));
            }
            let audit = vec![self.audit_entry(
                "network.create",
                &network.name,
                &network.name,
                format!("cidr {}, mtu {}", network.cidr, network.mtu),
            )];
            let mut ops = vec![Op::PutNetwork(network.clone())];
            ops.extend(st.audit.ops(&audit));
            // Revision 0: no coordinator created it meanwhile.
            let expect = [Expect {
                network: network.name.clone(),
                revision: 0,
            }];
            let rev = self.apply(&ops, &expect).map_err(|e| match e {
                StoreError::Conflict { .. } => {
                    Error::Conflict(format!("network {:?} already exists", network.name))
                }
                e => Error::Store(e),
            })?;
            st.audit.committed(audit);
            let view = network.view(0);
            let mut ns = NetState::new(network, Vec::new());
            ns.rev = rev;
            st.networks.insert(ns.network.name.clone(), ns);
            view
        };
        self.durable().await?;
        tracing::info!(network = %view.name, cidr = %view.cidr, "network created");
        Ok(view)
    }

    /// `DELETE /api/networks/{net}`: the network, its members and tokens. Connected
    /// members are denied.
    pub async fn delete_network(&self, net: &str) -> Result<(), Error> {
        self.retrying(|| self.delete_network_once(net)).await
    }

    async fn delete_network_once(&self, net: &str) -> Result<(), Error> {
        {
            let mut st = self.state.lock().await;
            let ns = network(&st, net)?;
            let members = ns.members.len();
            let expect = [Expect {
                network: net.to_owned(),
                revision: ns.rev,
            }];
            let audit =
                vec![self.audit_entry("network.delete", net, net, format!("{members} members"))];
            let mut ops = vec![Op::DeleteNetwork(net.to_owned())];
            ops.extend(st.audit.ops(&audit));
            self.apply(&ops, &expect)?;
            st.audit.committed(audit);
            if let Some(mut ns) = st.networks.remove(net) {
                ns.seq = self.applied.load(std::sync::atomic::Ordering::SeqCst);
                ns.publish(true);
            }
            st.tokens.retain(|_, t| t.network != net);
            self.publish_membership(&st);
        }
        self.durable().await?;
        tracing::info!(network = %net, "network deleted");
        Ok(())
    }

    /// `GET /api/networks/{net}/members`.
    pub async fn list_members(&self, net: &str) -> Result<Vec<MemberView>, Error> {
        let st = self.state.lock().await;
        let ns = network(&st, net)?;
        let sessions = self.sessions();
        let names = ns.dns_names(None);
        Ok(ns
            .members
            .values()
            .map(|m| ns.member_view(&sessions, &|n, k| self.online_elsewhere(n, k), &names, m))
            .collect())
    }

    /// `GET /api/networks/{net}/members?limit=&after=&q=&status=`: at most `limit` members
    /// that `filter` keeps, by key, strictly after the key `after` names (standard or
    /// URL-safe base64; a space is read as the `+` a query string turned into one). Views
    /// are made for the page only: the walk starts at the cursor (a range of the member
    /// map) and stops one past the page. Counting the matches is free without a search
    /// (the map sizes) and one pass over the members with one, allocating nothing.
    pub async fn list_members_page(
        &self,
        net: &str,
        filter: &MemberFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<MemberView>, Error> {
        let after = match after {
            None => None,
            Some(text) => Some(parse_any_key(&text.replace(' ', "+")).ok_or_else(|| {
                Error::Invalid(format!(
                    "after: expected a member's public key in base64, got {:?}",
                    text.chars().take(64).collect::<String>()
                ))
            })?),
        };
        let st = self.state.lock().await;
        let ns = network(&st, net)?;
        let keep = |m: &&Member| filter.matches(&m.public_key, &m.name, m.address, m.authorized);
        let total = match (&filter.search, filter.authorized) {
            (None, None) => ns.members.len(),
            (None, Some(true)) => ns.peers.len(),
            (None, Some(false)) => ns.members.len().saturating_sub(ns.peers.len()),
            (Some(_), _) => ns.members.values().filter(keep).count(),
        };
        let from = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let mut walk = ns
            .members
            .range((from, Bound::Unbounded))
            .map(|(_, m)| m)
            .filter(keep);
        let page: Vec<&Member> = walk.by_ref().take(limit).collect();
        let more = walk.next().is_some();
        let sessions = self.sessions();
        let names = ns.dns_names(None);
        Ok(Page {
            items: page
                .into_iter()
                .map(|m| ns.member_view(&sessions, &|n, k| self.online_elsewhere(n, k), &names, m))
                .collect(),
            total,
            more,
        })
    }

    /// Resolves `node` to a member's key (see [`mesh_proto::admin`] for the forms).
    pub async fn resolve_member(&self, net: &str, node: &str) -> Result<Key, Error> {
        let st = self.state.lock().await;
        Ok(find_member(network(&st, net)?, node)?.public_key)
    }

    /// Changes one member with `edit` and commits; answers the member's new view. `edit`
    /// returns the audit log's `(action, detail)` for each thing it did.
    pub(super) async fn edit_member(
        &self,
        net: &str,
        node: &str,
        what: &str,
        edit: impl Fn(&NetState, &mut Member) -> Result<Vec<(&'static str, String)>, Error>,
    ) -> Result<MemberView, Error> {
        self.retrying(|| self.edit_member_once(net, node, what, &edit))
            .await
    }

    async fn edit_member_once(
        &self,
        net: &str,
        node: &str,
        what: &str,
        edit: &impl Fn(&NetState, &mut Member) -> Result<Vec<(&'static str, String)>, Error>,
    ) -> Result<MemberView, Error> {
        let view = {
            let mut st = self.state.lock().await;
            let ns = network(&st, net)?;
            let mut m = find_member(ns, node)?.clone();
            let actions = edit(ns, &mut m)?;
            let view = self.member_view(ns, &m);
            let key = m.public_key;
            let target = key.fingerprint();
            let audit = actions
                .into_iter()
                .map(|(action, detail)| self.audit_entry(action, net, &target, detail))
                .collect();
            self.commit(
                &mut st,
                net,
                Change {
                    put: vec![m],
                    audit,
                    ..Change::default()
                },
            )?;
            tracing::info!(network = %net, node = %key.fingerprint(), "member {what}");
            view
        };
        self.durable().await?;
        Ok(view)
    }

    /// `PATCH /api/networks/{net}/members/{node}`: rename, readdress, and/or set or clear
    /// (with an unspecified address) the public endpoint.
    pub async fn update_member(
        &self,
        net: &str,
        node: &str,
        req: UpdateMember,
    ) -> Result<MemberView, Error> {
        self.edit_member(net, node, "updated", |ns, m| {
            let mut actions = Vec::new();
            if let Some(name) = req.name.clone() {
                validate_member_name(&name)?;
                if let Some(other) = ns
                    .members
                    .values()
                    .find(|o| o.name == name && o.public_key != m.public_key)
                {
                    return Err(Error::Conflict(format!(
                        "name {name:?} is already used by member {}",
                        other.public_key.fingerprint()
                    )));
                }
                actions.push(("member.rename", format!("{} -> {name}", m.name)));
                m.name = name;
            }
            if let Some(IpAddr::V6(a6)) = req.address.filter(|_| ns.network.cidr6.is_some()) {
                let was = m.address6(&ns.network);
                check_address6(&ns.network, a6, &m.public_key, ns.members.values())
                    .map_err(Error::Conflict)?;
                let shown = was.map_or_else(|| "-".to_owned(), |w| w.to_string());
                actions.push(("member.set-address", format!("{shown} -> {a6}")));
                m.address6 = Some(a6);
            } else if let Some(address) = req.address {
                ipam::check_request(&ns.network.cidr, address, &ns.by_addr, &m.public_key)?;
                actions.push(("member.set-address", format!("{} -> {address}", m.address)));
                m.address = address;
            }
            if let Some(ep) = req.public_endpoint {
                m.public_endpoint = public_endpoint(ep)?;
                let detail = m
                    .public_endpoint
                    .map_or_else(|| "cleared".to_owned(), |e| e.to_string());
                actions.push(("member.set-endpoint", detail));
            }
            Ok(actions)
        })
        .await
    }

    /// `POST /api/networks/{net}/members/{node}/authorize`.
    pub async fn authorize(&self, net: &str, node: &str) -> Result<MemberView, Error> {
        self.edit_member(net, node, "authorized", |_, m| {
            m.authorized = true;
            Ok(vec![("member.authorize", m.name.clone())])
        })
        .await
    }

    /// `POST /api/networks/{net}/members/{node}/deauthorize`.
    pub async fn deauthorize(&self, net: &str, node: &str) -> Result<MemberView, Error> {
        self.edit_member(net, node, "deauthorized", |_, m| {
            m.authorized = false;
            Ok(vec![("member.deauthorize", m.name.clone())])
        })
        .await
    }

    /// `POST /api/networks/{net}/members/{node}/routes/{prefix}/approve`: the member may
    /// route `prefix` (effective while it advertises it). Idempotent; 409 when it overlaps
    /// the network's prefix or another member's approved route.
    pub async fn approve_route(
        &self,
        net: &str,
        node: &str,
        prefix: &str,
    ) -> Result<MemberView, Error> {
        let route = parse_route(prefix)?;
        self.edit_member(net, node, "route approved", |ns, m| {
            if let Some(why) =
                route_conflict(&ns.network, &m.public_key, &route, ns.members.values())
            {
                return Err(Error::Conflict(why));
            }
            if let Err(at) = m.approved_routes.binary_search(&route) {
                m.approved_routes.insert(at, route);
            }
            Ok(vec![("route.approve", route.to_string())])
        })
        .await
    }

    /// `DELETE /api/networks/{net}/members/{node}/routes/{prefix}`: withdraws an approval;
    /// 404 when it is not approved.
    pub async fn unapprove_route(
        &self,
        net: &str,
        node: &str,
        prefix: &str,
    ) -> Result<MemberView, Error> {
        let route = parse_route(prefix)?;
        self.edit_member(net, node, "route unapproved", |_, m| {
            let before = m.approved_routes.len();
            m.approved_routes.retain(|r| *r != route);
            if m.approved_routes.len() == before {
                return Err(Error::NotFound(format!(
                    "route {route} is not approved for member {}",
                    m.name
                )));
            }
            Ok(vec![("route.unapprove", route.to_string())])
        })
        .await
    }

    /// `DELETE /api/networks/{net}/members/{node}`: frees its address; a connected member
    /// is denied.
    pub async fn delete_member(&self, net: &str, node: &str) -> Result<(), Error> {
        self.retrying(|| self.delete_member_once(net, node)).await
    }

    async fn delete_member_once(&self, net: &str, node: &str) -> Result<(), Error> {
        {
            let mut st = self.state.lock().await;
            let m = find_member(network(&st, net)?, node)?;
            let key = m.public_key;
            let audit = vec![self.audit_entry(
                "member.delete",
                net,
                &key.fingerprint(),
                format!("{} ({})", m.name, m.address),
            )];
            self.commit(
                &mut st,
                net,
                Change {
                    delete: vec![key],
                    audit,
                    ..Change::default()
                },
            )?;
            tracing::info!(network = %net, node = %key.fingerprint(), "member deleted");
        }
        self.durable().await?;
        Ok(())
    }

    /// `GET /api/networks/{net}/tokens`, oldest first.
    pub async fn list_tokens(&self, net: &str) -> Result<Vec<TokenView>, Error> {
        let st = self.state.lock().await;
        network(&st, net)?;
        let mut views: Vec<TokenView> = st
            .tokens
            .values()
            .filter(|t| t.network == net)
            .map(Token::view)
            .collect();
        views.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(views)
    }

    /// `GET /api/networks/{net}/tokens?limit=&after=&q=` with `limit` or `after`: at most
    /// `limit` of the network's tokens whose id contains `search`, by id, strictly after
    /// `after` (any id: it need not exist).
    pub async fn list_tokens_page(
        &self,
        net: &str,
        search: Option<&Search>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<TokenView>, Error> {
        let st = self.state.lock().await;
        network(&st, net)?;
        let keep = |t: &&Token| t.network == net && search.is_none_or(|s| s.finds(&t.id));
        let total = st.tokens.values().filter(keep).count();
        let from = match after {
            Some(id) => Bound::Excluded(id),
            None => Bound::Unbounded,
        };
        let mut walk = st
            .tokens
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(_, t)| t)
            .filter(keep);
        let items = walk.by_ref().take(limit).map(Token::view).collect();
        let more = walk.next().is_some();
        Ok(Page { items, total, more })
    }

    /// `POST /api/networks/{net}/tokens`. The answer is the only place the secret ever
    /// appears; the store keeps its hash.
    pub async fn create_token(&self, net: &str, req: CreateToken) -> Result<TokenCreated, Error> {
        self.retrying(|| self.create_token_once(net, req.clone()))
            .await
    }

    async fn create_token_once(&self, net: &str, req: CreateToken) -> Result<TokenCreated, Error> {
        let now = self.now();
        let expires_at = match req.expires_in_secs {
            None => None,
            Some(s) if !(1..=MAX_EXPIRES_IN_SECS).contains(&s) => {
                return Err(Error::Invalid(format!(
                    "expires-in-secs must be 1..={MAX_EXPIRES_IN_SECS} (100 years), got {s}"
                )))
            }
            Some(s) => Some(
                now.checked_add(s)
                    .ok_or_else(|| Error::Invalid(format!("expires-in-secs {s} is too large")))?,
            ),
        };
        let tags: Vec<String> = super::policy::clean_tags(&req.tags)?.into_iter().collect();
        let secret = Key(random32().map_err(Error::Random)?);
        let created = {
            let mut st = self.state.lock().await;
            network(&st, net)?;
            let id = loop {
                let bytes = random32().map_err(Error::Random)?;
                let id: String = bytes[..6].iter().map(|b| format!("{b:02x}")).collect();
                if !st.tokens.contains_key(&id) {
                    break id;
                }
            };
            let token = Token {
                id: id.clone(),
                network: net.to_owned(),
                secret_hash: secret_hash(&secret),
                reusable: req.reusable,
                expires_at,
                revoked: false,
                uses: 0,
                created_at: now,
                tags,
            };
            let view = token.view();
            let mut detail = format!(
                "{}, expires {}",
                if req.reusable { "reusable" } else { "one-time" },
                expires_at.map_or_else(|| "never".to_owned(), |t| format!("at {t}"))
            );
            if !token.tags.is_empty() {
                detail.push_str(&format!(", tags {}", token.tags.join(",")));
            }
            let audit = vec![self.audit_entry("token.create", net, &token.id, detail)];
            self.commit(
                &mut st,
                net,
                Change {
                    tokens: vec![token],
                    audit,
                    ..Change::default()
                },
            )?;
            let join_token = JoinToken {
                coordinators: self.control_addresses(),
                pin: self.join.pin,
                network: net.to_owned(),
                secret: JoinSecret { id, secret },
            }
            .encode();
            TokenCreated {
                token: view,
                join_token,
            }
        };
        self.durable().await?;
        tracing::info!(network = %net, token = %created.token.id, reusable = req.reusable, "token created");
        Ok(created)
    }

    /// `DELETE /api/networks/{net}/tokens/{id}`: revokes (idempotent).
    pub async fn revoke_token(&self, net: &str, id: &str) -> Result<(), Error> {
        self.retrying(|| self.revoke_token_once(net, id)).await
    }

    async fn revoke_token_once(&self, net: &str, id: &str) -> Result<(), Error> {
        {
            let mut st = self.state.lock().await;
            network(&st, net)?;
            let mut token = st
                .tokens
                .get(id)
                .filter(|t| t.network == net)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("no token {id:?} in network {net:?}")))?;
            if token.revoked {
                return Ok(());
            }
            token.revoked = true;
            let audit = vec![self.audit_entry("token.revoke", net, id, String::new())];
            self.commit(
                &mut st,
                net,
                Change {
                    tokens: vec![token],
                    audit,
                    ..Change::default()
                },
            )?;
        }
        self.durable().await?;
        tracing::info!(network = %net, token = %id, "token revoked");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_endpoints() {
        let ep = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(public_endpoint(ep("0.0.0.0:0")).unwrap(), None);
        assert_eq!(public_endpoint(ep("[::]:0")).unwrap(), None);
        assert_eq!(public_endpoint(ep("0.0.0.0:51820")).unwrap(), None);
        assert_eq!(
            public_endpoint(ep("[::ffff:203.0.113.5]:51820")).unwrap(),
            Some(ep("203.0.113.5:51820"))
        );
        assert_eq!(
            public_endpoint(ep("[2001:db8::5]:1")).unwrap(),
            Some(ep("[2001:db8::5]:1"))
        );
        for bad in ["203.0.113.5:0", "224.0.0.1:51820", "255.255.255.255:1"] {
            assert!(
                matches!(public_endpoint(ep(bad)), Err(Error::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_in_any_base64() {
        let key = Key([0xfb; 32]);
        let std = key.to_base64();
        assert!(std.contains('+') || std.contains('/'));
        let url = std.replace('+', "-").replace('/', "_");
        assert_eq!(parse_any_key(&std), Some(key));
        assert_eq!(parse_any_key(&url), Some(key));
        assert_eq!(parse_any_key(url.trim_end_matches('=')), Some(key));
        assert_eq!(parse_any_key("web-1"), None);
    }
}
