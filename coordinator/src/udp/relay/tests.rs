//! The relay over real UDP sockets on 127.0.0.1: one socket per simulated member (so each
//! has its own source address, as behind distinct NATs), membership from a real
//! coordinator state, time from its hand-set clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::relay::{self, Frame, CHALLENGE, COOKIE_EPOCH_SECS, DELIVER, REGISTERED, SEND};
use mesh_proto::Key;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::{emit_runs, serve, Out, Relay, Run, EXPIRY_SECS};
use crate::control::state::Clock;
use crate::control::stats::RelayCounts;
use crate::testutil::{hello, private, remote, Harness, RELAY_SECRET};
use crate::udp;

/// How long a datagram that should arrive may take.
const ARRIVE: Duration = Duration::from_secs(2);
/// How long to wait before concluding a datagram was not forwarded.
const SILENCE: Duration = Duration::from_millis(150);

struct Lab {
    h: Harness,
    relay: Arc<Relay>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lab {
    /// Networks `lab` and `other`, and a relay on 127.0.0.1.
    async fn new() -> Lab {
        let h = Harness::new();
        h.network("lab").await;
        h.network("other").await;
        let relay = Arc::new(Relay::new(RELAY_SECRET, &h.coord));
        let socket = udp::bind("relay", "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let clock: Arc<dyn Clock> = h.clock.clone();
        let task = tokio::spawn(serve(socket, relay.clone(), clock));
        Lab {
            h,
            relay,
            addr,
            task,
        }
    }

    /// Node `seed` joins `net` with a token (authorised) and gets a socket.
    async fn member(&self, net: &str, seed: u8) -> Member {
        let token = self.h.token(net, false, None).await;
        self.h
            .coord
            .admit(&hello(net, &private(seed), Some(token)), remote(seed))
            .await
            .unwrap();
        Member::new(seed, self.addr).await
    }

    /// Node `seed` knocks on `net` without a token (pending).
    async fn pending(&self, net: &str, seed: u8) -> Member {
        self.h
            .coord
            .admit(&hello(net, &private(seed), None), remote(seed))
            .await
            .unwrap();
        Member::new(seed, self.addr).await
    }

    fn counts(&self) -> RelayCounts {
        self.h.coord.stats().read().relay
    }

    /// Waits until the relay has handled `n` more datagrams than `before` shows (the
    /// relay runs in its own task; counters tell when it is done).
    async fn settle(&self, before: RelayCounts, n: u64) {
        let total = |c: RelayCounts| {
            c.registered
                + c.challenged
                + c.forwarded_packets
                + c.dropped_malformed
                + c.dropped_stale_cookie
                + c.dropped_bad_token
                + c.dropped_not_member
                + c.dropped_unregistered_source
                + c.dropped_sender_unauthorized
                + c.dropped_other_network
                + c.dropped_unregistered_destination
        };
        let deadline = tokio::time::Instant::now() + ARRIVE;
        while total(self.counts()) < total(before) + n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "relay did not handle {n} datagrams: {:?}",
                self.counts()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A simulated member: its key and its own UDP socket.
struct Member {
    key: Key,
    sock: UdpSocket,
    relay: SocketAddr,
}

impl Member {
    async fn new(seed: u8, relay: SocketAddr) -> Member {
        Member {
            key: private(seed).public_key(),
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            relay,
        }
    }

    fn token(&self) -> Key {
        relay::token(&RELAY_SECRET, &self.key)
    }

    async fn send_raw(&self, datagram: &[u8]) {
        self.sock.send_to(datagram, self.relay).await.unwrap();
    }

    /// HELLO; the cookie of the CHALLENGE that came back, if one did.
    async fn hello(&self) -> Option<Key> {
        self.send_raw(&relay::hello(&self.key)).await;
        let reply = self.recv(SILENCE * 2).await?;
        assert_eq!(
            reply.len(),
            relay::hello(&self.key).len(),
            "CHALLENGE is as long as HELLO"
        );
        match relay::parse(&reply) {
            Some(Frame::Challenge { key, cookie }) if key == self.key => Some(cookie),
            other => panic!("unexpected answer to HELLO: {other:?}"),
        }
    }

    /// The REGISTER this socket would send with `token`, after a HELLO for its cookie.
    async fn register_datagram(&self, token: &Key) -> Option<Vec<u8>> {
        let cookie = self.hello().await?;
        Some(relay::register(&self.key, token, &cookie))
    }

    /// Sends `register` (a REGISTER datagram); the next cookie if REGISTERED came back.
    async fn send_register(&self, register: &[u8]) -> Option<Key> {
        self.send_raw(register).await;
        let reply = self.recv(SILENCE * 2).await?;
        assert!(
            reply.len() <= register.len(),
            "REGISTERED is not longer than REGISTER"
        );
        match relay::parse(&reply) {
            Some(Frame::Registered { key, cookie }) if key == self.key => Some(cookie),
            other => panic!("unexpected answer to REGISTER: {other:?}"),
        }
    }

    /// HELLO, then REGISTER with `token`; whether REGISTERED came back.
    async fn register_with(&self, token: &Key) -> bool {
        match self.register_datagram(token).await {
            Some(register) => self.send_register(&register).await.is_some(),
            None => false,
        }
    }

    async fn register(&self) {
        assert!(self.register_with(&self.token()).await, "not registered");
    }

    async fn send_to(&self, to: &Key, payload: &[u8]) {
        self.send_raw(&relay::frame(SEND, to, payload)).await;
    }

    async fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(wait, self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                assert_eq!(from, self.relay, "datagram from elsewhere");
                buf.truncate(n);
                Some(buf)
            }
            Ok(Err(e)) => panic!("receive: {e}"),
            Err(_) => None,
        }
    }

    /// Asserts a DELIVER from `from` with `payload` arrives.
    async fn expect_delivery(&self, from: &Key, payload: &[u8]) {
        let got = self.recv(ARRIVE).await.expect("nothing delivered");
        assert_eq!(
            relay::parse(&got),
            Some(Frame::Deliver {
                from: *from,
                payload
            })
        );
        assert_eq!(got[4], DELIVER);
    }

    /// Asserts nothing arrives for a while.
    async fn expect_nothing(&self) {
        if let Some(got) = self.recv(SILENCE).await {
            panic!("unexpected datagram: {:?}", relay::parse(&got));
        }
    }
}

#[tokio::test]
async fn register_with_a_good_token_is_acknowledged() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    a.register().await;
    // Refreshing is the same exchange.
    a.register().await;
    assert_eq!(lab.counts().registered, 2);
    assert_eq!(lab.relay.registrations(), 1);
}

#[tokio::test]
async fn bad_tokens_strangers_pending_and_deauthorised_members_are_not_registered() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    let b = lab.member("lab", 2).await;
    // Someone else's token, a token made with another secret.
    assert!(!a.register_with(&b.token()).await);
    assert!(!a.register_with(&relay::token(&Key([6; 32]), &a.key)).await);
    // A key the coordinator never saw, with the right token for it.
    let stranger = Member::new(9, lab.addr).await;
    assert!(!stranger.register_with(&stranger.token()).await);
    // A pending member.
    let p = lab.pending("lab", 3).await;
    assert!(!p.register_with(&p.token()).await);
    // A deauthorised member.
    lab.h.coord.deauthorize("lab", "node-2").await.unwrap();
    assert!(!b.register_with(&b.token()).await);
    // Garbage and relay-to-node frames sent to the relay.
    let before = lab.counts();
    a.send_raw(b"\x01\x00\x00\x00garbage").await;
    a.send_raw(&relay::short(REGISTERED, &a.key, &a.key)).await;
    a.send_raw(&relay::short(CHALLENGE, &a.key, &a.key)).await;
    a.send_raw(&relay::frame(DELIVER, &b.key, b"x")).await;
    // The old REGISTER, "wmL1" | 1 | key | token in clear, even with the right token.
    a.send_raw(
        &[
            &relay::MAGIC[..],
            &[relay::REGISTER],
            &a.key.0,
            &a.token().0,
        ]
        .concat(),
    )
    .await;
    lab.settle(before, 5).await;
    a.expect_nothing().await;

