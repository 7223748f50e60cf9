//! `meshctl admin`: the coordinator's admin API from the command line.
//!
//! Each command is one HTTP call ([`client`]), except `members`, which pages through a
//! large network [`MEMBERS_PAGE`] members at a time; the answer is printed as text (tables
//! for listings) or, with `--json`, as the API's own JSON, pretty-printed and otherwise
//! untouched (fields this meshctl does not know yet included; `members --json` is one
//! array of every page's members).

mod client;
mod tls;

use std::fmt::Write as _;
use std::io::{Read as _, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use mesh_proto::admin::{
    CreateNetwork, CreateToken, MemberView, NetworkView, TokenCreated, TokenView, UpdateMember,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::{
    AdminArgs, AdminCommand, JsonFlag, MemberArgs, NetworkCommand, PolicyCommand, TokenCommand,
};
use crate::duration;
use crate::local::io_reason;
use crate::table;
use client::{api_path, with_query, Client};
use mesh_proto::admin::{PolicyView, SetPolicy, SetTags, WhyView};

/// A token file is a line of text; anything bigger is the wrong file.
const MAX_TOKEN_FILE: u64 = 4096;

/// Members asked for per request by `meshctl admin members` (the API allows up to
/// [`mesh_proto::admin::MAX_PAGE`]).
pub const MEMBERS_PAGE: usize = 500;

/// Runs one admin command.
pub fn run(args: AdminArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let url = args.coordinator.as_deref().ok_or_else(|| {
        anyhow!("admin needs the coordinator's admin URL: give --coordinator URL or set MESHCTL_ADMIN_URL")
    })?;
    let file = args.token_file.as_deref().ok_or_else(|| {
        anyhow!(
            "admin needs the admin token: give --token-file FILE or set MESHCTL_ADMIN_TOKEN_FILE"
        )
    })?;
    let token = read_token(file).map_err(anyhow::Error::msg)?;
    let pin = client::pin_for(url, args.admin_pin.as_deref(), file).map_err(anyhow::Error::msg)?;
    let client = Client::new(url, &token, pin).map_err(anyhow::Error::msg)?;
    let text = command(&client, args.command, unix_now())?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// A document from `file`, `-` for standard input.
fn read_document(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| anyhow!("reading the policy from standard input: {}", io_reason(&e)))?;
        return Ok(s);
    }
    std::fs::read_to_string(file)
        .map_err(|e| anyhow!("reading {}: {}", file.display(), io_reason(&e)))
}

fn policy_summary(p: &PolicyView) -> String {
    match &p.document {
        None => "no policy: everything allowed between members".to_owned(),
        Some(_) => format!(
            "default {}, {} rule{}, {} test{} (all pass)",
            p.default,
            p.rules,
            if p.rules == 1 { "" } else { "s" },
            p.tests,
            if p.tests == 1 { "" } else { "s" }
        ),
    }
}

fn policy(client: &Client, command: PolicyCommand) -> anyhow::Result<String> {
    Ok(match command {
        PolicyCommand::Get { network, output } => {
            let answer = client.get(&api_path(&["networks", &network, "policy"]))?;
            show(output, answer, |p: PolicyView| match &p.document {
                Some(d) => d.clone(),
                None => format!("{}\n", policy_summary(&p)),
            })?
        }
        PolicyCommand::Set {
            network,
            file,
            output,
        } => {
            let document = read_document(&file)?;
            let answer = client.put(
                &api_path(&["networks", &network, "policy"]),
                &SetPolicy { document },
            )?;
            show(output, answer, |p: PolicyView| {
                format!("policy of {network} set: {}\n", policy_summary(&p))
            })?
        }
        PolicyCommand::Test {
            network,
            file,
            output,
        } => {
            let document = read_document(&file)?;
            let answer = client.post(
                &api_path(&["networks", &network, "policy", "check"]),
                Some(&SetPolicy { document }),
            )?;
            show(output, answer, |p: PolicyView| {
                format!("ok: {}; not set\n", policy_summary(&p))
            })?
        }
        PolicyCommand::Clear { network } => {
            client.delete_json(&api_path(&["networks", &network, "policy"]))?;
            format!("policy of {network} removed: everything allowed between members\n")
        }
        PolicyCommand::Why {
            network,
            from,
            to,
            port,
            output,
        } => {
            let path = with_query(
                &api_path(&["networks", &network, "policy", "why"]),
                &[("from", &from), ("to", &to), ("port", &port)],
            );
            let answer = client.get(&path)?;
            show(output, answer, |w: WhyView| match w.line {
                Some(line) => format!("{}: rule at line {line}: {}\n", w.action, w.rule),
                None => format!("{}: no rule matches, the default decides\n", w.action),
            })?
        }
    })
}

/// The admin token from `path`: one line, a trailing newline allowed. A token file others
/// can read gets a warning (meshd refuses such key files; a token can be re-read from the
/// coordinator's data dir, so here a warning is enough).
fn read_token(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| format!("reading the admin token from {shown}: {}", io_reason(&e)))?;
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode();
        if meta.is_file() && mode & 0o077 != 0 {
            eprintln!(
                "meshctl: warning: {shown} is accessible to group or others (mode {:04o}); chmod 600 it",
                mode & 0o7777
            );
        }
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the admin token from {shown}: {}", io_reason(&e)))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!(
            "{shown} is larger than {MAX_TOKEN_FILE} bytes; it does not hold an admin token"
        ));
    }
    let text = String::from_utf8(bytes).unwrap_or_default();
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "{shown} does not hold an admin token (it is empty)"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{shown} does not hold an admin token (one line of printable ASCII expected)"
        ));
    }
    Ok(token.to_owned())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `command` and returns what to print.
