//! wm-xfer: the end-to-end tests' traffic tool.
//!
//! ```text
//! wm-xfer send HOST:PORT BYTES          connect (retrying for 20 s), send BYTES of a seeded
//!                                       xorshift stream, print "bytes=N sha256=HEX"
//! wm-xfer recv BIND:PORT                accept one connection, read to EOF,
//!                                       print "bytes=N sha256=HEX"
//! wm-xfer garbage HOST:PORT COUNT SEED  send COUNT junk UDP datagrams (lengths 0..=1500,
//!                                       some behind WireGuard, relay, reflection, disco or
//!                                       QUIC prefixes), print "sent=N"
//! wm-xfer tcp-garbage HOST:PORT COUNT SEED
//!                                       COUNT TCP connections each sending junk (noise,
//!                                       malformed or cut-off HTTP), print "sent=N"
//! wm-xfer send HOST:PORT BYTES MBIT     as `send`, paced to MBIT Mbit/s (a transfer that
//!                                       lasts, e.g. across a path failover)
//! wm-xfer udp-send [--bind IP:PORT] [--repeat N] [--listen-ms MS] [--ttl N] HOST:PORT HEX...
//!                                       send each hex payload N times from one socket
//!                                       (with IP TTL N: a low TTL opens the local NAT
//!                                       mapping without reaching the peer's NAT),
//!                                       print "sent=N", then for MS milliseconds print
//!                                       "reply FROM HEX" per datagram received, "recv=N"
//! wm-xfer reflect BIND:PORT             answer every datagram with "observed IP:PORT"
//!                                       (its source as seen here), until killed
//! wm-xfer probe BIND:PORT SERVER...     from one socket, ask each reflector what it sees;
//!                                       print "SERVER OBSERVED" or "SERVER -" per server
//! ```
//! The sender's and the receiver's lines are equal exactly when the stream arrived intact.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
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

