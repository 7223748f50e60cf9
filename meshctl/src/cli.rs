//! Flags and subcommands.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::duration;

/// Where meshd listens unless told otherwise (meshd's `--socket` default).
pub const DEFAULT_SOCKET: &str = "/run/meshd/meshd.sock";

/// wiremesh command line: node status, keys, joining networks, coordinator admin
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the local meshd.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// meshd's local API socket.
    #[arg(long, global = true, value_name = "PATH", env = "MESHCTL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new private key in base64, like `wg genkey`.
    Genkey,
    /// Read a private key on stdin and print its public key, like `wg pubkey`.
    Pubkey,
    /// Show the interface, its peers and counters, like `wg show`: one section per
    /// network the node holds (each network has its own interface).
    Status {
        /// Print the status as JSON (the field names meshd sends; further networks under
        /// `networks`).
        #[arg(long)]
        json: bool,
        /// Show only this network.
        #[arg(long, value_name = "NAME")]
        network: Option<String>,
    },
    /// Join a network through its coordinator, then wait until this node is in it.
    ///
    /// With a token (from `meshctl admin token create`) the node is authorised at once.
    /// With `--coordinator` and `--pin` it waits as pending until an admin authorises it.
    /// A node may join several networks: each further one gets its own interface (the
    /// next name after meshd's, e.g. mesh1), key and meshd process; networks stay apart
    /// (no forwarding between them).
    Join(JoinArgs),
    /// Leave a network: meshd forgets its membership, cached netmap and peers (a further
    /// network's interface goes too); the node's other networks are untouched.
    Leave {
        /// The network to leave.
        network: String,
    },
    /// Manage networks, members and join tokens through the coordinator's admin API.
    Admin(AdminArgs),
    /// Probe a peer over every path (direct candidates, relay) and show which answered.
    Ping {
        /// The peer: its name, overlay address, or public key (or a prefix of it).
        peer: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Report this node's NAT mapping behaviour and whether UDP works, using the
    /// coordinator's two reflectors.
    Netcheck {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print what kubeadm, kubelet, etcd and flannel need on this node: the overlay
    /// address, the mesh interface and the MTU.
    K8s {
        /// Print the values as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script, e.g. `meshctl completions bash > /etc/bash_completion.d/meshctl`.
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Write man pages (meshctl.1 and one per subcommand) into a directory (for packaging).
    #[command(hide = true)]
    Man {
        /// Where to write the pages.
        dir: PathBuf,
    },
}

/// Shells `meshctl completions` writes scripts for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// `meshctl join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The network to join.
    pub network: String,
    /// A `wm1_…` join token; it names the coordinator and its pin (not with --coordinator).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The coordinator's control address, when joining without a token (needs --pin).
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// The coordinator certificate's SHA-256, as `coordinator` prints it.
    #[arg(long, value_name = "sha256:HEX")]
    pub pin: Option<String>,
    /// Return as soon as meshd took the request.
    #[arg(long)]
    pub no_wait: bool,
    /// When pending, keep waiting until an admin authorises this node.
    #[arg(long, conflicts_with = "no_wait")]
    pub wait_authorized: bool,
    /// Give up waiting after this long (30s, 15m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_arg)]
    pub timeout: Duration,
    /// Print the final membership status as JSON instead of progress lines.
    #[arg(long)]
    pub json: bool,
}

/// `meshctl admin`: where the admin API is and how to authenticate.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The coordinator's admin API, e.g. http://127.0.0.1:7480 or https://coord.example:7480.
    #[arg(long, global = true, value_name = "URL", env = "MESHCTL_ADMIN_URL")]
    pub coordinator: Option<String>,
    /// For https: the pin of the admin API's certificate (sha256:…; `coordinator pin`
    /// prints the coordinator's own). Without it, a --token-file in the coordinator's data
    /// dir pins the certificate beside it.
    #[arg(long, global = true, value_name = "PIN", env = "MESHCTL_ADMIN_PIN")]
    pub admin_pin: Option<String>,
    /// File holding the admin token (the coordinator writes it to DATA_DIR/admin.token).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "MESHCTL_ADMIN_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Approve or unapprove routes members advertise (pod CIDRs).
    #[command(flatten)]
    Route(crate::admin::RouteCommand),
    /// Create, list, show and delete networks.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// List a network's members (fetched 500 at a time).
    Members {
        /// The network.
        network: String,
        /// Only members whose name, overlay address, fingerprint or key contains TEXT
        /// (case-insensitive).
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Let a member into the network.
    Authorize(MemberArgs),
    /// Take a member out of the network (its record and address are kept).
    Deauthorize(MemberArgs),
    /// Delete a member and free its address.
    DeleteMember {
        /// The network.
        network: String,
        /// The member: its name, public key or fingerprint (8+ characters of the key).
        node: String,
    },
    /// Rename a member.
    Rename {
        /// The network.
        network: String,
        /// The member: its name, public key or fingerprint (8+ characters of the key).
        node: String,
        /// The new name.
        new_name: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Give a member another overlay address (inside the network, not in use).
    SetAddress {
        /// The network.
        network: String,
        /// The member: its name, public key or fingerprint (8+ characters of the key).
        node: String,
        /// The new address.
        ip: IpAddr,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Set the public endpoint peers try first for a member (a port forward or load
    /// balancer to its WireGuard port), or clear it with --clear.
    SetEndpoint {
        /// The network.
        network: String,
        /// The member: its name, public key or fingerprint (8+ characters of the key).
        node: String,
        /// The public address and port, e.g. 203.0.113.5:51820 or [2001:db8::5]:51820.
        #[arg(
            value_name = "IP:PORT",
            required_unless_present = "clear",
            conflicts_with = "clear"
        )]
        endpoint: Option<SocketAddr>,
        /// Remove the member's public endpoint.
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Create, list and revoke join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// A network's policy: who may open what to whom (see docs/policy.md).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Replace a member's tags (what policies name): `meshctl admin tag lab web-1 worker`.
    Tag {
        /// The network.
        network: String,
        /// The member: its name, public key or fingerprint (8+ characters of the key).
        node: String,
        /// Its tags (DNS labels; a `tag:` prefix is accepted); none clears them.
        tags: Vec<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the network's policy document.
    Get {
        /// The network.
        network: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Check a document and set it; refused (with the line and reason) when it is
    /// malformed or one of its tests fails, and then nothing changes.
    Set {
        /// The network.
        network: String,
        /// The document (TOML), `-` for standard input.
        file: PathBuf,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Check a document (syntax, references, its tests) without setting it.
    Test {
        /// The network.
        network: String,
        /// The document (TOML), `-` for standard input.
        file: PathBuf,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Remove the policy: everything allowed between members again.
    Clear {
        /// The network.
        network: String,
    },
    /// Which rule decides traffic from one member to another:
    /// `meshctl admin policy why lab laptop web-1 tcp/22`.
    Why {
        /// The network.
        network: String,
        /// The source: a member (name, key, fingerprint, address) or tags (`tag:ops`).
        from: String,
        /// The destination, likewise.
        to: String,
        /// The traffic: `tcp/22`, `udp/53`, `icmp`.
        port: String,
        #[command(flatten)]
        output: JsonFlag,
    },
}

/// A member of a network, and the output format.
#[derive(Debug, Args)]
pub struct MemberArgs {
    /// The network.
    pub network: String,
    /// The member: its name, public key or fingerprint (8+ characters of the key).
    pub node: String,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `--json` on commands that answer with data.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create {
        /// 1 to 32 characters of a-z, 0-9 and '-'.
        name: String,
        /// The overlay prefix members get addresses from, e.g. 10.9.8.0/24.
        #[arg(long)]
        cidr: IpNet,
        /// Interface MTU for members [coordinator default: 1280].
        #[arg(long, value_name = "N")]
        mtu: Option<u16>,
        /// Persistent keepalive in seconds, 0 for off [coordinator default: 25].
        #[arg(long, value_name = "S")]
        keepalive: Option<u16>,
        /// The DNS domain members' names live under, <name>.<network>.<domain>
        /// [coordinator default: mesh.internal].
        #[arg(long, value_name = "DOMAIN")]
        dns_domain: Option<String>,
        /// The IPv6 prefix beside an IPv4 --cidr (dual stack: every member also gets an
        /// IPv6 address with its IPv4 host part), e.g. fd5e:1f2a:9c00::/64, or `off` for
        /// IPv4 only [coordinator default: a random ULA /64].
        #[arg(long, value_name = "PREFIX|off")]
        cidr6: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// List networks.
    List {
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Show one network.
    Show {
        /// The network.
        name: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Delete a network and all its members and tokens.
    Delete {
        /// The network.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token; the token itself is the last line of output.
    Create {
        /// The network it admits to.
        network: String,
        /// Usable by any number of nodes (default: one node).
        #[arg(long)]
        reusable: bool,
        /// Expire after this long (30m, 24h, 7d) [default: never].
        #[arg(long, value_name = "DURATION", value_parser = duration::parse_arg)]
        expires: Option<Duration>,
        /// Tag every member that joins with it (repeat for several): what policies name.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// List a network's join tokens (never their secrets).
    List {
        /// The network.
        network: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Revoke a join token.
    Revoke {
        /// The network.
        network: String,
        /// The token's id (from `token list`).
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn socket_is_global() {
        let before = Cli::try_parse_from(["meshctl", "--socket", "/a", "status"]);
        let after = Cli::try_parse_from(["meshctl", "status", "--json", "--socket", "/b"]);
        let (Ok(before), Ok(after)) = (before, after) else {
            panic!("--socket not accepted")
        };
        assert_eq!(before.connect.socket, PathBuf::from("/a"));
        assert_eq!(after.connect.socket, PathBuf::from("/b"));
        assert!(matches!(
            after.command,
            Command::Status {
                json: true,
                network: None
            }
        ));
    }

    #[test]
    fn admin_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "admin",
            "members",
            "lab",
            "--coordinator",
            "http://127.0.0.1:7480",
            "--token-file",
            "/t",
            "--json",
        ]);
        let Ok(Cli {
            command: Command::Admin(admin),
            ..
        }) = cli
        else {
            panic!("not parsed: {cli:?}")
        };
        assert_eq!(admin.coordinator.as_deref(), Some("http://127.0.0.1:7480"));
        assert_eq!(admin.token_file, Some(PathBuf::from("/t")));
        assert!(matches!(
            admin.command,
            AdminCommand::Members {
                output: JsonFlag { json: true },
                ..
            }
        ));
    }

    #[test]
    fn set_endpoint_takes_an_address_or_clear() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(
                ["meshctl", "admin", "set-endpoint", "lab", "web-1"]
                    .iter()
                    .chain(args),
            )
        };
        let Ok(Cli {
            command: Command::Admin(admin),
            ..
        }) = parse(&["203.0.113.5:51820"])
        else {
            panic!("set-endpoint not parsed")
        };
        assert!(matches!(
            admin.command,
            AdminCommand::SetEndpoint {
                endpoint: Some(_),
                clear: false,
                ..
            }
        ));
        assert!(parse(&["--clear"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["203.0.113.5:51820", "--clear"]).is_err());
        assert!(parse(&["203.0.113.5"]).is_err());
    }

    #[test]
    fn join_timeout_default_and_no_wait_conflict() {
        let Ok(Cli {
            command: Command::Join(join),
            ..
        }) = Cli::try_parse_from(["meshctl", "join", "lab", "--token", "wm1_x"])
        else {
            panic!("join not parsed")
        };
        assert_eq!(join.timeout, Duration::from_secs(30));
        assert!(
            Cli::try_parse_from(["meshctl", "join", "lab", "--no-wait", "--wait-authorized"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["meshctl", "join", "lab", "--timeout", "5"]).is_err());
    }
}
