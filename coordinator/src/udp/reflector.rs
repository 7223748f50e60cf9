//! Endpoint reflection ([`mesh_proto::reflect`]): a UDP socket that tells each sender the
//! source address and port it saw, so a node behind NAT learns the mapping of its
//! WireGuard socket. The coordinator runs two (two ports), so a node can tell an
//! endpoint-independent mapping from an endpoint-dependent one.
//!
//! Stateless apart from the rate limiter: a request is answered from the datagram and
//! its source alone, with no allocation but the reply. Anything that is not exactly a
//! request is dropped without an answer.
//!
//! **Not an amplifier:** a reply is at most 35 bytes against a 16-byte request, and each
//! source IP gets at most [`RATE_PER_SEC`] replies per second (burst [`BURST`]) per
//! reflector, so a forged source address earns its owner a trickle at most. The limiter
//! is a fixed table of token buckets indexed by a keyed hash of the IP: memory is
//! constant whatever the number of sources, and an attacker cannot choose collisions.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use mesh_proto::reflect;
use tokio::net::UdpSocket;

use crate::control::stats::{NatStats, ReflectorStats};

/// Replies per second each source IP may get from one reflector.
pub const RATE_PER_SEC: f64 = 50.0;
/// Replies a source IP may get at once before the rate applies.
pub const BURST: f64 = 50.0;
/// Token buckets in the limiter table.
const BUCKETS: usize = 4096;
/// Receive buffer: longer than any request, so a longer datagram shows as invalid.
const RECV_BUF: usize = 64;

