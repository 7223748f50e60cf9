//! What the admin API's inputs may be, as the document's JSON Schema constraints, so that a
//! client generated from it cannot send what the handlers refuse; and the links from one
//! operation's answer to the next operation's parameters, so that a tool that walks the
//! document reaches real networks, members and tokens instead of guessing names.
//!
//! The `utoipa::path` annotations give the shape (types, required fields, statuses);
//! [`apply`] adds, in one place, what a schema type cannot say:
//!
//! | input | rule (the handler's) | in the document |
//! |---|---|---|
//! | `{net}`, `CreateNetwork.name` | 1..=32 of `[a-z0-9-]`, not starting with `-` | [`NETWORK_NAME`] |
//! | `{node}` | a name, a key (base64 or base64url) or a key prefix: 1..=63 of `[A-Za-z0-9._+/=-]` | [`MEMBER_REF`] |
//! | `UpdateMember.name` | 1..=63 of `[A-Za-z0-9._-]` | [`MEMBER_NAME`] |
//! | `{id}`, tokens' `after` | 1..=64 of `[A-Za-z0-9_-]` | [`TOKEN_ID`] |
//! | members' `after` | a 32-byte key, base64 or base64url, padding optional, a space for `+` | [`KEY`] |
//! | `{prefix}` | a CIDR prefix without host bits | [`route`] |
//! | `CreateNetwork.cidr` | a CIDR prefix, IPv4 /0../30, IPv6 /0../126 | [`network_cidr`] |
//! | `UpdateMember.address` | an IP address (inside the network: else 409) | [`ip_address`] |
//! | `UpdateMember.public-endpoint` | `IP:port`, unicast, port 1.. (or an unspecified address: clears) | [`endpoint`] |
//! | `CreateNetwork.mtu`, `keepalive` | 576..=65535, 0..=65535 | minimum, maximum |
//! | `CreateNetwork.cidr6` | `off`, or an IPv6 prefix /0../96 (room for any IPv4 network's host parts; host bits cleared; beside an IPv6 `cidr`: 409) | [`network_cidr6`] |
//! | `CreateNetwork.dns-domain` | dot-separated labels of letters, digits and inner `-` (1..=63 each), 1..=120 in all (`mesh_proto::dns::check_domain`) | [`DNS_DOMAIN`], maxLength |
//! | `CreateToken.expires-in-secs` | 1..=[`MAX_EXPIRES_IN_SECS`] | minimum, maximum |
//! | `limit` (lists, audit) | 1..=1000, 1..=10000 | minimum, maximum (in the annotations) |
//! | `q` | at most 256 characters | maxLength (in the annotations) |
//! | bodies | JSON objects with only the listed fields | `additionalProperties: false` |
//!
//! Where a regular expression can say the rule, the pattern is the rule exactly. Addresses
//! are the exception: the patterns take IPv4 in dotted decimal without leading zeros and
//! IPv6 without an embedded IPv4 part, and a route's or endpoint's IPv6 address only in the
//! spellings listed at [`route`] and [`endpoint`]; the server also takes the other
//! spellings of the same values. So everything the document allows is accepted (the unit
//! tests draw values from every pattern and send them to the handlers), and what it
//! forbids is refused, but for those other spellings.
//!
//! Values that are well-formed but clash with the state (an address outside the network or
//! already taken, a route overlapping another, a duplicate name) answer 409, never 400: a
//! schema cannot know the state.

use mesh_proto::admin::MAX_EXPIRES_IN_SECS;
use serde_json::{json, Map, Value};

/// A network name.
pub const NETWORK_NAME: &str = "^[a-z0-9][a-z0-9-]{0,31}$";
/// `CreateNetwork.dns-domain` (with maxLength [`mesh_proto::dns::MAX_DOMAIN`]).
pub const DNS_DOMAIN: &str = "^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$";
/// A member name an admin sets.
pub const MEMBER_NAME: &str = "^[A-Za-z0-9._-]{1,63}$";
/// `{node}`: a member name, public key (standard base64 or base64url, padding optional)
/// or unique key prefix of at least 8 characters.
pub const MEMBER_REF: &str = "^[A-Za-z0-9._+/=-]{1,63}$";
/// Longest `{node}`.
pub const MAX_MEMBER_REF: usize = 63;
/// A token id (ids are 12 hex digits; any id-like string is a valid cursor).
pub const TOKEN_ID: &str = "^[A-Za-z0-9_-]{1,64}$";
/// Longest token id accepted.
pub const MAX_TOKEN_ID: usize = 64;
/// A public key, standard base64 or base64url, padding optional: 43 characters of which
/// the last holds 2 bits of padding (so it is one of 16), then an optional `=`.
/// A space stands for a `+` (which a query string turns into a space when not escaped).
pub const KEY: &str = "^[A-Za-z0-9+/_ -]{42}[AEIMQUYcgkosw048]=?$";