fn command(client: &Client, command: AdminCommand, now: u64) -> anyhow::Result<String> {
    let text = match command {
        AdminCommand::Network { command } => network(client, command)?,
        AdminCommand::Members {
            network,
            search,
            output,
        } => {
            let answer = all_members(client, &network, search.as_deref())?;
            show(output, answer, |members: Vec<MemberView>| {
                members_table(&members, now)
            })?
        }
        AdminCommand::Authorize(MemberArgs {
            network,
            node,
            output,
        }) => {
            let answer = client.post(
                &api_path(&["networks", &network, "members", &node, "authorize"]),
                None::<&()>,
            )?;
            show(output, answer, |m: MemberView| {
                format!(
                    "authorized {} ({}) in {network}, address {}\n",
                    m.name, m.fingerprint, m.address
                )
            })?
        }
        AdminCommand::Deauthorize(MemberArgs {
            network,
            node,
            output,
        }) => {
            let answer = client.post(
                &api_path(&["networks", &network, "members", &node, "deauthorize"]),
                None::<&()>,
            )?;
            show(output, answer, |m: MemberView| {
                format!("deauthorized {} ({}) in {network}\n", m.name, m.fingerprint)
            })?
        }
        AdminCommand::DeleteMember { network, node } => {
            client.delete(&api_path(&["networks", &network, "members", &node]))?;
            format!("deleted member {node} from {network}\n")
        }
        AdminCommand::Rename {
            network,
            node,
            new_name,
            output,
        } => {
            let body = UpdateMember {
                name: Some(new_name),
                address: None,
                ..Default::default()
            };
            let answer =
                client.patch(&api_path(&["networks", &network, "members", &node]), &body)?;
            show(output, answer, |m: MemberView| {
                format!("renamed {} to {} in {network}\n", m.fingerprint, m.name)
            })?
        }
        AdminCommand::SetAddress {
            network,
            node,
            ip,
            output,
        } => {
            let body = UpdateMember {
                name: None,
                address: Some(ip),
                ..Default::default()
            };
            let answer =
                client.patch(&api_path(&["networks", &network, "members", &node]), &body)?;
            show(output, answer, |m: MemberView| {
                format!(
                    "{} ({}) in {network} now has address {}\n",
                    m.name, m.fingerprint, m.address
                )
            })?
        }
        AdminCommand::SetEndpoint {
            network,
            node,
            endpoint,
            clear,
            output,
        } => {
            // The API clears the endpoint when given an unspecified address.
            let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
            let body = UpdateMember {
                public_endpoint: Some(endpoint.filter(|_| !clear).unwrap_or(unspecified)),
                ..Default::default()
            };
            let answer =
                client.patch(&api_path(&["networks", &network, "members", &node]), &body)?;
            show(output, answer, |m: MemberView| match m.public_endpoint {
                Some(ep) => format!(
                    "{} ({}) in {network} now has public endpoint {ep}\n",
                    m.name, m.fingerprint
                ),
                None => format!(
                    "{} ({}) in {network} has no public endpoint\n",
                    m.name, m.fingerprint
                ),
            })?
        }
        AdminCommand::Token { command } => token(client, command, now)?,
        AdminCommand::Policy { command } => policy(client, command)?,
        AdminCommand::Tag {
            network,
            node,
            tags,
            output,
        } => {
            let answer = client.put(
                &api_path(&["networks", &network, "members", &node, "tags"]),
                &SetTags { tags },
            )?;
            show(output, answer, |m: MemberView| {
                if m.tags.is_empty() {
                    format!("{} in {network} has no tags\n", m.name)
                } else {
                    format!("{} in {network}: {}\n", m.name, m.tags.join(" "))
                }
            })?
        }
        AdminCommand::Route(command) => route(client, command)?,
    };
    Ok(text)
}

