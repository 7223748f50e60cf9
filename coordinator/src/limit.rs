//! Per-source rate limits: token buckets in a fixed table indexed by a keyed hash of the
//! source IP. Memory is constant whatever the number of sources, and an attacker cannot
//! choose collisions (the hash key is random per limiter). IPv4 and its IPv4-mapped IPv6
//! form are one source; an IPv6 source is its /64 (one host usually holds the whole /64).
//!
//! Used by the reflectors (answers per source), the QUIC endpoint (handshakes per source)
//! and admission (failed join attempts per source). The caller passes the time, so the
//! limiter is tested without sleeping.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Token buckets in a table.
const BUCKETS: usize = 4096;

/// A rate and a burst: `burst` at once, then `per_sec` a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Tokens a bucket holds (and starts with).
    pub burst: f64,
}

/// Per-source token buckets (see the module docs).
pub struct RateLimiter {
    rate: Rate,
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
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// The part of `ip` that counts as one source.
fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 => v4,
    }
}

impl RateLimiter {
    /// Full buckets at `rate`.
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter {
            rate,
            hasher: RandomState::new(),
            buckets: vec![
                Bucket {
                    tokens: rate.burst,
                    last: None,
                };
                BUCKETS
            ]
            .into_boxed_slice(),
        }
    }

    fn bucket(&mut self, ip: IpAddr, now: Instant) -> &mut Bucket {
        let i = (self.hasher.hash_one(source(ip)) % BUCKETS as u64) as usize;
        let rate = self.rate;
        let b = &mut self.buckets[i];
        if let Some(last) = b.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate.per_sec).min(rate.burst);
        }
        b.last = Some(now);
        b
    }

    /// Takes a token for `ip` at `now`; `false` when its bucket is empty.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let b = self.bucket(ip, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until `ip` has a token again (zero when it has one now); takes none.
    pub fn wait(&mut self, ip: IpAddr, now: Instant) -> Duration {
        let per_sec = self.rate.per_sec;
        let b = self.bucket(ip, now);
        if b.tokens >= 1.0 {
            Duration::ZERO
        } else if per_sec > 0.0 {
            Duration::from_secs_f64((1.0 - b.tokens) / per_sec)
        } else {
            Duration::MAX
        }
    }

    /// Takes a token for `ip` at `now` even if that leaves the bucket short: what was
    /// done (a failed attempt) is paid for after the fact.
    pub fn charge(&mut self, ip: IpAddr, now: Instant) {
        let b = self.bucket(ip, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIFTY: Rate = Rate {
        per_sec: 50.0,
        burst: 50.0,
    };

    #[test]
    fn rate_limit_per_source() {
        let mut l = RateLimiter::new(FIFTY);
        let t0 = Instant::now();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.1".parse().unwrap();
        let allowed = (0..200).filter(|_| l.allow(a, t0)).count();
        assert_eq!(allowed, 50);
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
        assert_eq!((0..200).filter(|_| l.allow(a, t2)).count(), 50);
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64() {
        let mut l = RateLimiter::new(Rate {
            per_sec: 1.0,
            burst: 2.0,
        });
        let t = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(l.allow(a, t));
        assert!(l.allow(b, t));
        assert!(!l.allow(a, t), "the same /64 shares one bucket");
    }

    #[test]
    fn charges_and_waits() {
        let mut l = RateLimiter::new(Rate {
            per_sec: 0.5,
            burst: 3.0,
        });
        let t = Instant::now();
        let a: IpAddr = "198.51.100.9".parse().unwrap();
        assert_eq!(l.wait(a, t), Duration::ZERO);
        for _ in 0..5 {
            l.charge(a, t);
        }
        // Empty (not below zero): one token two seconds later.
        assert_eq!(l.wait(a, t), Duration::from_secs(2));
        assert!(!l.allow(a, t));
        assert_eq!(l.wait(a, t + Duration::from_secs(2)), Duration::ZERO);
        assert!(l.allow(a, t + Duration::from_secs(2)));
    }
}