/// An IPv4 octet without leading zeros (Rust's parser refuses them).
const OCTET: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
/// An IPv6 group.
const GROUP: &str = "[0-9a-fA-F]{1,4}";

/// An IPv4 address, dotted decimal.
fn ipv4() -> String {
    format!(r"{OCTET}(?:\.{OCTET}){{3}}")
}

/// An IPv6 address in any spelling without an embedded IPv4 part: eight groups, or fewer
/// around one `::`.
fn ipv6() -> String {
    let g = GROUP;
    let forms = [
        format!("(?:{g}:){{7}}{g}"),
        format!("(?:{g}:){{1,7}}:"),
        format!("(?:{g}:){{1,6}}:{g}"),
        format!("(?:{g}:){{1,5}}(?::{g}){{1,2}}"),
        format!("(?:{g}:){{1,4}}(?::{g}){{1,3}}"),
        format!("(?:{g}:){{1,3}}(?::{g}){{1,4}}"),
        format!("(?:{g}:){{1,2}}(?::{g}){{1,5}}"),
        format!("{g}:(?::{g}){{1,6}}"),
        format!(":(?:(?::{g}){{1,7}}|:)"),
    ];
    format!("(?:{})", forms.join("|"))
}

/// A prefix length `0..=max` without leading zeros.
fn prefix_len(max: u8) -> String {
    let alternatives: Vec<String> = (0..=max).rev().map(|n| n.to_string()).collect();
    format!("(?:{})", alternatives.join("|"))
}

/// `UpdateMember.address`: an IPv4 or IPv6 address.
pub fn ip_address() -> String {
    format!("^(?:{}|{})$", ipv4(), ipv6())
}

/// `CreateNetwork.cidr`: an overlay prefix with room for two members (IPv4 /30 or shorter,
/// IPv6 /126 or shorter); host bits are cleared.
pub fn network_cidr() -> String {
    format!(
        "^(?:{}/{}|{}/{})$",
        ipv4(),
        prefix_len(30),
        ipv6(),
        prefix_len(126)
    )
}

/// `CreateNetwork.cidr6`: `off`, or an IPv6 prefix with at least 32 host bits.
pub fn network_cidr6() -> String {
    format!("^(?:off|{}/{})$", ipv6(), prefix_len(96))
}

/// The decimal values of `bits` leading bits of an octet, the rest zero.
fn octets_with_leading_bits(bits: u32) -> String {
    let step = 1u32 << (8 - bits);
    let values: Vec<String> = (0..256 / step)
        .rev()
        .map(|i| (i * step).to_string())
        .collect();
    format!("(?:{})", values.join("|"))
}

/// A 16-bit group of four hex digits whose last `zeros` bits are zero.
fn group_with_trailing_zeros(zeros: u32) -> String {
    let (nibbles, bits) = (zeros / 4, zeros % 4);
    let mut s = String::new();
    let free = 4 - nibbles - u32::from(bits > 0);
    if free > 0 {
        s.push_str(&format!("[0-9a-f]{{{free}}}"));
    }
    s.push_str(match bits {
        1 => "[02468ace]",
        2 => "[048c]",
        3 => "[08]",
        _ => "",
    });
    s.push_str(&"0".repeat(nibbles as usize));
    s
}