    let c = lab.counts();
    assert_eq!(c.registered, 0);
    assert_eq!(c.dropped_bad_token, 2);
    assert_eq!(c.dropped_not_member, 3);
    assert_eq!(c.dropped_malformed, 5);
    assert_eq!(lab.relay.registrations(), 0);
}

#[tokio::test]
async fn send_between_members_of_one_network_is_delivered_with_the_sender_key() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    let b = lab.member("lab", 2).await;
    a.register().await;
    b.register().await;

    let handshake = [0x01u8; 148];
    a.send_to(&b.key, &handshake).await;
    b.expect_delivery(&a.key, &handshake).await;
    b.send_to(&a.key, b"pong").await;
    a.expect_delivery(&b.key, b"pong").await;
    // A large datagram and an empty one pass unchanged.
    let big = vec![0xabu8; 1420];
    a.send_to(&b.key, &big).await;
    b.expect_delivery(&a.key, &big).await;
    a.send_to(&b.key, b"").await;
    b.expect_delivery(&a.key, b"").await;

    let c = lab.counts();
    assert_eq!(c.forwarded_packets, 4);
    assert_eq!(c.forwarded_bytes, 148 + 4 + 1420);
}

#[tokio::test]
async fn sends_outside_the_rules_are_dropped_and_counted() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    let b = lab.member("lab", 2).await;
    let c = lab.member("other", 3).await;
    let d = lab.member("lab", 4).await; // never registers
    for m in [&a, &b, &c] {
        m.register().await;
    }

    let before = lab.counts();
    // To a registered member of another network.
    a.send_to(&c.key, b"x").await;
    c.send_to(&a.key, b"x").await;
    // From a source address nobody registered (d's socket), to a registered member.
    d.send_to(&b.key, b"x").await;
    // A stranger's socket claiming nothing at all.
    let stranger = Member::new(9, lab.addr).await;
    stranger.send_to(&b.key, b"x").await;
    // To a member of the same network that is not registered, and to an unknown key.
    a.send_to(&d.key, b"x").await;
    a.send_to(&Key([77; 32]), b"x").await;
    lab.settle(before, 6).await;
    for m in [&a, &b, &c, &d] {
        m.expect_nothing().await;
    }

    let n = lab.counts();
    assert_eq!(n.forwarded_packets, 0);
    assert_eq!(n.dropped_other_network - before.dropped_other_network, 3);
    assert_eq!(n.dropped_unregistered_source, 2);
    assert_eq!(n.dropped_unregistered_destination, 1);

    // A member of both networks reaches both.
    let token = lab.h.token("other", false, None).await;
    lab.h
        .coord
        .admit(&hello("other", &private(1), Some(token)), remote(1))
        .await
        .unwrap();
    a.send_to(&c.key, b"both").await;
    c.expect_delivery(&a.key, b"both").await;
    a.send_to(&b.key, b"both").await;
    b.expect_delivery(&a.key, b"both").await;
}

