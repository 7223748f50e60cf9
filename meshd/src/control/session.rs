//! One control session with the coordinator, over any byte stream (a QUIC stream in
//! production, an in-memory pipe in tests): Hello, proof of key possession, then netmaps
//! and changes until the stream ends. See `mesh_proto::control` for the exchange.
//!
//! Policy filters (control protocol 4): each [`ServerMsg::Filter`] goes to
//! [`Sink::filter`], which applies it (or fails closed) and says what the node runs now;
//! the session answers every one with [`ClientMsg::Filter`] (the hash, and the error if
//! it could not be applied), in the order they came. The coordinator sends a session's
//! first filter, whole, before its first netmap or changes when the network has a
//! policy, and none when it has not (or knows nothing of policies): a session whose first
//! netmap or changes come without a filter before them tells [`Sink::no_filter`].
//! A change that does not apply to the filter the node has (a delta; the two sides
//! diverged) ends the session once it is answered: the next one starts with the whole
//! filter. A whole filter that does not apply leaves every peer closed and the session
//! running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use mesh_proto::control::{self, ClientMsg, Hello, PeerPathReport, ServerMsg};
use mesh_proto::netmap::Netmap;
use mesh_proto::policy::FilterUpdate;
use mesh_proto::Key;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::paths::PathReporter;

/// How long the coordinator may take to answer during the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a session ended, when it ended without an IO or protocol error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The coordinator refused this node; the reason is for the operator.
    Denied(String),
    /// The coordinator closed the stream.
    Closed,
}

/// What the session reports as it goes.
pub trait Sink {
    /// Authenticated but not authorised (never, or no longer).
    fn pending(&mut self, message: &str);
    /// A new netmap is in force (full or after changes).
    fn netmap(&mut self, netmap: &Netmap);
    /// The coordinator's NAT traversal services (reflectors, relay) for this member.
    fn services(&mut self, services: Services) {
        let _ = services;
    }
    /// Every coordinator's control address, as the coordinator advertised them with the
    /// services (empty from a coordinator that does not send them).
    fn coordinators(&mut self, coordinators: Vec<String>) {
        let _ = coordinators;
    }
    /// A policy filter update: apply it to the filter in force (failing closed for the
    /// peers it concerns when that is not possible). Returns the hash of the filter the node
    /// enforces afterwards and why the update did not apply, if it did not.
    fn filter(&mut self, update: &FilterUpdate) -> FilterReport;
    /// The coordinator sends no filter: the network has no policy (or the coordinator
    /// predates them), so everything is allowed between members.
    fn no_filter(&mut self);
    /// The network's DNS domain ([`ServerMsg::Names`], control protocol 5).
    fn names(&mut self, domain: &str) {
        let _ = domain;
    }
}

/// What the node says after a filter update ([`ClientMsg::Filter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterReport {
    /// `NodeFilter::hash` of the filter in force.
    pub hash: String,
    /// Why the update was not applied.
    pub error: Option<String>,
}

/// What [`ServerMsg::Services`] carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Services {
    /// Reflector addresses (`host:port`).
    pub reflectors: Vec<String>,
    /// Relay address (`host:port`), if any.
    pub relay: Option<String>,
    /// The relay's addresses in every family the coordinator advertises (empty from a
    /// coordinator before dual stack: then `relay`).
    pub relays: Vec<String>,
    /// This member's relay token.
    pub relay_token: Key,
}

impl Services {
    /// The relay's addresses to try, in order.
    pub fn relays(&self) -> impl Iterator<Item = &String> {
        let all = if self.relays.is_empty() {
            self.relay.as_slice()
        } else {
            self.relays.as_slice()
        };
        all.iter()
    }
}

/// Reads one frame, as member `me` (binary netmaps list every member, `me` included).
pub async fn read_msg<R: AsyncRead + Unpin>(
    r: &mut R,
    me: &Key,
) -> anyhow::Result<Option<ServerMsg>> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = control::body_len(header)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .await
        .context("reading a control message")?;
    Ok(Some(control::decode_server(&body, me)?))
}

async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &ClientMsg) -> anyhow::Result<()> {
    w.write_all(&control::encode(msg))
        .await
        .context("sending a control message")?;
    w.flush().await?;
    Ok(())
}