/// Per-source-IP token buckets in a fixed table (see the module docs).
pub struct RateLimiter {
    hasher: RandomState,
    buckets: Box<[Bucket]>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Last refill; `None`: never used (full).
    last: Option<Instant>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

impl Default for RateLimiter {
    fn default() -> RateLimiter {
        RateLimiter {
            hasher: RandomState::new(),
            buckets: vec![
                Bucket {
                    tokens: BURST,
                    last: None,
                };
                BUCKETS
            ]
            .into_boxed_slice(),
        }
    }
}

impl RateLimiter {
    /// Takes a token for `ip` at `now`; `false` when its bucket is empty.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let i = (self.hasher.hash_one(ip.to_canonical()) % BUCKETS as u64) as usize;
        let b = &mut self.buckets[i];
        if let Some(last) = b.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * RATE_PER_SEC).min(BURST);
        }
        b.last = Some(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The reply to `datagram` from `from`, if it is a request within the rate limit; counts.
pub fn answer(
    datagram: &[u8],
    from: SocketAddr,
    now: Instant,
    limiter: &mut RateLimiter,
    stats: &ReflectorStats,
) -> Option<Vec<u8>> {
    let Some(txid) = reflect::parse_request(datagram) else {
        stats.invalid.inc();
        return None;
    };
    stats.requests.inc();
    if !limiter.allow(from.ip(), now) {
        stats.rate_limited.inc();
        return None;
    }
    Some(reflect::response(txid, from))
}

/// Answers requests on `socket` until the task is dropped.
pub async fn serve(socket: UdpSocket, stats: Arc<NatStats>) {
    let mut limiter = RateLimiter::default();
    let mut buf = [0u8; RECV_BUF];
    let stats = &stats.reflector;
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // ICMP errors for earlier replies and the like: nothing to do.
                tracing::trace!("reflector receive: {e}");
                continue;
            }
        };
        if let Some(reply) = answer(&buf[..n], from, Instant::now(), &mut limiter, stats) {
            match socket.try_send_to(&reply, from) {
                Ok(_) => stats.answered.inc(),
                Err(e) => {
                    tracing::trace!(%from, "reflector send: {e}");
                    stats.send_failed.inc();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_limit_per_source() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.1".parse().unwrap();
        let allowed = (0..200).filter(|_| l.allow(a, t0)).count();
        assert_eq!(allowed, BURST as usize);
        assert!(!l.allow(mapped, t0), "a mapped address is the same source");
        // Another source has its own bucket (unless it collides, which these do not
        // with any real chance: 1 in 4096).
        let other = (0..10).filter(|_| l.allow(b, t0)).count();
        assert!(other == 10 || other == 0);
        // 100 ms refill 5 tokens.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!((0..20).filter(|_| l.allow(a, t1)).count(), 5);
        // A long pause refills to the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..200).filter(|_| l.allow(a, t2)).count(), BURST as usize);
    }

    #[test]
    fn answers_requests_only() {
        let stats = ReflectorStats::default();
        let mut l = RateLimiter::default();
        let from: SocketAddr = "[::ffff:198.51.100.7]:40000".parse().unwrap();
        let now = Instant::now();
        let req = reflect::request([7; 12]);
        let reply = answer(&req, from, now, &mut l, &stats).unwrap();
        assert_eq!(
            reflect::parse_response(&reply),
            Some(([7; 12], "198.51.100.7:40000".parse().unwrap()))
        );
        for bad in [&req[..15], &[0u8; 16][..], &reply[..], b"wmR1"] {
            assert!(answer(bad, from, now, &mut l, &stats).is_none());
        }
        assert_eq!(stats.requests.get(), 1);
        assert_eq!(stats.invalid.get(), 4);
    }

    /// Two reflectors on 127.0.0.1 and a client socket.
    async fn reflectors() -> (
        Vec<SocketAddr>,
        Arc<NatStats>,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        let stats = Arc::new(NatStats::default());
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let sock = crate::udp::bind("reflector", "127.0.0.1:0".parse().unwrap()).unwrap();
            addrs.push(sock.local_addr().unwrap());
            tasks.push(tokio::spawn(serve(sock, stats.clone())));
        }
        (addrs, stats, tasks)
    }

    async fn recv(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 128];
        let got = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await;
        got.ok().map(|r| {
            let (n, from) = r.unwrap();
            (buf[..n].to_vec(), from)
        })
    }

    #[tokio::test]
    async fn reflectors_answer_with_the_observed_address_and_ignore_garbage() {
        let (addrs, stats, tasks) = reflectors().await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = client.local_addr().unwrap();
        for (i, r) in addrs.iter().enumerate() {
            let txid = [i as u8 + 1; 12];
            client.send_to(&reflect::request(txid), r).await.unwrap();
            let (reply, from) = recv(&client, Duration::from_secs(2)).await.unwrap();
            assert_eq!(from, *r);
            assert_eq!(reflect::parse_response(&reply), Some((txid, me)));
        }
        // One socket seen by both: the mapping classifies as endpoint-independent.
        assert_eq!(
            reflect::classify(Some(me), Some(me)),
            reflect::Mapping::EndpointIndependent
        );

        let mut long = reflect::request([9; 12]).to_vec();
        long.push(0);
        for garbage in [
            &b""[..],
            b"x",
            &reflect::request([9; 12])[..15],
            &long,
            &[0u8; 1500],
        ] {
            client.send_to(garbage, addrs[0]).await.unwrap();
        }
        assert!(recv(&client, Duration::from_millis(200)).await.is_none());
        let c = stats.read().reflector;
        assert_eq!((c.requests, c.answered, c.invalid), (2, 2, 5));
        for t in tasks {
            t.abort();
        }
    }

    #[tokio::test]
    async fn a_flood_from_one_source_is_cut_to_the_rate() {
        let (addrs, stats, tasks) = reflectors().await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..120u8 {
            client
                .send_to(&reflect::request([i; 12]), addrs[0])
                .await
                .unwrap();
        }
        let mut answers = 0;
        while recv(&client, Duration::from_millis(300)).await.is_some() {
            answers += 1;
        }
        let c = stats.read().reflector;
        assert_eq!(c.requests, 120);
        assert_eq!(c.answered, answers);
        assert_eq!(c.rate_limited + c.answered, 120);
        // The burst, plus whatever refilled while the flood was being sent.
        assert!((50..=70).contains(&answers), "{answers} answers");
        for t in tasks {
            t.abort();
        }
    }
}