#[tokio::test]
async fn deauthorisation_and_deletion_stop_forwarding_at_once() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    let b = lab.member("lab", 2).await;
    a.register().await;
    b.register().await;
    a.send_to(&b.key, b"before").await;
    b.expect_delivery(&a.key, b"before").await;

    // The next datagram after the admin's answer is refused, both ways.
    lab.h.coord.deauthorize("lab", "node-2").await.unwrap();
    let before = lab.counts();
    a.send_to(&b.key, b"after").await;
    b.send_to(&a.key, b"after").await;
    lab.settle(before, 2).await;
    b.expect_nothing().await;
    a.expect_nothing().await;
    let c = lab.counts();
    assert_eq!(c.dropped_other_network, 1);
    assert_eq!(c.dropped_sender_unauthorized, 1);

    // Authorised again, the live registration serves at once.
    lab.h.coord.authorize("lab", "node-2").await.unwrap();
    a.send_to(&b.key, b"again").await;
    b.expect_delivery(&a.key, b"again").await;

    // Deleting a member, or its network, stops it too.
    lab.h.coord.delete_member("lab", "node-1").await.unwrap();
    a.send_to(&b.key, b"deleted").await;
    b.send_to(&a.key, b"deleted").await;
    b.expect_nothing().await;
    a.expect_nothing().await;
    let e = lab.member("lab", 5).await;
    e.register().await;
    e.send_to(&b.key, b"new").await;
    b.expect_delivery(&e.key, b"new").await;
    lab.h.coord.delete_network("lab").await.unwrap();
    e.send_to(&b.key, b"gone").await;
    b.expect_nothing().await;
    assert!(!e.register_with(&e.token()).await);
}

