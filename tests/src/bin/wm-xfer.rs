//! wm-xfer: the end-to-end tests' traffic tool.
//!
//! ```text
//! wm-xfer send HOST:PORT BYTES          connect (retrying for 20 s), send BYTES of a seeded
//!                                       xorshift stream, print "bytes=N sha256=HEX"
//! wm-xfer recv BIND:PORT                accept one connection, read to EOF,
//!                                       print "bytes=N sha256=HEX"
//! wm-xfer garbage HOST:PORT COUNT SEED  send COUNT junk UDP datagrams (lengths 0..=1500,
//!                                       some shaped like WireGuard messages), print "sent=N"
//! ```
//! The sender's and the receiver's lines are equal exactly when the stream arrived intact.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

/// xorshift64* (Vigna): deterministic, fast, good enough to defeat compression and to make
/// every byte position distinct.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const STREAM_SEED: u64 = 0x5EED_F00D_3E5E_u64;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn send(addr: &str, total: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("wm-xfer: connect {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {addr}")),
        }
    };
    let mut rng = Rng::new(STREAM_SEED);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64))?;
        rng.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        stream.write_all(&buf[..n]).context("sending")?;
        left -= n as u64;
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .context("closing the send side")?;
    // Wait for the receiver to close, so "done" means "all of it was read".
    let mut sink = [0u8; 16];
    let _ = stream.read(&mut sink);
    println!("bytes={total} sha256={}", hex(&hash.finalize()));
    Ok(())
}

fn recv(bind: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(bind).with_context(|| format!("listening on {bind}"))?;
    eprintln!("wm-xfer: listening on {bind}");
    let (mut stream, peer) = listener.accept().context("accepting")?;
    eprintln!("wm-xfer: connection from {peer}");
    let mut hash = Sha256::new();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).context("receiving")?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
    println!("bytes={total} sha256={}", hex(&hash.finalize()));
    Ok(())
}

/// Junk for a WireGuard port: uniformly random lengths and bytes, plus datagrams with a
/// valid message type (1..=4) and zero reserved bytes, a third of them with the exact size
/// of that message type (148, 92, 64, or a transport message), so they get past the cheap
/// length checks and into the MAC / decryption paths.
fn garbage(addr: &str, count: u64, seed: u64) -> anyhow::Result<()> {
    let sock = UdpSocket::bind("0.0.0.0:0").context("binding a UDP socket")?;
    sock.connect(addr)
        .with_context(|| format!("connecting UDP to {addr}"))?;
    let mut rng = Rng::new(seed);
    let mut buf = [0u8; 1500];
    let mut sent = 0u64;
    for i in 0..count {
        let mut len = usize::try_from(rng.below(1501))?;
        rng.fill(&mut buf);
        if rng.below(2) == 0 {
            let ty = 1 + rng.below(4);
            if rng.below(3) == 0 {
                len = match ty {
                    1 => 148,
                    2 => 92,
                    3 => 64,
                    _ => 32 + 16 * usize::try_from(rng.below(80))?,
                };
            }
            if len >= 4 {
                buf[..4].copy_from_slice(&[ty as u8, 0, 0, 0]);
            } else if len > 0 {
                buf[0] = ty as u8;
            }
        }
        // The receiver may be slow or gone: errors such as ECONNREFUSED are expected.
        if sock.send(&buf[..len]).is_ok() {
            sent += 1;
        }
        // Short pauses now and then so the junk is spread over a moment, not one burst.
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    println!("sent={sent}");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["send", addr, bytes] => bytes
            .parse::<u64>()
            .context("BYTES must be a number")
            .and_then(|b| send(addr, b)),
        ["recv", bind] => recv(bind),
        ["garbage", addr, count, seed] => (|| {
            garbage(
                addr,
                count.parse().context("COUNT must be a number")?,
                seed.parse().context("SEED must be a number")?,
            )
        })(),
        _ => Err(anyhow::anyhow!(
            "usage: wm-xfer send HOST:PORT BYTES | recv BIND:PORT | garbage HOST:PORT COUNT SEED"
        )),
    };
    if let Err(e) = result {
        eprintln!("wm-xfer: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_deterministic() {
        let (mut a, mut b) = (Rng::new(STREAM_SEED), Rng::new(STREAM_SEED));
        let (mut x, mut y) = ([0u8; 100], [0u8; 100]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x[..8], x[8..16]);
    }

    #[test]
    fn hex_form() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