/// Every member of `network` (those `search` finds, if given) as one JSON array, asked for
/// [`MEMBERS_PAGE`] at a time: each request continues after the last key of the previous
/// page, and a shorter page is the last. A page that brings no member not seen before also
/// ends it (a coordinator that does not page answers everything every time).
fn all_members(client: &Client, network: &str, search: Option<&str>) -> anyhow::Result<Value> {
    let path = api_path(&["networks", network, "members"]);
    let limit = MEMBERS_PAGE.to_string();
    let mut all: Vec<Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", limit.as_str())];
        if let Some(key) = &after {
            query.push(("after", key));
        }
        if let Some(q) = search {
            query.push(("q", q));
        }
        let Value::Array(page) = client.get(&with_query(&path, &query))? else {
            return Err(anyhow!(
                "the coordinator answered with an unexpected body: not a list of members"
            ));
        };
        let full = page.len() == MEMBERS_PAGE;
        let mut new = false;
        for member in page {
            let key = member
                .get("public-key")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    anyhow!("the coordinator answered with an unexpected body: a member without a public-key")
                })?;
            if seen.insert(key.clone()) {
                new = true;
                after = Some(key);
                all.push(member);
            }
        }
        if !full || !new {
            return Ok(Value::Array(all));
        }
    }
}

fn network(client: &Client, command: NetworkCommand) -> anyhow::Result<String> {
    Ok(match command {
        NetworkCommand::Create {
            name,
            cidr,
            mtu,
            keepalive,
            dns_domain,
            cidr6,
            output,
        } => {
            let body = CreateNetwork {
                cidr6,
                name,
                cidr,
                mtu,
                keepalive,
                dns_domain,
            };
            let answer = client.post(&api_path(&["networks"]), Some(&body))?;
            show(output, answer, |n: NetworkView| {
                format!(
                    "created network {}: {}{}, mtu {}, keepalive {}\n",
                    n.name,
                    n.cidr,
                    n.cidr6.map(|c| format!(" and {c}")).unwrap_or_default(),
                    n.mtu,
                    keepalive_text(n.keepalive)
                )
            })?
        }
        NetworkCommand::List { output } => {
            let answer = client.get(&api_path(&["networks"]))?;
            show(output, answer, |networks: Vec<NetworkView>| {
                networks_table(&networks)
            })?
        }
        NetworkCommand::Show { name, output } => {
            let answer = client.get(&api_path(&["networks", &name]))?;
            show(output, answer, |n: NetworkView| network_text(&n))?
        }
        NetworkCommand::Delete { name } => {
            client.delete(&api_path(&["networks", &name]))?;
            format!("deleted network {name}\n")
        }
    })
}

fn token(client: &Client, command: TokenCommand, now: u64) -> anyhow::Result<String> {
    Ok(match command {
        TokenCommand::Create {
            network,
            reusable,
            expires,
            tags,
            output,
        } => {
            let body = CreateToken {
                reusable,
                expires_in_secs: expires.map(|d| d.as_secs()),
                tags,
            };
            let answer = client.post(&api_path(&["networks", &network, "tokens"]), Some(&body))?;
            show(output, answer, |created: TokenCreated| {
                token_created_text(&created, now)
            })?
        }
        TokenCommand::List { network, output } => {
            let answer = client.get(&api_path(&["networks", &network, "tokens"]))?;
            show(output, answer, |tokens: Vec<TokenView>| {
                tokens_table(&tokens, now)
            })?
        }
        TokenCommand::Revoke { network, id } => {
            client.delete(&api_path(&["networks", &network, "tokens", &id]))?;
            format!("revoked token {id} of {network}\n")
        }
    })
}