#[tokio::test]
async fn registrations_expire_without_refresh() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    let b = lab.member("lab", 2).await;
    a.register().await;
    b.register().await;

    lab.h.clock.advance(EXPIRY_SECS - 1);
    a.send_to(&b.key, b"still").await;
    b.expect_delivery(&a.key, b"still").await;

    // a refreshes, b does not: a may still send, but not to b.
    a.register().await;
    lab.h.clock.advance(1);
    let before = lab.counts();
    a.send_to(&b.key, b"late").await;
    lab.settle(before, 1).await;
    b.expect_nothing().await;
    assert_eq!(lab.counts().dropped_unregistered_destination, 1);
    // And b's address speaks for no one.
    b.send_to(&a.key, b"late").await;
    lab.settle(before, 2).await;
    a.expect_nothing().await;
    assert_eq!(lab.counts().dropped_unregistered_source, 1);

    // The sweep drops b only.
    assert_eq!(lab.relay.expire(lab.h.clock.now()), 1);
    assert_eq!(lab.relay.registrations(), 1);
    assert_eq!(lab.counts().expired, 1);

    // Registering again restores the path.
    b.register().await;
    a.send_to(&b.key, b"back").await;
    b.expect_delivery(&a.key, b"back").await;
}

#[tokio::test]
async fn a_member_that_moves_is_reached_at_its_new_address() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    let b = lab.member("lab", 2).await;
    a.register().await;
    b.register().await;

    // b's NAT mapping changes: same key, new source address.
    let b2 = Member::new(2, lab.addr).await;
    b2.register().await;
    a.send_to(&b.key, b"moved").await;
    b2.expect_delivery(&a.key, b"moved").await;
    b.expect_nothing().await;
    // The old address no longer speaks for b.
    let before = lab.counts();
    b.send_to(&a.key, b"old").await;
    lab.settle(before, 1).await;
    a.expect_nothing().await;
    assert_eq!(lab.counts().dropped_unregistered_source, 1);
    assert_eq!(lab.relay.registrations(), 2);
}

#[tokio::test]
async fn a_register_replayed_from_another_address_is_refused() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    let b = lab.member("lab", 2).await;
    b.register().await;
    // The victim registers; an attacker captured its REGISTER on the way.
    let captured = a.register_datagram(&a.token()).await.unwrap();
    assert!(a.send_register(&captured).await.is_some());

    // Sent unchanged from the attacker's address: no answer, no binding.
    let attacker = Member::new(1, lab.addr).await;
    let before = lab.counts();
    assert!(attacker.send_register(&captured).await.is_none());
    assert_eq!(
        lab.counts().dropped_stale_cookie - before.dropped_stale_cookie,
        1
    );
    // Its SENDs are not delivered as the victim's, and the victim's path is untouched.
    let before = lab.counts();
    attacker.send_to(&b.key, b"diverted").await;
    lab.settle(before, 1).await;
    b.expect_nothing().await;
    assert_eq!(lab.counts().dropped_unregistered_source, 1);
    b.send_to(&a.key, b"to the victim").await;
    a.expect_delivery(&b.key, b"to the victim").await;
    attacker.expect_nothing().await;

    // Even a cookie the attacker got for its own address does not help without the token.
    let cookie = attacker
        .hello()
        .await
        .expect("a member's key is challenged");
    let forged = relay::register(&a.key, &Key([0; 32]), &cookie);
    let before = lab.counts();
    assert!(attacker.send_register(&forged).await.is_none());
    assert_eq!(lab.counts().dropped_bad_token - before.dropped_bad_token, 1);
    // Nor the victim's cookie with a proof for the attacker's own address.
    let mut spliced = captured.clone();
    spliced[relay::HEADER_LEN..relay::HEADER_LEN + 32].copy_from_slice(&cookie.0);
    assert!(attacker.send_register(&spliced).await.is_none());
    assert_eq!(lab.counts().dropped_bad_token - before.dropped_bad_token, 2);
    assert_eq!(lab.relay.registrations(), 2);
}

#[tokio::test]
async fn a_register_is_good_for_one_window_more_and_no_longer() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    // Start at a window's beginning so the arithmetic below is exact.
    let now = lab.h.clock.now();
    lab.h
        .clock
        .advance(COOKIE_EPOCH_SECS - now % COOKIE_EPOCH_SECS);
    let register = a.register_datagram(&a.token()).await.unwrap();
    assert!(a.send_register(&register).await.is_some());

    // The next window still takes it (a node's cookie lives 30–60 s)…
    lab.h
        .clock
        .advance(COOKIE_EPOCH_SECS + COOKIE_EPOCH_SECS - 1);
    let next = a.send_register(&register).await;
    assert!(next.is_some(), "refused in the following window");
    // …and the REGISTERED carried a cookie of the current window.
    assert_ne!(
        next,
        Some(Key(register[relay::HEADER_LEN..relay::HEADER_LEN + 32]
            .try_into()
            .unwrap()))
    );

    // One second later it is two windows old: refused, even from the right address.
    lab.h.clock.advance(1);
    let before = lab.counts();
    assert!(a.send_register(&register).await.is_none());
    assert_eq!(
        lab.counts().dropped_stale_cookie - before.dropped_stale_cookie,
        1
    );
    // The cookie from the last REGISTERED still works; a fresh exchange always does.
    let refreshed = relay::register(&a.key, &a.token(), &next.unwrap());
    assert!(a.send_register(&refreshed).await.is_some());
    a.register().await;
}