async fn expect_msg<R: AsyncRead + Unpin>(r: &mut R, me: &Key) -> anyhow::Result<ServerMsg> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_msg(r, me)).await {
        Err(_) => bail!("the coordinator did not answer within {HANDSHAKE_TIMEOUT:?}"),
        Ok(Ok(None)) => bail!("the coordinator closed the connection during the handshake"),
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Err(e)) => Err(e),
    }
}

/// How often the writer looks at the peers' paths (a path change is reported at most this
/// long after it happened, plus [`control::PATH_REPORT_INTERVAL`]'s debounce).
const PATH_CHECK: Duration = Duration::from_secs(1);

/// The current paths to the peers (`Device::path_report`).
pub type PathSource = Arc<dyn Fn() -> Vec<PeerPathReport> + Send + Sync>;

/// Messages the receiving half queues for the writer (filter reports).
const OUTGOING: usize = 16;

/// What the node reports about itself during a session: its WireGuard port, local
/// addresses, (as they are learned) the reflexive addresses the reflectors saw, and, while
/// authorised, its paths to its peers.
pub struct EndpointFeed {
    /// WireGuard UDP port.
    pub listen_port: u16,
    /// Local candidates.
    pub local: Vec<std::net::SocketAddr>,
    /// Reflexive candidates; every change is reported.
    pub reflexive: tokio::sync::watch::Receiver<Vec<std::net::SocketAddr>>,
    /// Where the paths come from; `None`: no path reports.
    pub paths: Option<PathSource>,
}

impl std::fmt::Debug for EndpointFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointFeed")
            .field("listen_port", &self.listen_port)
            .field("local", &self.local)
            .field("paths", &self.paths.is_some())
            .finish_non_exhaustive()
    }
}

/// Runs a session. `exporter` is this connection's TLS exporter secret
/// (`mesh_proto::control::EXPORTER_LABEL`); `netmap` is the map the node has (cached), whose
/// version `hello.resume` names.
#[allow(clippy::too_many_arguments)] // a session needs all of them; a struct would only rename them
pub async fn run<R, W>(
    mut r: R,
    mut w: W,
    exporter: [u8; 32],
    hello: Hello,
    private_key: &Key,
    netmap: Option<Netmap>,
    sink: &mut impl Sink,
    endpoints: Option<EndpointFeed>,
) -> anyhow::Result<Outcome>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let me = hello.public_key;
    write_msg(&mut w, &ClientMsg::Hello(hello)).await?;
    match expect_msg(&mut r, &me).await? {
        ServerMsg::Challenge { ephemeral, nonce } => {
            let proof = control::node_proof(private_key, &ephemeral, &nonce, &exporter);
            write_msg(&mut w, &ClientMsg::Proof { proof }).await?;
        }
        ServerMsg::Denied { reason } => return Ok(Outcome::Denied(reason)),
        other => bail!("protocol error: expected a challenge, got {}", kind(&other)),
    }
    // Whether the node holds a netmap from this connection (path reports only then).
    let authorised = AtomicBool::new(false);
    // What the receiving half has to say (filter reports) goes through the writer.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<ClientMsg>(OUTGOING);
    // Reading and reporting run side by side; whichever fails first ends it.
    let writer = async {
        let has_feed = endpoints.is_some();
        // Without a feed: a channel that never changes stands in for the reflexive watch.
        let (_still, quiet) = tokio::sync::watch::channel(Vec::new());
        let mut feed = endpoints.unwrap_or(EndpointFeed {
            listen_port: 0,
            local: Vec::new(),
            reflexive: quiet,
            paths: None,
        });
        if !feed.reflexive.borrow().is_empty() {
            feed.reflexive.mark_changed();
        }
        let mut reflexive_open = has_feed;
        let mut outgoing_open = true;
        let mut reporter = PathReporter::default();
        let mut tick = tokio::time::interval(PATH_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = out_rx.recv(), if outgoing_open => {
                    match msg {
                        Some(msg) => write_msg(&mut w, &msg).await?,
                        None => outgoing_open = false,
                    }
                }
                changed = feed.reflexive.changed(), if reflexive_open => {
                    if changed.is_err() {
                        reflexive_open = false;
                        continue;
                    }
                    let reflexive = feed.reflexive.borrow_and_update().clone();
                    let msg = ClientMsg::Endpoints {
                        listen_port: feed.listen_port,
                        local: feed.local.clone(),
                        reflexive,
                    };
                    write_msg(&mut w, &msg).await?;
                }
                _ = tick.tick(), if feed.paths.is_some() => {
                    let Some(source) = &feed.paths else { continue };
                    if !authorised.load(Ordering::Relaxed) {
                        reporter.reset();
                        continue;
                    }
                    let now = tokio::time::Instant::now().into_std();
                    if let Some(peers) = reporter.poll(now, source()) {
                        write_msg(&mut w, &ClientMsg::Paths { peers }).await?;
                    }
                }
                else => return std::future::pending::<anyhow::Result<()>>().await,
            }
        }
    };
    let outcome = tokio::select! {
        outcome = receive(&mut r, &me, netmap, sink, &authorised, out_tx) => outcome,
        failed = writer => return failed.map(|()| Outcome::Closed),
    };
    // What the receiving half queued last (a filter report before a resync or a denial)
    // still goes out, if the stream takes it.
    while let Ok(msg) = out_rx.try_recv() {
        if write_msg(&mut w, &msg).await.is_err() {
            break;
        }
    }
    outcome
}