/// `{prefix}`: a route, a CIDR prefix without host bits. IPv4 in every spelling; IPv6 as
/// the groups that hold its prefix bits, the last of them in four lowercase digits, then
/// `::` unless all eight are given (`fd00::/8`, `2001:db8:0:10::/60`, `::/0`).
pub fn route() -> String {
    let mut alternatives = Vec::new();
    for len in 0..=32u32 {
        let (full, bits) = ((len / 8) as usize, len % 8);
        let mut octets = vec![OCTET.to_owned(); full];
        if full < 4 {
            octets.push(if bits == 0 {
                "0".to_owned()
            } else {
                octets_with_leading_bits(bits)
            });
            octets.resize(4, "0".to_owned());
        }
        alternatives.push(format!(r"{}/{len}", octets.join(r"\.")));
    }
    alternatives.push("::/0".to_owned());
    for len in 1..=128u32 {
        let groups = len.div_ceil(16);
        let last = group_with_trailing_zeros(groups * 16 - len);
        let lead = match groups - 1 {
            0 => String::new(),
            n => format!("(?:{GROUP}:){{{n}}}"),
        };
        let tail = if groups < 8 { "::" } else { "" };
        alternatives.push(format!("{lead}{last}{tail}/{len}"));
    }
    format!("^(?:{})$", alternatives.join("|"))
}

/// The example policy document: the README's cluster (see docs/policy.md).
pub const EXAMPLE_POLICY: &str = "default = \"deny\"\n\n\
[groups]\ncluster = [\"tag:control\", \"tag:worker\"]\n\n\
[[rule]]\nfrom = [\"group:cluster\"]\nto = [\"group:cluster\"]\n\n\
[[rule]]\nfrom = [\"tag:ops\"]\nto = [\"*\"]\nports = [\"tcp/22\", \"icmp\"]\n\n\
[[test]]\nfrom = \"tag:ops\"\nto = \"tag:control\"\nport = \"tcp/10250\"\nexpect = \"deny\"\n";

/// A tag ([`mesh_proto::policy::is_label`]), a `tag:` prefix allowed.
pub const TAG: &str = "^(?:tag:)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$";

/// `why`'s `port`: `icmp`, or `tcp/N`/`udp/N` with N 0..=65535 without leading zeros.
pub fn why_port() -> String {
    format!("^(?:(?:tcp|udp)/(?:0|{PORT})|icmp)$")
}

/// A port, 1..=65535, without leading zeros.
const PORT: &str =
    "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";

/// `UpdateMember.public-endpoint`: `IPv4:port` or `[IPv6]:port` of a unicast address, port
/// 1 or more; or `0.0.0.0:port` / `[::]:port` (any port, 0 too), which clears it. IPv4
/// is taken without 224.0.0.0/4 (multicast) and 255.0.0.0/8 (broadcast); IPv6 with a first
/// group that is neither zero (IPv4-mapped addresses, whose IPv4 part is judged) nor
/// in ff00::/8 (multicast), written without leading zeros.
pub fn endpoint() -> String {
    let first_octet = "(?:25[0-4]|24[0-9]|22[0-3]|2[01][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let v4 = format!(r"{first_octet}(?:\.{OCTET}){{3}}");
    let first_group =
        "(?:[1-9a-fA-F][0-9a-fA-F]{0,2}|[1-9a-eA-E][0-9a-fA-F]{3}|[fF][0-9a-eA-E][0-9a-fA-F]{2})";
    let g = GROUP;
    let mut v6 = vec![format!("{first_group}(?::{g}){{7}}")];
    for before in 0..=6u32 {
        let after = 6 - before;
        let tail = if after == 0 {
            String::new()
        } else {
            format!("(?:{g}(?::{g}){{0,{}}})?", after - 1)
        };
        let head = if before == 0 {
            String::new()
        } else {
            format!("(?::{g}){{{before}}}")
        };
        v6.push(format!("{first_group}{head}::{tail}"));
    }
    format!(
        r"^(?:{v4}:{PORT}|0\.0\.0\.0:0|\[(?:{})\]:{PORT}|\[::\]:(?:0|{PORT}))$",
        v6.join("|")
    )
}

/// The schema and example of a path parameter, by name.
fn path_parameter(name: &str) -> Option<(Value, Value)> {
    Some(match name {
        "net" => (
            json!({ "type": "string", "minLength": 1, "maxLength": 32, "pattern": NETWORK_NAME }),
            json!("lab"),
        ),
        "node" => (
            json!({ "type": "string", "minLength": 1, "maxLength": MAX_MEMBER_REF, "pattern": MEMBER_REF }),
            json!("node-1"),
        ),
        "prefix" => (
            json!({ "type": "string", "pattern": route() }),
            json!("10.244.3.0/24"),
        ),
        "id" => (
            json!({ "type": "string", "minLength": 1, "maxLength": MAX_TOKEN_ID, "pattern": TOKEN_ID }),
            json!("0123456789ab"),
        ),
        _ => return None,
    })
}