#[tokio::test]
async fn hellos_of_strangers_get_no_cookie_and_answers_never_outgrow_questions() {
    let lab = Lab::new().await;
    let stranger = Member::new(9, lab.addr).await;
    assert_eq!(stranger.hello().await, None);
    assert_eq!(lab.counts().dropped_not_member, 1);
    assert_eq!(lab.counts().challenged, 0);
    // The size checks are in `hello` and `send_register`; a member exercises both.
    let a = lab.member("lab", 1).await;
    a.register().await;
    assert_eq!(lab.counts().challenged, 1);
}

// ---------------------------------------------------------------------------------------
// Trains (GRO in, GSO out)
// ---------------------------------------------------------------------------------------

/// The sends `handle_train` asks for, copied out.
#[derive(Debug, PartialEq, Eq)]
struct Sent {
    to: SocketAddr,
    contents: Vec<u8>,
    segment: Option<usize>,
}

fn train_of(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

fn handle_train(lab: &Lab, from: SocketAddr, train: &mut [u8], stride: usize) -> Vec<Sent> {
    let mut sent = Vec::new();
    lab.relay
        .handle_train(lab.h.clock.now(), from, train, stride, 64, |s| {
            sent.push(Sent {
                to: s.to,
                contents: s.contents.to_vec(),
                segment: s.segment,
            })
        });
    sent
}

fn out(port: u16, len: usize) -> Option<Out> {
    Some(Out {
        to: SocketAddr::from(([127, 0, 0, 1], port)),
        len,
    })
}

#[test]
fn runs_join_consecutive_whole_datagrams_to_one_address() {
    let train: Vec<u8> = (0..=255u8).cycle().take(10 * 4).collect();
    let runs = |outs: &[Option<Out>], max: usize| {
        let mut got = Vec::new();
        emit_runs(&train[..outs.len() * 4], 4, outs, max, &mut |s: Run<'_>| {
            got.push((s.to.port(), s.contents.to_vec(), s.segment))
        });
        got
    };
    // Three to one address, the last shorter: one GSO send.
    assert_eq!(
        runs(&[out(1, 4), out(1, 4), out(1, 2)], 64),
        vec![(1, train[..10].to_vec(), Some(4))]
    );
    // A drop or another address ends a run; a lone datagram is no GSO send.
    assert_eq!(
        runs(&[out(1, 4), None, out(1, 4), out(2, 4), out(2, 4)], 64),
        vec![
            (1, train[..4].to_vec(), None),
            (1, train[8..12].to_vec(), None),
            (2, train[12..20].to_vec(), Some(4)),
        ]
    );
    // An answer shorter than its question ends its run (it is the run's last segment).
    assert_eq!(
        runs(&[out(1, 4), out(1, 3), out(1, 4)], 64),
        vec![
            (1, train[..7].to_vec(), Some(4)),
            (1, train[8..12].to_vec(), None)
        ]
    );
    // At most `max` segments per send.
    assert_eq!(
        runs(&[out(1, 4); 5], 2),
        vec![
            (1, train[..8].to_vec(), Some(4)),
            (1, train[8..16].to_vec(), Some(4)),
            (1, train[16..20].to_vec(), None),
        ]
    );
}

