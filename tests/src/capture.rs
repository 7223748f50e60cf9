//! Capturing UDP datagrams on the lab's underlay with `tcpdump -w`, and reading them back
//! from the pcap file, so a test can replay what a node really sent (e.g. a disco probe)
//! from another host.
//!
//! The reader understands classic pcap (what `tcpdump -w` writes), either byte order,
//! micro- or nanosecond timestamps, with Ethernet (`DLT_EN10MB`) or Linux cooked
//! (`DLT_LINUX_SLL`) link layers, and IPv4/UDP inside. Everything else is skipped.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::netns::{self, Netns};
use crate::util::TempDir;

/// One captured UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// `tcpdump` running in a namespace, writing to a private temporary file. [`Capture::stop`]
/// ends it and parses what it wrote; dropping it kills tcpdump and removes the file.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Capture {
    /// Starts `tcpdump -i IFACE -U -w FILE FILTER` in `ns` and waits until it listens.
    /// `filter` is a pcap filter, e.g. `"udp and udp[8:4] = 0x776d4431"` (payloads that
    /// start with `wmD1`).
    pub fn start(ns: &Netns, iface: &str, filter: &str) -> anyhow::Result<Capture> {
        let dir = TempDir::new("pcap")?;
        let file = dir.path().join("capture.pcap");
        let log = dir.path().join("tcpdump.log");
        let tcpdump = which("tcpdump").context(
            "tcpdump is not installed (the replay tests capture real probes with it): \
             apt-get install tcpdump",
        )?;
        let file_s = file.to_string_lossy().into_owned();
        let child = ns.spawn_logged(
            &[
                &tcpdump.to_string_lossy(),
                // Keep root: tcpdump otherwise drops to its own user before creating the
                // file, which cannot write into the harness's 0700 directory.
                "-Z",
                "root",
                "-i",
                iface,
                "-n",
                // Hand every packet over at once (no ring-buffer block timeout), and
                // write it at once (-U), so a capture stopped right after the traffic
                // has all of it.
                "--immediate-mode",
                "-U",
                "-s",
                "0",
                "-w",
                &file_s,
                filter,
            ],
            &[],
            &log,
        )?;
        let mut cap = Capture {
            child: Some(child),
            file,
            log,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&cap.log).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(cap);
            }
            if let Some(c) = cap.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    cap.child = None;
                    bail!("tcpdump exited at start ({status}): {}", text.trim());
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!(
                    "tcpdump did not start listening within 10 s: {}",
                    text.trim()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The UDP datagrams captured so far, without stopping (tcpdump writes each packet as
    /// it comes, `-U`; a record being written is left out).
    pub fn datagrams(&self) -> anyhow::Result<Vec<Datagram>> {
        let bytes = std::fs::read(&self.file).with_context(|| {
            format!(
                "reading {} (tcpdump said: {})",
                self.file.display(),
                std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .trim()
            )
        })?;
        parse_pcap(&bytes)
    }

    /// Stops tcpdump (SIGINT: it flushes) and returns every UDP datagram it captured.
    pub fn stop(mut self) -> anyhow::Result<Vec<Datagram>> {
        self.end();
        self.datagrams()
    }

    fn end(&mut self) {
        if let Some(mut child) = self.child.take() {
            netns::signal(&[child.id()], "INT");
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.end();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// True when `tcpdump` can be found (the tests that need it fail with a message otherwise).
pub fn have_tcpdump() -> bool {
    which("tcpdump").is_some()
}

fn u16_at(b: &[u8], at: usize, le: bool) -> Option<u16> {
    let x: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if le {
        u16::from_le_bytes(x)
    } else {
        u16::from_be_bytes(x)
    })
}

fn u32_at(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let x: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(x)
    } else {
        u32::from_be_bytes(x)
    })
}

const DLT_EN10MB: u32 = 1;
const DLT_LINUX_SLL: u32 = 113;

/// Every IPv4/UDP datagram in a classic pcap file (a truncated last record is ignored).
pub fn parse_pcap(bytes: &[u8]) -> anyhow::Result<Vec<Datagram>> {
    let magic = bytes
        .get(..4)
        .context("pcap file shorter than its header")?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("not a classic pcap file (magic {magic:02x?}); pcapng is not supported"),
    };
    let linktype = u32_at(bytes, 20, le).context("pcap header truncated")?;
    let mut out = Vec::new();
    let mut at = 24usize;
    while let Some(incl) = u32_at(bytes, at + 8, le) {
        let start = at + 16;
        let Some(frame) = usize::try_from(incl)
            .ok()
            .and_then(|n| bytes.get(start..start.checked_add(n)?))
        else {
            break;
        };
        at = start + frame.len();
        let ip = match linktype {
            DLT_EN10MB => {
                // Skip 802.1Q tags.
                let mut off = 12;
                let mut ethertype = u16_at(frame, off, false);
                while ethertype == Some(0x8100) {
                    off += 4;
                    ethertype = u16_at(frame, off, false);
                }
                if ethertype != Some(0x0800) {
                    continue;
                }
                &frame[off + 2..]
            }
            DLT_LINUX_SLL => {
                if u16_at(frame, 14, false) != Some(0x0800) {
                    continue;
                }
                &frame[16.min(frame.len())..]
            }
            other => bail!("unsupported pcap link type {other}"),
        };
        if let Some(d) = parse_ipv4_udp(ip) {
            out.push(d);
        }
    }
    Ok(out)
}