/// Sends `total` bytes of the stream to `addr`; with `mbit` set, no faster than that on
/// average (checked after every 16 kB write).
fn send(addr: &str, total: u64, mbit: Option<f64>) -> anyhow::Result<()> {
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
    let chunk = if mbit.is_some() { 16 * 1024 } else { 64 * 1024 };
    let mut buf = vec![0u8; chunk];
    let mut left = total;
    let start = Instant::now();
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64))?;
        rng.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        stream.write_all(&buf[..n]).context("sending")?;
        left -= n as u64;
        if let Some(mbit) = mbit {
            let due = Duration::from_secs_f64((total - left) as f64 * 8.0 / (mbit * 1e6));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
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
/// Junk datagram `buf[..len]` of a random shape: plain noise, or noise behind a prefix
/// the receivers demultiplex on (WireGuard message types, the relay's, reflection's and
/// disco's magic with every type byte, a QUIC long header), so the junk reaches each
/// parser rather than the first check.
fn junk_datagram(rng: &mut Rng, buf: &mut [u8; 1500]) -> anyhow::Result<usize> {
    let mut len = usize::try_from(rng.below(1501))?;
    rng.fill(buf);
    // `bytes` at the front; the datagram's length decides how much of it lands.
    let mut head: Vec<u8> = Vec::new();
    match rng.below(8) {
        0..=2 => {}
        3 => {
            let ty = 1 + rng.below(4);
            if rng.below(3) == 0 {
                len = match ty {
                    1 => 148,
                    2 => 92,
                    3 => 64,
                    _ => 32 + 16 * usize::try_from(rng.below(80))?,
                };
            }
            head.extend_from_slice(&[ty as u8, 0, 0, 0]);
        }
        4 => {
            if rng.below(2) == 0 {
                // The exact lengths of HELLO/CHALLENGE/REGISTERED (69), REGISTER (101) and
                // a bare SEND (37).
                len = [69, 101, 37][usize::try_from(rng.below(3))?];
            }
            head.extend_from_slice(b"wmL1");
            head.push(rng.below(8) as u8);
        }
        5 => {
            if rng.below(2) == 0 {
                len = [16, 36, 23, 35][usize::try_from(rng.below(4))?];
            }
            head.extend_from_slice(b"wmR1");
        }
        6 => head.extend_from_slice(b"wmD1"),
        _ => {
            // A QUIC long header (Initial, version 1), then noise.
            if rng.below(2) == 0 {
                len = 1200;
            }
            head.extend_from_slice(&[0xc0 | (rng.below(64) as u8), 0, 0, 0, 1]);
        }
    }
    let n = head.len().min(len);
    buf[..n].copy_from_slice(&head[..n]);
    Ok(len)
}

fn garbage(addr: &str, count: u64, seed: u64) -> anyhow::Result<()> {
    let sock = UdpSocket::bind("0.0.0.0:0").context("binding a UDP socket")?;
    sock.connect(addr)
        .with_context(|| format!("connecting UDP to {addr}"))?;
    let mut rng = Rng::new(seed);
    let mut buf = [0u8; 1500];
    let mut sent = 0u64;
    for i in 0..count {
        let len = junk_datagram(&mut rng, &mut buf)?;
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

/// Opens `count` TCP connections to `addr`, one after the other, and sends each a kind of
/// junk: noise, a malformed request line, a huge header, a request cut off, a body longer
/// than announced; reads what comes back for a moment and closes. Prints "sent=N" (the
/// connections that were accepted).
fn tcp_garbage(addr: &str, count: u64, seed: u64) -> anyhow::Result<()> {
    let mut rng = Rng::new(seed);
    let mut sent = 0u64;
    for _ in 0..count {
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        let junk: Vec<u8> = match rng.below(6) {
            0 => {
                let mut b = vec![0u8; usize::try_from(rng.below(4096))? + 1];
                rng.fill(&mut b);
                b
            }
            1 => b"GARBAGE / HTTP/9.9\r\n\r\n".to_vec(),
            2 => {
                let mut b = b"GET /api/networks HTTP/1.1\r\nX-Junk: ".to_vec();
                b.extend(std::iter::repeat_n(b'a', 200_000));
                b.extend_from_slice(b"\r\n\r\n");
                b
            }
            3 => b"POST /api/networks HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"na".to_vec(),
            4 => b"POST /api/networks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\nContent-Length: 2\r\n\r\n{}{}{}{}".to_vec(),
            _ => {
                let mut b = vec![0u8; 64];
                rng.fill(&mut b);
                [b"\x16\x03\x01".to_vec(), b].concat()
            }
        };
        let _ = s.write_all(&junk);
        let mut sink = [0u8; 4096];
        let _ = s.read(&mut sink);
        sent += 1;
    }
    println!("sent={sent}");
    Ok(())
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    if text.len() % 2 != 0 {
        anyhow::bail!("odd-length hex {text:?}");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .with_context(|| format!("bad hex {text:?}"))
        })
        .collect()
}

/// `udp-send`: payloads from one socket (optionally bound to a given address, e.g. the
/// port a stopped meshd used), then listen for answers.
fn udp_send(args: &[&str]) -> anyhow::Result<()> {
    let mut bind = "0.0.0.0:0".to_owned();
    let mut repeat = 1u32;
    let mut listen_ms = 0u64;
    let mut ttl = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--bind" => bind = (*it.next().context("--bind needs IP:PORT")?).to_owned(),
            "--repeat" => {
                repeat = it
                    .next()
                    .context("--repeat needs N")?
                    .parse()
                    .context("--repeat needs a number")?;
            }
            "--listen-ms" => {
                listen_ms = it
                    .next()
                    .context("--listen-ms needs MS")?
                    .parse()
                    .context("--listen-ms needs a number")?;
            }
            "--ttl" => {
                ttl = Some(
                    it.next()
                        .context("--ttl needs N")?
                        .parse::<u32>()
                        .context("--ttl needs a number")?,
                );
            }
            other => rest.push(other),
        }
    }
    let (dest, payloads) = rest
        .split_first()
        .context("udp-send needs HOST:PORT and at least one HEX payload")?;
    let payloads = payloads
        .iter()
        .map(|p| unhex(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sock = UdpSocket::bind(&bind).with_context(|| format!("binding {bind}"))?;
    if let Some(ttl) = ttl {
        sock.set_ttl(ttl).context("setting the TTL")?;
    }
    let mut sent = 0u64;
    for _ in 0..repeat {
        for p in &payloads {
            if sock.send_to(p, dest).is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("sent={sent}");
    let mut received = 0u64;
    if listen_ms > 0 {
        let deadline = Instant::now() + Duration::from_millis(listen_ms);
        let mut buf = [0u8; 65536];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    received += 1;
                    println!("reply {from} {}", hex(&buf[..n]));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // ICMP errors from earlier sends (port unreachable) surface here.
                Err(_) => {}
            }
        }
    }
    println!("recv={received}");
    Ok(())
}

/// `reflect`: a STUN-like reflector for checking the lab's NAT routers.
fn reflect(bind: &str) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    eprintln!("wm-xfer: reflecting on {bind}");
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((_, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(format!("observed {from}").as_bytes(), from);
        }
    }
}

/// `probe`: what each reflector sees of one local socket.
fn probe(bind: &str, servers: &[&str]) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut buf = [0u8; 2048];
    for server in servers {
        let server_addr: SocketAddr = server
            .parse()
            .with_context(|| format!("bad server address {server:?}"))?;
        let mut observed = None;
        'tries: for _ in 0..5 {
            let _ = sock.send_to(b"probe", server_addr);
            let deadline = Instant::now() + Duration::from_millis(300);
            while Instant::now() < deadline {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) if from == server_addr => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if let Some(o) = text.strip_prefix("observed ") {
                            observed = Some(o.trim().to_owned());
                            break 'tries;
                        }
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(_) => {}
                }
            }
        }
        println!("{server} {}", observed.as_deref().unwrap_or("-"));
    }
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
            .and_then(|b| send(addr, b, None)),
        ["send", addr, bytes, mbit] => (|| {
            let mbit: f64 = mbit.parse().context("MBIT must be a number")?;
            if mbit.is_nan() || mbit <= 0.0 {
                anyhow::bail!("MBIT must be positive");
            }
            send(
                addr,
                bytes.parse().context("BYTES must be a number")?,
                Some(mbit),
            )
        })(),
        ["recv", bind] => recv(bind),
        ["udp-send", rest @ ..] => udp_send(rest),
        ["reflect", bind] => reflect(bind),
        ["probe", bind, servers @ ..] if !servers.is_empty() => probe(bind, servers),
        ["garbage", addr, count, seed] => (|| {
            garbage(
                addr,
                count.parse().context("COUNT must be a number")?,
                seed.parse().context("SEED must be a number")?,
            )
        })(),
        ["tcp-garbage", addr, count, seed] => (|| {
            tcp_garbage(
                addr,
                count.parse().context("COUNT must be a number")?,
                seed.parse().context("SEED must be a number")?,
            )
        })(),
        _ => Err(anyhow::anyhow!(
            "usage: wm-xfer send HOST:PORT BYTES [MBIT] | recv BIND:PORT | garbage HOST:PORT COUNT SEED \
             | tcp-garbage HOST:PORT COUNT SEED \
             | udp-send [--bind IP:PORT] [--repeat N] [--listen-ms MS] [--ttl N] HOST:PORT HEX... \
             | reflect BIND:PORT | probe BIND:PORT SERVER..."
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
        assert_eq!(unhex("00ab10").ok(), Some(vec![0, 0xab, 0x10]));
        assert!(unhex("0").is_err());
        assert!(unhex("zz").is_err());
    }
}