#[tokio::test]
async fn a_train_of_sends_leaves_as_gso_runs_of_delivers() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    let b = lab.member("lab", 2).await;
    let stranger = lab.member("other", 3).await;
    a.register().await;
    b.register().await;
    stranger.register().await;
    let (a_addr, b_addr) = (a.sock.local_addr().unwrap(), b.sock.local_addr().unwrap());

    let p = |i: u8, n: usize| vec![i; n];
    let frames = [
        relay::frame(SEND, &b.key, &p(1, 100)),
        relay::frame(SEND, &b.key, &p(2, 100)),
        relay::frame(SEND, &stranger.key, &p(3, 100)),
        relay::frame(SEND, &b.key, &p(4, 100)),
        relay::frame(SEND, &b.key, &p(5, 40)),
    ];
    let stride = frames[0].len();
    let mut train = train_of(&frames);
    let before = lab.counts();
    let sent = handle_train(&lab, a_addr, &mut train, stride);
    let deliver = |payloads: &[Vec<u8>]| {
        payloads
            .iter()
            .map(|pl| relay::frame(DELIVER, &a.key, pl))
            .collect::<Vec<_>>()
            .concat()
    };
    assert_eq!(
        sent,
        vec![
            Sent {
                to: b_addr,
                contents: deliver(&[p(1, 100), p(2, 100)]),
                segment: Some(stride),
            },
            Sent {
                to: b_addr,
                contents: deliver(&[p(4, 100), p(5, 40)]),
                segment: Some(stride),
            },
        ]
    );
    let c = lab.counts();
    assert_eq!(c.forwarded_packets - before.forwarded_packets, 4);
    assert_eq!(c.forwarded_bytes - before.forwarded_bytes, 340);
    assert_eq!(c.dropped_other_network - before.dropped_other_network, 1);
}

#[tokio::test]
async fn a_train_is_decided_datagram_by_datagram() {
    let lab = Lab::new().await;
    let b = lab.member("lab", 2).await;
    let c = lab.member("lab", 3).await;
    b.register().await;
    let (b_addr, c_addr) = (b.sock.local_addr().unwrap(), c.sock.local_addr().unwrap());
    // c's REGISTER in the middle of a train of its SENDs: the SEND before it is from an
    // unregistered address, the one after it is forwarded, as one at a time.
    let register = c.register_datagram(&c.token()).await.unwrap();
    let payload = vec![7u8; register.len() - relay::HEADER_LEN];
    let send = relay::frame(SEND, &b.key, &payload);
    assert_eq!(send.len(), register.len());
    let mut train = train_of(&[send.clone(), register, send.clone()]);
    let before = lab.counts();
    let sent = handle_train(&lab, c_addr, &mut train, send.len());
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].to, c_addr);
    assert!(matches!(
        relay::parse(&sent[0].contents),
        Some(Frame::Registered { key, .. }) if key == c.key
    ));
    assert_eq!(
        sent[1],
        Sent {
            to: b_addr,
            contents: relay::frame(DELIVER, &c.key, &payload),
            segment: None,
        }
    );
    let after = lab.counts();
    assert_eq!(
        after.dropped_unregistered_source - before.dropped_unregistered_source,
        1
    );
    assert_eq!(after.registered - before.registered, 1);
    assert_eq!(after.forwarded_packets - before.forwarded_packets, 1);

    // An empty datagram is counted like any malformed one.
    let before = lab.counts();
    assert_eq!(handle_train(&lab, c_addr, &mut [], 0), vec![]);
    assert_eq!(lab.counts().dropped_malformed - before.dropped_malformed, 1);

    // Deauthorising the sender stops the next train at once.
    lab.h.coord.deauthorize("lab", "node-3").await.unwrap();
    let mut train = train_of(&[send.clone(), send.clone()]);
    assert_eq!(handle_train(&lab, c_addr, &mut train, send.len()), vec![]);
}

#[tokio::test]
async fn gso_trains_through_the_socket_arrive_as_separate_delivers() {
    let lab = Lab::new().await;
    let a = lab.member("lab", 1).await;
    let b = lab.member("lab", 2).await;
    a.register().await;
    b.register().await;
    // a sends 20 SENDs as one GSO train (or one by one where the kernel has no GSO).
    let frames: Vec<Vec<u8>> = (0..20u8)
        .map(|i| relay::frame(SEND, &b.key, &[i; 1000]))
        .collect();
    let stride = frames[0].len();
    let train = train_of(&frames);
    let state = quinn_udp::UdpSocketState::new((&a.sock).into()).unwrap();
    let gso = state.max_gso_segments().clamp(1, 20);
    for chunk in train.chunks(gso * stride) {
        let transmit = quinn_udp::Transmit {
            destination: lab.addr,
            ecn: None,
            contents: chunk,
            segment_size: (chunk.len() > stride).then_some(stride),
            src_ip: None,
        };
        a.sock
            .async_io(tokio::io::Interest::WRITABLE, || {
                state.try_send((&a.sock).into(), &transmit)
            })
            .await
            .unwrap();
    }
    for i in 0..20u8 {
        b.expect_delivery(&a.key, &[i; 1000]).await;
    }
    assert_eq!(lab.counts().forwarded_packets, 20);
}