/// The API's JSON as is (`--json`), or `text` of it decoded as `T`.
fn show<T: DeserializeOwned>(
    output: JsonFlag,
    answer: Value,
    text: impl FnOnce(T) -> String,
) -> anyhow::Result<String> {
    if output.json {
        let mut s = serde_json::to_string_pretty(&answer)?;
        s.push('\n');
        return Ok(s);
    }
    let value: T = serde_json::from_value(answer)
        .map_err(|e| anyhow!("the coordinator answered with an unexpected body: {e}"))?;
    Ok(text(value))
}

fn keepalive_text(secs: u16) -> String {
    if secs == 0 {
        "off".to_owned()
    } else {
        format!("{secs}s")
    }
}

fn networks_table(networks: &[NetworkView]) -> String {
    // CIDR6 only when some network is dual-stack.
    let dual = networks.iter().any(|n| n.cidr6.is_some());
    let rows: Vec<Vec<String>> = networks
        .iter()
        .map(|n| {
            let mut row = vec![n.name.clone(), n.cidr.to_string()];
            if dual {
                row.push(n.cidr6.map_or_else(|| "-".to_owned(), |c| c.to_string()));
            }
            row.extend([
                n.mtu.to_string(),
                keepalive_text(n.keepalive),
                n.members.to_string(),
                n.version.to_string(),
            ]);
            row
        })
        .collect();
    let mut headers = vec!["NAME", "CIDR"];
    if dual {
        headers.push("CIDR6");
    }
    headers.extend(["MTU", "KEEPALIVE", "MEMBERS", "VERSION"]);
    table::render(&headers, &rows)
}

fn network_text(n: &NetworkView) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "network: {}", n.name);
    let _ = writeln!(s, "  cidr: {}", n.cidr);
    if let Some(cidr6) = n.cidr6 {
        let _ = writeln!(s, "  cidr6: {cidr6}");
    }
    let _ = writeln!(s, "  mtu: {}", n.mtu);
    let _ = writeln!(s, "  keepalive: {}", keepalive_text(n.keepalive));
    // A coordinator before names (issue 14) sends no domain.
    if !n.dns_domain.is_empty() {
        let _ = writeln!(s, "  dns: <name>.{}.{}", n.name, n.dns_domain);
    }
    let _ = writeln!(s, "  members: {}", n.members);
    let _ = writeln!(s, "  netmap version: {}", n.version);
    s
}

fn members_table(members: &[MemberView], now: u64) -> String {
    // The PATHS column only when some member reported paths (`--json` has them per peer).
    let paths = members.iter().any(|m| !m.paths.is_empty());
    // TAGS and FILTER only when some member has tags or runs a policy filter.
    let tags = members.iter().any(|m| !m.tags.is_empty());
    let filters = members.iter().any(|m| m.filter.is_some());
    // IPV6 only in a dual-stack network.
    let ipv6 = members.iter().any(|m| m.address6.is_some());
    // DNS only when some member's name in DNS is not its name: normalised to a DNS label,
    // or given a suffix because another member has the same label.
    let dns = members.iter().any(|m| {
        m.dns_name
            .as_deref()
            .is_some_and(|d| d.split('.').next() != Some(m.name.as_str()))
    });
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let mut row = vec![m.name.clone(), m.fingerprint.clone(), m.address.to_string()];
            if ipv6 {
                row.push(m.address6.map_or_else(|| "-".to_owned(), |a| a.to_string()));
            }
            row.extend([
                table::yes_no(m.authorized),
                table::yes_no(m.online),
                m.last_seen
                    .map_or_else(|| "never".to_owned(), |t| duration::ago(t, now)),
                m.version.clone(),
            ]);
            if dns {
                row.push(m.dns_name.clone().unwrap_or_else(|| "-".to_owned()));
            }
            if paths {
                row.push(paths_text(m));
            }
            if tags {
                row.push(if m.tags.is_empty() {
                    "-".to_owned()
                } else {
                    m.tags.join(",")
                });
            }
            if filters {
                row.push(filter_text(m));
            }
            row.push(routes_text(m));
            row
        })
        .collect();
    let mut headers = vec!["NAME", "FINGERPRINT", "ADDRESS"];
    if ipv6 {
        headers.push("IPV6");
    }
    headers.extend(["AUTHORIZED", "ONLINE", "LAST SEEN", "VERSION"]);
    if dns {
        headers.push("DNS");
    }
    if paths {
        headers.push("PATHS");
    }
    if tags {
        headers.push("TAGS");
    }
    if filters {
        headers.push("FILTER");
    }
    headers.push("ROUTES");
    table::render(&headers, &rows)
}

