//! Endpoint reflection ([`mesh_proto::reflect`]): a UDP socket that tells each sender the
//! source address and port it saw, so a node behind NAT learns the mapping of its
//! WireGuard socket. The coordinator runs two (two ports), so a node can tell an
//! endpoint-independent mapping from an endpoint-dependent one.
//!
//! Stateless apart from the rate limiter: a request is answered from the datagram and
//! its source alone, with no allocation but the reply. Anything that is not exactly a
//! request is dropped without an answer.
//!
//! **Not an amplifier:** a reply (at most 35 bytes) is never longer than the request it
//! answers (36 bytes: requests are padded for this), and each source IP gets at most
//! [`RATE`] replies per reflector ([`crate::limit`]), so a forged source address earns its
//! owner a trickle at most, no larger than what the forger sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mesh_proto::reflect;
use tokio::net::UdpSocket;

use crate::control::stats::{NatStats, ReflectorStats};
use crate::limit::{Rate, RateLimiter};

/// Replies each source IP may get from one reflector: 50 at once, then 50 a second.
pub const RATE: Rate = Rate {
    per_sec: 50.0,
    burst: 50.0,
};
/// Receive buffer: longer than any request, so a longer datagram shows as invalid.
const RECV_BUF: usize = 64;

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
    let mut limiter = RateLimiter::new(RATE);
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
    fn answers_requests_only() {
        let stats = ReflectorStats::default();
        let mut l = RateLimiter::new(RATE);
        let from: SocketAddr = "[::ffff:198.51.100.7]:40000".parse().unwrap();
        let now = Instant::now();
        let req = reflect::request([7; 12]);
        let reply = answer(&req, from, now, &mut l, &stats).unwrap();
        assert_eq!(
            reflect::parse_response(&reply),
            Some(([7; 12], "198.51.100.7:40000".parse().unwrap()))
        );
        // Never more bytes out than in, for either family.
        assert!(reply.len() <= req.len());
        let v6: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        let reply6 = answer(&req, v6, now, &mut l, &stats).unwrap();
        assert!(
            reply6.len() <= req.len(),
            "{} > {}",
            reply6.len(),
            req.len()
        );
        // The old unpadded 16-byte request gets nothing (its answer would be larger).
        for bad in [&req[..15], &req[..16], &[0u8; 36][..], &reply[..], b"wmR1"] {
            assert!(answer(bad, from, now, &mut l, &stats).is_none());
        }
        assert_eq!(stats.requests.get(), 2);
        assert_eq!(stats.invalid.get(), 5);
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