fn parse_ipv4_udp(ip: &[u8]) -> Option<Datagram> {
    let vihl = *ip.first()?;
    if vihl >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    // Fragments other than the first carry no UDP header.
    let frag = u16_at(ip, 6, false)?;
    if frag & 0x1fff != 0 {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(u16_at(ip, 2, false)?);
    let src = Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(12..16)?).ok()?);
    let dst = Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(16..20)?).ok()?);
    let udp = ip.get(ihl..total.min(ip.len()))?;
    let sport = u16_at(udp, 0, false)?;
    let dport = u16_at(udp, 2, false)?;
    let ulen = usize::from(u16_at(udp, 4, false)?);
    let payload = udp.get(8..ulen.min(udp.len()))?;
    Some(Datagram {
        src: SocketAddrV4::new(src, sport),
        dst: SocketAddrV4::new(dst, dport),
        payload: payload.to_vec(),
    })
}

/// Removes repeats (a routed packet is seen twice on a bridge: in and out), keeping the
/// first of each (source, destination, payload).
pub fn dedup(datagrams: Vec<Datagram>) -> Vec<Datagram> {
    let mut out: Vec<Datagram> = Vec::new();
    for d in datagrams {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// The pcap filter for UDP payloads that start with `magic` (4 bytes), e.g. `b"wmD1"`.
pub fn magic_filter(magic: &[u8; 4]) -> String {
    format!("udp and udp[8:4] = 0x{:08x}", u32::from_be_bytes(*magic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ether_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let total = 20 + 8 + payload.len();
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        ip.extend(src);
        ip.extend(dst);
        f.extend(ip);
        f.extend(sport.to_be_bytes());
        f.extend(dport.to_be_bytes());
        f.extend(u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        f.extend([0, 0]);
        f.extend(payload);
        // Ethernet padding after the IP packet must be ignored.
        f.extend([0u8; 6]);
        f
    }

    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend(0xa1b2_c3d4_u32.to_le_bytes());
        p.extend(2u16.to_le_bytes());
        p.extend(4u16.to_le_bytes());
        p.extend([0u8; 8]);
        p.extend(262_144u32.to_le_bytes());
        p.extend(DLT_EN10MB.to_le_bytes());
        for f in frames {
            p.extend([0u8; 8]);
            let n = u32::try_from(f.len()).unwrap();
            p.extend(n.to_le_bytes());
            p.extend(n.to_le_bytes());
            p.extend(f);
        }
        p
    }

    #[test]
    fn reads_udp_from_ethernet_pcap() {
        let a = ether_udp(
            [198, 51, 100, 1],
            [203, 0, 113, 2],
            51820,
            40000,
            b"wmD1hello",
        );
        let b = ether_udp([203, 0, 113, 2], [198, 51, 100, 1], 40000, 51820, b"");
        let mut file = pcap(&[a.clone(), b, a]);
        // A truncated last record is ignored.
        file.extend([0u8; 10]);
        let got = parse_pcap(&file).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].src, "198.51.100.1:51820".parse().unwrap());
        assert_eq!(got[0].dst.port(), 40000);
        assert_eq!(got[0].payload, b"wmD1hello");
        assert!(got[1].payload.is_empty());
        assert_eq!(dedup(got).len(), 2);
    }

    #[test]
    fn rejects_other_files() {
        assert!(parse_pcap(b"\x0a\x0d\x0d\x0a....").is_err());
        assert!(parse_pcap(b"").is_err());
    }

    #[test]
    fn filter_names_the_magic() {
        assert_eq!(magic_filter(b"wmD1"), "udp and udp[8:4] = 0x776d4431");
    }
}