/// Whether a member enforces the policy filter it was sent: `current`, `pending` (sent,
/// not yet confirmed), `FAILED (reason)` (it fails closed), or `-` (none).
fn filter_text(m: &MemberView) -> String {
    match &m.filter {
        None => "-".to_owned(),
        Some(f) => match &f.error {
            Some(e) => format!("FAILED ({e})"),
            None if f.current => "current".to_owned(),
            None => "pending".to_owned(),
        },
    }
}

/// A member's reported paths in one cell, counted by kind (`2 direct, 1 relayed`); `-`
/// for none.
fn paths_text(m: &MemberView) -> String {
    let counts: Vec<String> = ["direct", "relayed", "none"]
        .iter()
        .filter_map(|kind| {
            let n = m.paths.iter().filter(|p| p.path == *kind).count();
            (n > 0).then(|| format!("{n} {kind}"))
        })
        .collect();
    if counts.is_empty() {
        "-".to_owned()
    } else {
        counts.join(", ")
    }
}

/// A member's routes in one cell: approved and advertised ones as they are (in effect),
/// advertised ones awaiting approval marked `(unapproved)`, approved ones the node does not
/// advertise marked `(not advertised)`; `-` for none.
fn routes_text(m: &MemberView) -> String {
    let mut all: Vec<_> = m
        .advertised_routes
        .iter()
        .chain(&m.approved_routes)
        .copied()
        .collect();
    all.sort();
    all.dedup();
    if all.is_empty() {
        return "-".to_owned();
    }
    all.iter()
        .map(|r| {
            match (
                m.advertised_routes.contains(r),
                m.approved_routes.contains(r),
            ) {
                (true, true) => r.to_string(),
                (true, false) => format!("{r} (unapproved)"),
                _ => format!("{r} (not advertised)"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `meshctl admin approve-route` / `unapprove-route`: one call each; answers what to print.
pub fn route(client: &Client, command: RouteCommand) -> anyhow::Result<String> {
    let (approve, args) = match command {
        RouteCommand::ApproveRoute(args) => (true, args),
        RouteCommand::UnapproveRoute(args) => (false, args),
    };
    let RouteArgs {
        network,
        node,
        prefix,
        output,
    } = args;
    let prefix = prefix.to_string();
    let answer = if approve {
        client.post(
            &api_path(&[
                "networks", &network, "members", &node, "routes", &prefix, "approve",
            ]),
            None::<&()>,
        )?
    } else {
        client.delete_json(&api_path(&[
            "networks", &network, "members", &node, "routes", &prefix,
        ]))?
    };
    show(output, answer, |m: MemberView| {
        let verb = if approve { "approved" } else { "unapproved" };
        let note = if approve && !m.advertised_routes.iter().any(|r| r.to_string() == prefix) {
            " (not advertised by the node yet: peers get it once it is)"
        } else {
            ""
        };
        format!(
            "{verb} route {prefix} for {} ({}) in {network}{note}\nroutes: {}\n",
            m.name,
            m.fingerprint,
            routes_text(&m)
        )
    })
}

/// Route commands under `meshctl admin`.
#[derive(Debug, clap::Subcommand)]
pub enum RouteCommand {
    /// Approve a prefix a member advertises (e.g. its pod CIDR): peers route it to the
    /// member while it advertises it.
    ApproveRoute(RouteArgs),
    /// Withdraw a route approval: peers drop the route.
    UnapproveRoute(RouteArgs),
}

/// `NETWORK NODE PREFIX [--json]`.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// The network.
    pub network: String,
    /// The member: its name, public key or fingerprint (8+ characters of the key).
    pub node: String,
    /// The prefix, e.g. 10.244.3.0/24 (no host bits).
    pub prefix: ipnet::IpNet,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `active`, `revoked`, `expired` or `used` (a one-time token that admitted its node).
fn token_state(t: &TokenView, now: u64) -> &'static str {
    if t.revoked {
        "revoked"
    } else if t.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else if !t.reusable && t.uses > 0 {
        "used"
    } else {
        "active"
    }
}

fn tokens_table(tokens: &[TokenView], now: u64) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                if t.reusable { "reusable" } else { "one-time" }.to_owned(),
                token_state(t, now).to_owned(),
                t.uses.to_string(),
                t.expires_at
                    .map_or_else(|| "never".to_owned(), duration::utc),
                duration::utc(t.created_at),
            ]
        })
        .collect();
    table::render(
        &["ID", "KIND", "STATE", "USES", "EXPIRES", "CREATED"],
        &rows,
    )
}