/// Merges `extra` into the object `v` (a schema).
fn merge(v: &mut Value, extra: Value) {
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
}

/// Adds the constraints, examples and links to the generated document (as JSON).
pub fn apply(doc: &mut Value) {
    let paths = doc["paths"].as_object_mut().map(std::mem::take);
    let mut paths = paths.unwrap_or_default();
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let parameters = op.get_mut("parameters").and_then(Value::as_array_mut);
            for p in parameters.into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default().to_owned();
                match p["in"].as_str() {
                    Some("path") => {
                        if let Some((schema, example)) = path_parameter(&name) {
                            p["schema"] = schema;
                            p["example"] = example;
                        }
                    }
                    Some("query") if name == "port" => {
                        merge(&mut p["schema"], json!({ "pattern": why_port() }));
                        p["example"] = json!("tcp/22");
                    }
                    Some("query") if name == "from" || name == "to" => {
                        merge(
                            &mut p["schema"],
                            json!({ "minLength": 1, "maxLength": crate::admin::http::policy::MAX_DESCRIPTION }),
                        );
                        p["example"] = json!("tag:ops");
                    }
                    Some("query") if name == "after" => {
                        let pattern = if path.ends_with("/members") {
                            json!({ "pattern": KEY, "minLength": 43, "maxLength": 44 })
                        } else {
                            json!({ "pattern": TOKEN_ID, "minLength": 1, "maxLength": MAX_TOKEN_ID })
                        };
                        merge(&mut p["schema"], pattern);
                    }
                    _ => {}
                }
            }
        }
        links(path, item);
    }
    doc["paths"] = Value::Object(paths);

    let schemas = &mut doc["components"]["schemas"];
    let create = &mut schemas["CreateNetwork"]["properties"];
    merge(
        &mut create["name"],
        json!({ "minLength": 1, "maxLength": 32, "pattern": NETWORK_NAME, "example": "lab" }),
    );
    merge(&mut create["cidr"], json!({ "pattern": network_cidr() }));
    merge(&mut create["cidr6"], json!({ "pattern": network_cidr6() }));
    merge(
        &mut create["mtu"],
        json!({ "minimum": crate::model::MIN_MTU, "maximum": u16::MAX }),
    );
    merge(&mut create["keepalive"], json!({ "maximum": u16::MAX }));
    merge(
        &mut create["dns-domain"],
        json!({ "minLength": 1, "maxLength": mesh_proto::dns::MAX_DOMAIN, "pattern": DNS_DOMAIN, "example": "mesh.internal" }),
    );
    let update = &mut schemas["UpdateMember"]["properties"];
    merge(
        &mut update["name"],
        json!({ "minLength": 1, "maxLength": crate::model::MAX_NAME, "pattern": MEMBER_NAME, "example": "web-1" }),
    );
    merge(&mut update["address"], json!({ "pattern": ip_address() }));
    merge(
        &mut update["public-endpoint"],
        json!({ "pattern": endpoint() }),
    );
    merge(
        &mut schemas["CreateToken"]["properties"]["expires-in-secs"],
        json!({ "minimum": 1, "maximum": MAX_EXPIRES_IN_SECS }),
    );
    merge(
        &mut schemas["SetPolicy"]["properties"]["document"],
        json!({ "example": EXAMPLE_POLICY }),
    );
    let tag = json!({ "type": "string", "pattern": TAG, "maxLength": 67, "example": "worker" });
    schemas["SetTags"]["properties"]["tags"]["items"] = tag.clone();
    schemas["CreateToken"]["properties"]["tags"]["items"] = tag;
    // The answers always carry every field (null where there is no value).
    for name in [
        "NetworkView",
        "MemberView",
        "FilterView",
        "PolicyView",
        "WhyView",
        "PeerPathView",
        "TokenView",
        "TokenCreated",
        "AuditEntry",
        "ApiError",
    ] {
        let schema = &mut schemas[name];
        let all: Vec<Value> = schema["properties"]
            .as_object()
            .map(|p| p.keys().map(|k| json!(k)).collect())
            .unwrap_or_default();
        schema["required"] = Value::Array(all);
    }
}

