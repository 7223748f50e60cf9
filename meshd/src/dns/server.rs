//! The DNS listeners: UDP and TCP (RFC 7766 framing) on every `dns-listen` address, each
//! query answered by the zone published last (`mesh_proto::dns::Zone::answer`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{Names, Published};
use crate::config::DnsListen;

/// An idle TCP connection is closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Most TCP connections served at once; more wait in the kernel's backlog.
const TCP_CONNECTIONS: usize = 64;
/// How often an address that could not be bound is tried again.
const REBIND_EVERY: Duration = Duration::from_secs(1);

/// Sockets bound at start (fixed addresses), before the TUN exists.
#[derive(Debug)]
pub struct Bound(Vec<(std::net::UdpSocket, std::net::TcpListener)>);

/// Binds the fixed `dns-listen` addresses, so a port in use fails the start.
pub fn bind_fixed(listen: &[DnsListen]) -> anyhow::Result<Bound> {
    let mut out = Vec::new();
    for l in listen {
        if let DnsListen::Fixed(addr) = l {
            out.push(bind_std(*addr).with_context(|| format!("binding the DNS server to {addr}"))?);
        }
    }
    Ok(Bound(out))
}

fn bind_std(addr: SocketAddr) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let udp = std::net::UdpSocket::bind(addr)?;
    let tcp = std::net::TcpListener::bind(udp.local_addr()?)?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    Ok((udp, tcp))
}

/// Serves until the process ends: the fixed sockets now, `overlay:PORT` whenever the
/// overlay address is known (moved along with it).
pub async fn run(names: Arc<Names>, fixed: Bound, listen: Vec<DnsListen>) {
    let rx = names.subscribe();
    let mut serving: BTreeMap<SocketAddr, Vec<JoinHandle<()>>> = BTreeMap::new();
    for (udp, tcp) in fixed.0 {
        match start(udp, tcp, rx.clone()) {
            Ok((addr, tasks)) => {
                serving.insert(addr, tasks);
            }
            Err(e) => tracing::warn!("DNS listener: {e:#}"),
        }
    }
    let fixed: Vec<SocketAddr> = serving.keys().copied().collect();
    let mut changes = rx.clone();
    loop {
        let address = changes.borrow_and_update().as_ref().map(|p| p.address);
        let want: Vec<SocketAddr> = listen
            .iter()
            .filter_map(|l| match l {
                DnsListen::Overlay(port) => address.map(|a| SocketAddr::new(a, *port)),
                DnsListen::Fixed(_) => None,
            })
            .collect();
        serving.retain(|addr, tasks| {
            let keep = fixed.contains(addr) || want.contains(addr);
            if !keep {
                tasks.iter().for_each(JoinHandle::abort);
            }
            keep
        });
        let mut missing = false;
        for addr in want {
            if serving.contains_key(&addr) {
                continue;
            }
            match bind_std(addr)
                .map_err(anyhow::Error::from)
                .and_then(|(u, t)| start(u, t, rx.clone()))
            {
                Ok((addr, tasks)) => {
                    tracing::info!(%addr, "serving DNS");
                    serving.insert(addr, tasks);
                }
                Err(e) => {
                    tracing::warn!(%addr, "DNS listener: {e:#}");
                    missing = true;
                }
            }
        }
        let bound: Vec<String> = serving.keys().map(|a| a.to_string()).collect();
        names.update_status(|s| s.listen = bound);
        if missing {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = tokio::time::sleep(REBIND_EVERY) => {}
            }
        } else if changes.changed().await.is_err() {
            return;
        }
    }
}

fn start(
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    rx: watch::Receiver<Option<Published>>,
) -> anyhow::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    let addr = udp.local_addr()?;
    let udp = UdpSocket::from_std(udp).context("registering the DNS socket")?;
    let tcp = TcpListener::from_std(tcp).context("registering the DNS listener")?;
    Ok((
        addr,
        vec![
            tokio::spawn(serve_udp(udp, rx.clone())),
            tokio::spawn(serve_tcp(tcp, rx)),
        ],
    ))
}

fn answer(rx: &watch::Receiver<Option<Published>>, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let zone = rx.borrow().as_ref().map(|p| p.zone.clone());
    match zone {
        Some(zone) => zone.answer(query, udp),
        // No netmap yet: nothing is ours, so everything is refused.
        None => mesh_proto::dns::Zone::build(
            "invalid".into(),
            ipnet::IpNet::V4(ipnet::Ipv4Net::default()),
            0,
            &[],
        )
        .answer(query, udp),
    }
}

async fn serve_udp(socket: UdpSocket, rx: watch::Receiver<Option<Published>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("DNS recv: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Some(out) = answer(&rx, &buf[..n], true) {
            if let Err(e) = socket.send_to(&out, from).await {
                tracing::debug!(%from, "DNS send: {e}");
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, rx: watch::Receiver<Option<Published>>) {
    let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("DNS accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let rx = rx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TCP_IDLE * 6, serve_conn(stream, rx)).await;
            drop(permit);
        });
    }
}

async fn serve_conn(mut stream: TcpStream, rx: watch::Receiver<Option<Published>>) {
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let n = usize::from(u16::from_be_bytes(len));
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf[..n])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(out) = answer(&rx, &buf[..n], false) else {
            continue;
        };
        let Ok(len) = u16::try_from(out.len()) else {
            return;
        };
        let mut frame = Vec::with_capacity(out.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&out);
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}
