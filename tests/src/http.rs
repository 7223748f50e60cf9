//! Plain HTTP/1.1 to a server inside a test's namespace, from the test process itself.
//!
//! A short-lived thread enters the namespace (`setns`), connects to `127.0.0.1:PORT` and
//! hands the socket back: a socket stays in the namespace it was created in, so the test
//! reaches loopback-only servers in its namespaces (chromedriver, the coordinator's admin
//! endpoint, meshd's metrics) without a helper process and without any route out of the
//! lab. One request per connection; the answer ends at its length (or last chunk), since
//! some servers keep the connection open whatever the request says.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::netns::Netns;

/// Sends one request to `127.0.0.1:port` in `ns`; returns the status and the body.
pub fn request_in(
    ns: &Netns,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = connect_in(ns, port)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let raw = read_response(&mut stream)
        .with_context(|| format!("reading the answer to {method} {path} (port {port})"))?;
    parse_response(&raw)
}

/// `GET path` from `127.0.0.1:port` in `ns`, with `Authorization: Bearer token` if given;
/// fails unless the answer is 200; returns the body as text.
pub fn get_in(ns: &Netns, port: u16, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let (status, body) = request_in(
        ns,
        port,
        "GET",
        path,
        &headers,
        b"",
        Duration::from_secs(10),
    )?;
    let text = String::from_utf8(body).context("the answer is not UTF-8")?;
    if status != 200 {
        bail!("GET {path} on port {port} answered {status}: {text}");
    }
    Ok(text)
}

/// A TCP connection to `127.0.0.1:port` inside `ns`, opened from a thread that entered the
/// namespace (the calling thread stays where it is).
pub fn connect_in(ns: &Netns, port: u16) -> anyhow::Result<TcpStream> {
    let file = format!("/run/netns/{}", ns.name());
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<TcpStream> {
            let handle = std::fs::File::open(&file).with_context(|| format!("opening {file}"))?;
            nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering the namespace {}", ns.name()))?;
            TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(5),
            )
            .with_context(|| format!("connecting to 127.0.0.1:{port} in {}", ns.name()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace-entering thread panicked"))?
    })
}

/// Reads one HTTP/1.1 response: it ends at the body's length (or the last chunk), or at
/// end-of-file for a body without either.
fn read_response(stream: &mut impl std::io::Read) -> anyhow::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let body = &raw[split + 4..];
            let complete = if head.contains("transfer-encoding: chunked") {
                body.ends_with(b"0\r\n\r\n")
            } else {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                match length {
                    Some(n) => body.len() >= n,
                    None => false,
                }
            };
            if complete {
                return Ok(raw);
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            // Closed: whatever arrived is the answer (a body without a length ends here).
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Splits an HTTP/1.1 response into its status and body (de-chunked when chunked).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("HTTP answer without a header end")?;
    let head = std::str::from_utf8(&raw[..split]).context("HTTP header is not UTF-8")?;
    let mut rest = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("bad HTTP status line: {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    if chunked {
        rest = dechunk(&rest)?;
    } else if let Some(n) = length {
        if rest.len() < n {
            bail!("body of {} bytes, {n} announced", rest.len());
        }
        rest.truncate(n);
    }
    Ok((status, rest))
}

/// Decodes a chunked transfer-encoded body.
fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line without an end")?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("chunk of {size} bytes is cut short");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() -> anyhow::Result<()> {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"value\":1}";
        assert_eq!(parse_response(plain)?, (200, b"{\"value\":1}".to_vec()));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"va\r\n7\r\nlue\":2}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked)?, (404, b"{\"value\":2}".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"10\r\nshort\r\n").is_err());
        // Read by length, even when the peer keeps the connection open after the body.
        let mut two = &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 ..."[..];
        let raw = read_response(&mut two)?;
        assert_eq!(parse_response(&raw)?, (200, b"{}".to_vec()));
        Ok(())
    }
}