/// The receiving half of a session after the handshake.
async fn receive<R: AsyncRead + Unpin>(
    r: &mut R,
    me: &Key,
    mut netmap: Option<Netmap>,
    sink: &mut impl Sink,
    authorised: &AtomicBool,
    out: tokio::sync::mpsc::Sender<ClientMsg>,
) -> anyhow::Result<Outcome> {
    // Whether a filter came in this session, or the first netmap or changes did.
    let (mut filtered, mut mapped) = (false, false);
    loop {
        let Some(msg) = read_msg(r, me).await? else {
            return Ok(Outcome::Closed);
        };
        if matches!(msg, ServerMsg::Netmap { .. } | ServerMsg::Changes { .. }) && !mapped {
            mapped = true;
            if !filtered {
                sink.no_filter();
            }
        }
        match msg {
            ServerMsg::Pending { message } => {
                netmap = None;
                authorised.store(false, Ordering::Relaxed);
                sink.pending(&message);
            }
            ServerMsg::Denied { reason } => return Ok(Outcome::Denied(reason)),
            ServerMsg::Netmap { netmap: full } => {
                sink.netmap(&full);
                netmap = Some(full);
                authorised.store(true, Ordering::Relaxed);
            }
            ServerMsg::Changes { version, changes } => {
                let Some(current) = netmap.as_mut() else {
                    bail!("protocol error: changes for version {version} without a netmap");
                };
                current.apply(version, &changes);
                sink.netmap(current);
                authorised.store(true, Ordering::Relaxed);
            }
            ServerMsg::Services {
                reflectors,
                relay,
                relays,
                relay_token,
                coordinators,
            } => {
                sink.coordinators(coordinators);
                sink.services(Services {
                    reflectors,
                    relay,
                    relays,
                    relay_token,
                });
            }
            ServerMsg::Challenge { .. } => bail!("protocol error: a second challenge"),
            ServerMsg::Names { domain } => sink.names(&domain),
            ServerMsg::Filter(update) => {
                filtered = true;
                let FilterReport { hash, error } = sink.filter(&update);
                let diverged = error.as_ref().filter(|_| !update.full).cloned();
                out.send(ClientMsg::Filter { hash, error })
                    .await
                    .context("the session's writer ended")?;
                if let Some(e) = diverged {
                    bail!("a policy filter change did not apply ({e}); reconnecting for the whole filter");
                }
            }
        }
    }
}

