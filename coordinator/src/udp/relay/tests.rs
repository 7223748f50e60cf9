//! The relay over real UDP sockets on 127.0.0.1: one socket per simulated member (so each
//! has its own source address, as behind distinct NATs), membership from a real
//! coordinator state, time from its hand-set clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::relay::{self, Frame, DELIVER, SEND};
use mesh_proto::Key;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::{serve, Relay, EXPIRY_SECS};
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
                + c.forwarded_packets
                + c.dropped_malformed
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

    /// REGISTER with `token`; whether REGISTERED came back.
    async fn register_with(&self, token: &Key) -> bool {
        self.send_raw(&relay::register(&self.key, token)).await;
        match self.recv(SILENCE * 2).await {
            Some(reply) => {
                assert_eq!(
                    relay::parse(&reply),
                    Some(Frame::Registered { key: self.key }),
                    "unexpected answer to REGISTER"
                );
                true
            }
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
    a.send_raw(&relay::registered(&a.key)).await;
    a.send_raw(&relay::frame(DELIVER, &b.key, b"x")).await;
    lab.settle(before, 3).await;
    a.expect_nothing().await;

    let c = lab.counts();
    assert_eq!(c.registered, 0);
    assert_eq!(c.dropped_bad_token, 2);
    assert_eq!(c.dropped_not_member, 3);
    assert_eq!(c.dropped_malformed, 3);
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