/// A link to operation `op` with these parameters (runtime expressions).
fn link(op: &str, description: &str, parameters: &[(&str, &str)]) -> Value {
    let parameters: Map<String, Value> = parameters
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({ "operationId": op, "description": description, "parameters": parameters })
}

/// The operations on one member, `node` found at `key` (a runtime expression).
fn member_links(key: &str, routes_of: &str) -> Vec<(&'static str, Value)> {
    let net = ("net", "$request.path.net");
    let node = ("node", key);
    let advertised = format!("{routes_of}/advertised-routes/0");
    let approved = format!("{routes_of}/approved-routes/0");
    vec![
        (
            "UpdateMember",
            link("update_member", "change this member", &[net, node]),
        ),
        (
            "Authorize",
            link("authorize", "authorise this member", &[net, node]),
        ),
        (
            "Deauthorize",
            link("deauthorize", "deauthorise this member", &[net, node]),
        ),
        (
            "DeleteMember",
            link("delete_member", "delete this member", &[net, node]),
        ),
        (
            "ApproveRoute",
            link(
                "approve_route",
                "approve the first route this member advertises",
                &[net, node, ("prefix", advertised.as_str())],
            ),
        ),
        (
            "UnapproveRoute",
            link(
                "unapprove_route",
                "withdraw this member's first approved route",
                &[net, node, ("prefix", approved.as_str())],
            ),
        ),
    ]
}

/// The operations on one network, named by `net` (a runtime expression).
fn network_links(net: &str, delete: bool) -> Vec<(&'static str, Value)> {
    let mut v = vec![
        (
            "GetNetwork",
            link("get_network", "this network", &[("net", net)]),
        ),
        (
            "ListMembers",
            link("list_members", "this network's members", &[("net", net)]),
        ),
        (
            "ListTokens",
            link("list_tokens", "this network's join tokens", &[("net", net)]),
        ),
        (
            "CreateToken",
            link(
                "create_token",
                "a join token for this network",
                &[("net", net)],
            ),
        ),
    ];
    if delete {
        v.push((
            "DeleteNetwork",
            link("delete_network", "delete this network", &[("net", net)]),
        ));
    }
    v
}

/// Links from the answers of the operations at `path` to the operations on what they
/// answer with. The network list links to its first network but not to deleting it: a
/// tool following links deletes only networks it created itself.
fn links(path: &str, item: &mut Map<String, Value>) {
    let mut add = |method: &str, status: &str, links: Vec<(&'static str, Value)>| {
        if let Some(response) = item
            .get_mut(method)
            .and_then(|op| op["responses"].get_mut(status))
        {
            response["links"] =
                Value::Object(links.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        }
    };
    match path {
        "/api/networks" => {
            add("get", "200", network_links("$response.body#/0/name", false));
            add("post", "201", network_links("$response.body#/name", true));
        }
        "/api/networks/{net}" => {
            add("get", "200", network_links("$request.path.net", false));
        }
        "/api/networks/{net}/members" => {
            add(
                "get",
                "200",
                member_links("$response.body#/0/public-key", "$response.body#/0"),
            );
        }
        "/api/networks/{net}/members/{node}"
        | "/api/networks/{net}/members/{node}/authorize"
        | "/api/networks/{net}/members/{node}/deauthorize"
        | "/api/networks/{net}/members/{node}/routes/{prefix}/approve"
        | "/api/networks/{net}/members/{node}/routes/{prefix}" => {
            let mut member = member_links("$response.body#/public-key", "$response.body#");
            member.retain(|(name, _)| *name != "DeleteMember");
            for method in ["patch", "post", "delete"] {
                add(method, "200", member.clone());
            }
        }
        "/api/networks/{net}/tokens" => {
            let revoke = |id: &str| {
                vec![(
                    "RevokeToken",
                    link(
                        "revoke_token",
                        "revoke this token",
                        &[("net", "$request.path.net"), ("id", id)],
                    ),
                )]
            };
            add("get", "200", revoke("$response.body#/0/id"));
            add("post", "201", revoke("$response.body#/token/id"));
        }
        _ => {}
    }
}