/// The id and expiry, then the token alone on the last line (`… | tail -1`).
fn token_created_text(created: &TokenCreated, now: u64) -> String {
    let t = &created.token;
    let kind = if t.reusable { "reusable" } else { "one-time" };
    let expires = match t.expires_at {
        Some(at) => format!(
            "{} (in {})",
            duration::utc(at),
            duration::short(at.saturating_sub(now))
        ),
        None => "never".to_owned(),
    };
    format!(
        "token id: {} ({kind}, network {})\nexpires: {expires}\n{}\n",
        t.id, t.network, created.join_token
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn member(name: &str, authorized: bool, online: bool, last_seen: Option<u64>) -> MemberView {
        MemberView {
            address6: None,
            public_key: "m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs="
                .parse()
                .unwrap(),
            fingerprint: "m9OJrAFV".to_owned(),
            name: name.to_owned(),
            address: "10.9.8.3".parse().unwrap(),
            authorized,
            online,
            last_seen,
            version: "0.1.0".to_owned(),
            endpoints: vec![],
            public_endpoint: None,
            advertised_routes: vec![],
            approved_routes: vec![],
            paths: vec![],
            tags: vec![],
            filter: None,
            dns_name: None,
        }
    }

    #[test]
    fn members_render() {
        let now = 1_795_382_116;
        let text = members_table(
            &[
                member("web-1", true, true, Some(now - 12)),
                member("db", false, false, None),
            ],
            now,
        );
        assert_eq!(
            text,
            "\
NAME   FINGERPRINT  ADDRESS   AUTHORIZED  ONLINE  LAST SEEN  VERSION  ROUTES
web-1  m9OJrAFV     10.9.8.3  yes         yes     12s ago    0.1.0    -
db     m9OJrAFV     10.9.8.3  no          no      never      0.1.0    -
"
        );
    }

    #[test]
    fn members_render_dns_names_when_they_differ_from_names() {
        let now = 1_795_382_116;
        let named = |name: &str, dns: Option<&str>| {
            let mut m = member(name, dns.is_some(), true, Some(now - 12));
            m.dns_name = dns.map(str::to_owned);
            m
        };
        // Every name is its label: no column.
        let plain = members_table(&[named("web-1", Some("web-1.lab.mesh.internal"))], now);
        assert!(!plain.contains("DNS"), "{plain}");
        // A collision, and a name that is no DNS label: the column shows what resolves.
        let text = members_table(
            &[
                named("web-1", Some("web-1.lab.mesh.internal")),
                named("Web_1", Some("web-1-k6bc.lab.mesh.internal")),
                named("db", None),
            ],
            now,
        );
        assert_eq!(
            text,
            "\
NAME   FINGERPRINT  ADDRESS   AUTHORIZED  ONLINE  LAST SEEN  VERSION  DNS                           ROUTES
web-1  m9OJrAFV     10.9.8.3  yes         yes     12s ago    0.1.0    web-1.lab.mesh.internal       -
Web_1  m9OJrAFV     10.9.8.3  yes         yes     12s ago    0.1.0    web-1-k6bc.lab.mesh.internal  -
db     m9OJrAFV     10.9.8.3  no          yes     12s ago    0.1.0    -                             -
"
        );
    }

    #[test]
    fn members_render_paths_when_reported() {
        let now = 1_795_382_116;
        let path = |name: &str, path: &str| mesh_proto::admin::PeerPathView {
            peer: "AbCdEfGh".to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            rtt_ms: None,
        };
        let mut web = member("web-1", true, true, Some(now - 12));
        web.paths = vec![
            path("db", "direct"),
            path("cache", "relayed"),
            path("api", "direct"),
        ];
        let text = members_table(&[web, member("db", false, false, None)], now);
        assert_eq!(
            text,
            "\
NAME   FINGERPRINT  ADDRESS   AUTHORIZED  ONLINE  LAST SEEN  VERSION  PATHS                ROUTES
web-1  m9OJrAFV     10.9.8.3  yes         yes     12s ago    0.1.0    2 direct, 1 relayed  -
db     m9OJrAFV     10.9.8.3  no          no      never      0.1.0    -                    -
"
        );
    }

    #[test]
    fn members_render_tags_and_filters_when_there_are_any() {
        let now = 1_795_382_116;
        let filter = |current: bool, error: Option<&str>| mesh_proto::admin::FilterView {
            sent: Some("00aa".to_owned()),
            reported: Some(if current { "00aa" } else { "11bb" }.to_owned()),
            current,
            error: error.map(str::to_owned),
        };
        let mut web = member("web-1", true, true, Some(now - 12));
        web.tags = vec!["control".to_owned(), "worker".to_owned()];
        web.filter = Some(filter(true, None));
        let mut db = member("db", true, true, Some(now - 1));
        db.filter = Some(filter(false, None));
        let mut ops = member("ops", true, true, Some(now - 1));
        ops.filter = Some(filter(false, Some("bad update")));
        let off = member("off", false, false, None);
        let text = members_table(&[web, db, ops, off], now);
        assert_eq!(
            text,
            "\
NAME   FINGERPRINT  ADDRESS   AUTHORIZED  ONLINE  LAST SEEN  VERSION  TAGS            FILTER               ROUTES
web-1  m9OJrAFV     10.9.8.3  yes         yes     12s ago    0.1.0    control,worker  current              -
db     m9OJrAFV     10.9.8.3  yes         yes     1s ago     0.1.0    -               pending              -
ops    m9OJrAFV     10.9.8.3  yes         yes     1s ago     0.1.0    -               FAILED (bad update)  -
off    m9OJrAFV     10.9.8.3  no          no      never      0.1.0    -               -                    -
"
        );
    }

    #[test]
    fn routes_render() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        let mut m = member("web-1", true, true, None);
        m.advertised_routes = vec![net("10.244.3.0/24"), net("10.244.4.0/24")];
        m.approved_routes = vec![net("10.244.3.0/24"), net("10.250.0.0/16")];
        assert_eq!(
            routes_text(&m),
            "10.244.3.0/24, 10.244.4.0/24 (unapproved), 10.250.0.0/16 (not advertised)"
        );
    }

    #[test]
    fn route_commands_parse() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: RouteCommand,
        }
        let cli =
            Cli::try_parse_from(["x", "approve-route", "lab", "web-1", "10.244.3.0/24"]).unwrap();
        assert!(matches!(cli.command, RouteCommand::ApproveRoute(ref a)
            if a.prefix == net("10.244.3.0/24") && !a.output.json));
        let cli = Cli::try_parse_from([
            "x",
            "unapprove-route",
            "lab",
            "web-1",
            "10.244.3.0/24",
            "--json",
        ])
        .unwrap();
        assert!(matches!(cli.command, RouteCommand::UnapproveRoute(ref a) if a.output.json));
        assert!(Cli::try_parse_from(["x", "approve-route", "lab", "web-1", "10.244.3"]).is_err());

        fn net(s: &str) -> ipnet::IpNet {
            s.parse().unwrap()
        }
    }

    fn token(
        id: &str,
        reusable: bool,
        expires_at: Option<u64>,
        revoked: bool,
        uses: u64,
    ) -> TokenView {
        TokenView {
            id: id.to_owned(),
            network: "lab".to_owned(),
            reusable,
            expires_at,
            revoked,
            uses,
            created_at: 1_795_295_716,
            tags: vec![],
        }
    }

    #[test]
    fn tokens_render() {
        let now = 1_795_382_116;
        let text = tokens_table(
            &[
                token("a1", false, None, false, 0),
                token("b2", true, Some(now + 86400), false, 7),
                token("c3", true, Some(now), false, 0),
                token("d4", false, None, false, 1),
                token("e5", true, None, true, 0),
            ],
            now,
        );
        assert_eq!(
            text,
            "\
ID  KIND      STATE    USES  EXPIRES                  CREATED
a1  one-time  active   0     never                    2026-11-21 21:15:16 UTC
b2  reusable  active   7     2026-11-23 21:15:16 UTC  2026-11-21 21:15:16 UTC
c3  reusable  expired  0     2026-11-22 21:15:16 UTC  2026-11-21 21:15:16 UTC
d4  one-time  used     1     never                    2026-11-21 21:15:16 UTC
e5  reusable  revoked  0     never                    2026-11-21 21:15:16 UTC
"
        );
        let created = TokenCreated {
            token: token("b2", false, Some(now + 86400), false, 0),
            join_token: "wm1_abc".to_owned(),
        };
        assert_eq!(
            token_created_text(&created, now),
            "token id: b2 (one-time, network lab)\nexpires: 2026-11-23 21:15:16 UTC (in 1d)\nwm1_abc\n"
        );
    }

    #[test]
    fn networks_render() {
        let n = NetworkView {
            cidr6: None,
            name: "lab".to_owned(),
            cidr: "10.9.8.0/24".parse().unwrap(),
            mtu: 1280,
            keepalive: 0,
            members: 3,
            version: 7,
            dns_domain: "mesh.internal".to_owned(),
        };
        assert_eq!(
            networks_table(std::slice::from_ref(&n)),
            "NAME  CIDR         MTU   KEEPALIVE  MEMBERS  VERSION\nlab   10.9.8.0/24  1280  off        3        7\n"
        );
        assert_eq!(
            network_text(&n),
            "network: lab\n  cidr: 10.9.8.0/24\n  mtu: 1280\n  keepalive: off\n  dns: <name>.lab.mesh.internal\n  members: 3\n  netmap version: 7\n"
        );
        let dual = NetworkView {
            cidr6: Some("fd5e:1f2a:9c00::/64".parse().unwrap()),
            ..n.clone()
        };
        assert_eq!(
            networks_table(&[dual.clone(), n]),
            "\
NAME  CIDR         CIDR6                MTU   KEEPALIVE  MEMBERS  VERSION
lab   10.9.8.0/24  fd5e:1f2a:9c00::/64  1280  off        3        7
lab   10.9.8.0/24  -                    1280  off        3        7
"
        );
        assert!(network_text(&dual).contains("\n  cidr6: fd5e:1f2a:9c00::/64\n"));
    }

    #[test]
    fn members_render_ipv6_in_dual_stack_networks() {
        let now = 1_795_382_116;
        let mut web = member("web-1", true, true, Some(now - 12));
        web.address6 = Some("fd5e:1f2a:9c00::3".parse().unwrap());
        let text = members_table(&[web], now);
        assert_eq!(
            text,
            "\
NAME   FINGERPRINT  ADDRESS   IPV6               AUTHORIZED  ONLINE  LAST SEEN  VERSION  ROUTES
web-1  m9OJrAFV     10.9.8.3  fd5e:1f2a:9c00::3  yes         yes     12s ago    0.1.0    -
"
        );
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        for (content, want) in [
            ("s3cret\n", Ok("s3cret")),
            ("s3cret", Ok("s3cret")),
            ("  s3cret\r\n\n", Ok("s3cret")),
            ("\n", Err("does not hold an admin token (it is empty)")),
            (
                "two words\n",
                Err("does not hold an admin token (one line of printable ASCII expected)"),
            ),
        ] {
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            match (read_token(&path), want) {
                (Ok(token), Ok(want)) => assert_eq!(token, want),
                (Err(err), Err(want)) => assert_eq!(err, format!("{} {want}", path.display())),
                (got, want) => panic!("{content:?}: got {got:?}, want {want:?}"),
            }
        }
        std::fs::write(&path, "x".repeat(5000)).unwrap();
        assert!(read_token(&path)
            .unwrap_err()
            .ends_with("is larger than 4096 bytes; it does not hold an admin token"));
        let missing = dir.path().join("nope");
        assert_eq!(
            read_token(&missing).unwrap_err(),
            format!(
                "reading the admin token from {}: No such file or directory",
                missing.display()
            )
        );
    }
}