fn kind(m: &ServerMsg) -> &'static str {
    match m {
        ServerMsg::Challenge { .. } => "challenge",
        ServerMsg::Pending { .. } => "pending",
        ServerMsg::Denied { .. } => "denied",
        ServerMsg::Netmap { .. } => "netmap",
        ServerMsg::Changes { .. } => "changes",
        ServerMsg::Services { .. } => "services",
        ServerMsg::Filter(_) => "filter",
        ServerMsg::Names { .. } => "names",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::netmap::{NetworkInfo, PeerChange, PeerInfo};

    #[derive(Default)]
    struct Record {
        pending: Vec<String>,
        maps: Vec<Netmap>,
        services: Vec<Services>,
        coordinators: Vec<Vec<String>>,
        /// The filter state, kept as meshd's `Device::apply_filter_update` keeps it.
        filter: crate::device::filter::Saved,
        /// Times the session said the coordinator sends no filter.
        no_filter: usize,
    }

    impl Sink for Record {
        fn pending(&mut self, message: &str) {
            self.pending.push(message.to_owned());
        }
        fn netmap(&mut self, netmap: &Netmap) {
            self.maps.push(netmap.clone());
        }
        fn services(&mut self, services: Services) {
            self.services.push(services);
        }
        fn coordinators(&mut self, coordinators: Vec<String>) {
            self.coordinators.push(coordinators);
        }
        fn filter(&mut self, update: &FilterUpdate) -> FilterReport {
            let error = crate::device::filter::apply_update(&mut self.filter, update).err();
            FilterReport {
                hash: self.filter.hash(),
                error,
            }
        }
        fn no_filter(&mut self) {
            self.no_filter += 1;
            self.filter = Default::default();
        }
    }

    fn hello(key: &Key) -> Hello {
        Hello {
            network: "lab".into(),
            public_key: key.public_key(),
            name: "n1".into(),
            version: "test".into(),
            join: None,
            resume: None,
            listen_port: 51820,
            local: vec![],
            routes: vec![],
            protocol: control::PROTOCOL,
        }
    }

    fn netmap() -> Netmap {
        Netmap {
            address6: None,
            version: 1,
            network: NetworkInfo {
                cidr6: None,
                name: "lab".into(),
                cidr: "10.9.8.0/24".parse().unwrap(),
                mtu: 1280,
                keepalive: 25,
            },
            address: "10.9.8.1/24".parse().unwrap(),
            name: "n1".into(),
            peers: Default::default(),
        }
    }

    async fn send(w: &mut (impl AsyncWrite + Unpin), m: &ServerMsg) {
        w.write_all(&control::encode(m)).await.unwrap();
    }

    async fn recv(r: &mut (impl AsyncRead + Unpin)) -> ClientMsg {
        let mut h = [0u8; 4];
        r.read_exact(&mut h).await.unwrap();
        let mut b = vec![0u8; control::body_len(h).unwrap()];
        r.read_exact(&mut b).await.unwrap();
        control::decode(&b).unwrap()
    }

    /// The coordinator's side of the handshake without checking the proof: reads the hello,
    /// sends a challenge, reads the proof.
    async fn admit_unchecked(r: &mut (impl AsyncRead + Unpin), w: &mut (impl AsyncWrite + Unpin)) {
        let _ = recv(r).await;
        send(
            w,
            &ServerMsg::Challenge {
                ephemeral: Key([1; 32]),
                nonce: Key([2; 32]),
            },
        )
        .await;
        let _ = recv(r).await;
    }

    /// A scripted coordinator: checks the proof, then sends the services (with every
    /// coordinator's address), a netmap, a change, pending.
    #[tokio::test]
    async fn full_exchange() {
        let node = Key::clamp_private([3; 32]);
        let eph = Key::clamp_private([4; 32]);
        let nonce = Key([5; 32]);
        let exporter = [6; 32];
        let (client, server) = tokio::io::duplex(1 << 16);
        let (cr, cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let coordinator = tokio::spawn(async move {
            let ClientMsg::Hello(h) = recv(&mut sr).await else {
                panic!("no hello")
            };
            send(
                &mut sw,
                &ServerMsg::Challenge {
                    ephemeral: eph.public_key(),
                    nonce,
                },
            )
            .await;
            let ClientMsg::Proof { proof } = recv(&mut sr).await else {
                panic!("no proof")
            };
            assert_eq!(
                proof,
                control::expected_proof(&eph, &h.public_key, &nonce, &exporter)
            );
            send(
                &mut sw,
                &ServerMsg::Services {
                    reflectors: vec!["192.0.2.1:7444".into()],
                    relay: Some("192.0.2.1:7446".into()),
                    relays: vec!["192.0.2.1:7446".into(), "[2001:db8::1]:7446".into()],
                    relay_token: Key([8; 32]),
                    coordinators: vec!["c1:7443".into(), "c2:7443".into()],
                },
            )
            .await;
            send(&mut sw, &ServerMsg::Netmap { netmap: netmap() }).await;
            let peer = PeerInfo {
                address6: None,
                public_key: Key([9; 32]),
                name: "n2".into(),
                address: "10.9.8.2".parse().unwrap(),
                allowed_ips: vec!["10.9.8.2/32".parse().unwrap()],
                endpoints: vec![],
            };
            send(
                &mut sw,
                &ServerMsg::Changes {
                    version: 2,
                    changes: vec![PeerChange::Upsert { peer }],
                },
            )
            .await;
            send(
                &mut sw,
                &ServerMsg::Pending {
                    message: "deauthorized".into(),
                },
            )
            .await;
            send(
                &mut sw,
                &ServerMsg::Denied {
                    reason: "removed".into(),
                },
            )
            .await;
        });
        let mut rec = Record::default();
        let outcome = run(cr, cw, exporter, hello(&node), &node, None, &mut rec, None)
            .await
            .unwrap();
        coordinator.await.unwrap();
        assert_eq!(outcome, Outcome::Denied("removed".into()));
        assert_eq!(rec.maps.len(), 2);
        assert_eq!(rec.maps[1].version, 2);
        assert_eq!(rec.maps[1].peers.len(), 1);
        assert_eq!(rec.pending, vec!["deauthorized".to_owned()]);
        assert_eq!(
            rec.coordinators,
            vec![vec!["c1:7443".to_owned(), "c2:7443".to_owned()]]
        );
        assert_eq!(
            rec.services,
            vec![Services {
                reflectors: vec!["192.0.2.1:7444".into()],
                relay: Some("192.0.2.1:7446".into()),
                relays: vec!["192.0.2.1:7446".into(), "[2001:db8::1]:7446".into()],
                relay_token: Key([8; 32]),
            }]
        );
        // Both addresses, in order; `relay` alone from an older coordinator.
        let got: Vec<&String> = rec.services[0].relays().collect();
        assert_eq!(got, ["192.0.2.1:7446", "[2001:db8::1]:7446"]);
        let old = Services {
            relays: vec![],
            ..rec.services[0].clone()
        };
        assert_eq!(old.relays().collect::<Vec<_>>(), ["192.0.2.1:7446"]);
    }

    /// Paths are reported only while authorised: not while pending, soon after the
    /// netmap, again when they change; never two within a second.
    #[tokio::test]
    async fn paths_are_reported_while_authorised() {
        use mesh_proto::control::{PeerPathReport, ReportedPath};
        let node = Key::clamp_private([3; 32]);
        let (client, server) = tokio::io::duplex(1 << 16);
        let (cr, cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let entry = |path| PeerPathReport {
            peer: Key([9; 32]),
            path,
            rtt_ms: None,
        };
        let current = Arc::new(parking_lot::Mutex::new(vec![entry(ReportedPath::Relayed)]));
        let source = current.clone();
        let (_reflexive_tx, reflexive) = tokio::sync::watch::channel(Vec::new());
        let feed = EndpointFeed {
            listen_port: 51820,
            local: vec![],
            reflexive,
            paths: Some(Arc::new(move || source.lock().clone())),
        };
        let coordinator = tokio::spawn(async move {
            admit_unchecked(&mut sr, &mut sw).await;
            send(
                &mut sw,
                &ServerMsg::Pending {
                    message: "wait".into(),
                },
            )
            .await;
            // Longer than a check interval.
            let quiet = tokio::time::timeout(PATH_CHECK * 3 / 2, recv(&mut sr)).await;
            assert!(quiet.is_err(), "sent while pending: {quiet:?}");
            send(&mut sw, &ServerMsg::Netmap { netmap: netmap() }).await;
            let first = tokio::time::timeout(Duration::from_secs(10), recv(&mut sr))
                .await
                .expect("no report after the netmap");
            assert_eq!(
                first,
                ClientMsg::Paths {
                    peers: vec![entry(ReportedPath::Relayed)]
                }
            );
            *current.lock() = vec![entry(ReportedPath::Direct)];
            let second = tokio::time::timeout(Duration::from_secs(10), recv(&mut sr))
                .await
                .expect("no report after a path change");
            assert_eq!(
                second,
                ClientMsg::Paths {
                    peers: vec![entry(ReportedPath::Direct)]
                }
            );
            // Unchanged: quiet.
            let quiet = tokio::time::timeout(PATH_CHECK * 3 / 2, recv(&mut sr)).await;
            assert!(quiet.is_err(), "sent an unchanged report: {quiet:?}");
            // Kept open: the session must not see the end of the stream first.
            (sr, sw)
        });
        let mut rec = Record::default();
        let session = run(
            cr,
            cw,
            [0; 32],
            hello(&node),
            &node,
            None,
            &mut rec,
            Some(feed),
        );
        let _open = tokio::select! {
            done = coordinator => done.unwrap(),
            outcome = session => panic!("session ended: {outcome:?}"),
        };
        assert_eq!(rec.pending, vec!["wait".to_owned()]);
        assert_eq!(rec.maps.len(), 1);
    }

    fn ssh(rule: u32, line: u32) -> mesh_proto::policy::Entry {
        mesh_proto::policy::Entry {
            action: mesh_proto::policy::Action::Allow,
            ports: mesh_proto::policy::Ports::parse("tcp/22").unwrap(),
            src: None,
            dst: None,
            rule,
            line,
        }
    }

    /// Two filters: peer a only, then peers a and b.
    fn two_filters() -> (
        mesh_proto::policy::NodeFilter,
        mesh_proto::policy::NodeFilter,
    ) {
        use mesh_proto::policy::{Action, NodeFilter, PeerFilter};
        let first = NodeFilter {
            default: Action::Deny,
            peers: [(
                Key([10; 32]),
                PeerFilter {
                    inbound: vec![ssh(0, 4)],
                    outbound: vec![],
                },
            )]
            .into(),
        };
        let mut second = first.clone();
        second.peers.insert(
            Key([11; 32]),
            PeerFilter {
                inbound: vec![],
                outbound: vec![ssh(0, 4)],
            },
        );
        (first, second)
    }

    /// A whole filter before the netmap, then a whole one that does not hash to what it
    /// announces (the node keeps the filter, closes every peer, stays connected), then one
    /// that applies: each answered with the hash the node runs and the error.
    #[tokio::test]
    async fn filter_updates_are_applied_and_answered() {
        let node = Key::clamp_private([3; 32]);
        let (client, server) = tokio::io::duplex(1 << 16);
        let (cr, cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let (first, second) = two_filters();
        let mut broken = second.update_from(None);
        broken.hash = "0000000000000000".into();
        let healed = second.update_from(Some(&first));
        let (first_hash, second_hash) = (first.hash(), second.hash());
        let update = first.update_from(None);
        let coordinator = tokio::spawn(async move {
            admit_unchecked(&mut sr, &mut sw).await;
            send(&mut sw, &ServerMsg::Filter(update)).await;
            assert_eq!(
                recv(&mut sr).await,
                ClientMsg::Filter {
                    hash: first_hash.clone(),
                    error: None
                }
            );
            send(&mut sw, &ServerMsg::Netmap { netmap: netmap() }).await;
            send(&mut sw, &ServerMsg::Filter(broken)).await;
            let ClientMsg::Filter { hash, error } = recv(&mut sr).await else {
                panic!("no filter report")
            };
            assert_eq!(hash, first_hash, "reports the filter it still runs");
            let error = error.expect("no error for an update that does not hash right");
            assert!(error.contains("0000000000000000"), "{error}");
            // Still connected: a change on top of the filter that applied heals it.
            send(&mut sw, &ServerMsg::Filter(healed)).await;
            assert_eq!(
                recv(&mut sr).await,
                ClientMsg::Filter {
                    hash: second_hash,
                    error: None
                }
            );
        });
        let mut rec = Record::default();
        let outcome = run(cr, cw, [0; 32], hello(&node), &node, None, &mut rec, None)
            .await
            .unwrap();
        coordinator.await.unwrap();
        assert_eq!(outcome, Outcome::Closed);
        assert_eq!(rec.maps.len(), 1);
        assert_eq!(rec.no_filter, 0);
        assert_eq!(rec.filter.filter, Some(second));
        assert_eq!(rec.filter.error, None);
        assert_eq!(rec.filter.closed, Default::default());
    }

    /// A change that does not apply closes the peers it names, is answered, and ends the
    /// session (the next one starts with the whole filter).
    #[tokio::test]
    async fn a_filter_change_that_does_not_apply_closes_its_peers_and_resyncs() {
        let node = Key::clamp_private([3; 32]);
        let (client, server) = tokio::io::duplex(1 << 16);
        let (cr, cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let (first, second) = two_filters();
        let mut broken = second.update_from(Some(&first));
        broken.hash = "ffffffffffffffff".into();
        let update = first.update_from(None);
        let first_hash = first.hash();
        let coordinator = tokio::spawn(async move {
            admit_unchecked(&mut sr, &mut sw).await;
            send(&mut sw, &ServerMsg::Filter(update)).await;
            let _ = recv(&mut sr).await;
            send(&mut sw, &ServerMsg::Netmap { netmap: netmap() }).await;
            send(&mut sw, &ServerMsg::Filter(broken)).await;
            let ClientMsg::Filter { hash, error } = recv(&mut sr).await else {
                panic!("no filter report")
            };
            assert_eq!(hash, first_hash);
            assert!(error.is_some());
            // The stream stays open: the node ends the session itself.
            (sr, sw)
        });
        let mut rec = Record::default();
        let e = run(cr, cw, [0; 32], hello(&node), &node, None, &mut rec, None)
            .await
            .unwrap_err();
        let _open = coordinator.await.unwrap();
        assert!(e.to_string().contains("reconnecting"), "{e:#}");
        assert_eq!(rec.filter.filter, Some(first));
        assert!(!rec.filter.closed.all);
        assert_eq!(rec.filter.closed.peers, [Key([11; 32])].into());
        assert!(rec.filter.error.is_some());
    }

    /// A session whose first netmap comes without a filter before it: the network has no
    /// policy (any more), so the filter the node had goes; one that comes later applies.
    #[tokio::test]
    async fn no_filter_before_the_netmap_means_no_policy() {
        let node = Key::clamp_private([3; 32]);
        let (client, server) = tokio::io::duplex(1 << 16);
        let (cr, cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let (first, _) = two_filters();
        let update = first.update_from(None);
        let coordinator = tokio::spawn(async move {
            admit_unchecked(&mut sr, &mut sw).await;
            send(&mut sw, &ServerMsg::Netmap { netmap: netmap() }).await;
            // A policy appears while connected.
            send(&mut sw, &ServerMsg::Filter(update)).await;
            let _ = recv(&mut sr).await;
            send(
                &mut sw,
                &ServerMsg::Changes {
                    version: 2,
                    changes: vec![],
                },
            )
            .await;
        });
        // As restored from the cache: a filter from before.
        let mut rec = Record::default();
        crate::device::filter::apply_update(&mut rec.filter, &two_filters().1.update_from(None))
            .unwrap();
        let outcome = run(cr, cw, [0; 32], hello(&node), &node, None, &mut rec, None)
            .await
            .unwrap();
        coordinator.await.unwrap();
        assert_eq!(outcome, Outcome::Closed);
        assert_eq!(rec.no_filter, 1);
        assert_eq!(rec.maps.len(), 2);
        assert_eq!(rec.filter.filter, Some(first));
    }

    #[tokio::test]
    async fn changes_without_netmap_is_an_error() {
        let node = Key::clamp_private([3; 32]);
        let (client, server) = tokio::io::duplex(1 << 16);
        let (cr, cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        tokio::spawn(async move {
            admit_unchecked(&mut sr, &mut sw).await;
            send(
                &mut sw,
                &ServerMsg::Changes {
                    version: 2,
                    changes: vec![],
                },
            )
            .await;
        });
        let err = run(
            cr,
            cw,
            [0; 32],
            hello(&node),
            &node,
            None,
            &mut Record::default(),
            None,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("without a netmap"), "{err}");
    }
}
