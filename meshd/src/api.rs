//! The local API: a unix socket (mode 0600, so root-only) speaking one line of JSON each
//! way; the messages are [`mesh_proto::api`].
//!
//! The first meshd of a node answers for all its networks ([`crate::networks`]): a join
//! of a network it does not hold goes to that network's meshd (started for it unless it
//! runs), leave, status and ping reach them over their sockets. Requests and answers stay
//! what they were with one network; a status adds the further networks in `networks`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_proto::api::{Request, Response};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::control::Control;
use crate::device::Device;
use crate::networks::Networks;

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// A client that does not finish its request in this time is dropped (the answer has its
/// own bounds: a further network's meshd that does not answer is an error, never a hang).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Removes the socket file when meshd shuts down cleanly.
#[derive(Debug)]
pub struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds `path` and serves requests until the process exits. Refuses to take over a socket
/// another live meshd is answering on.
pub fn serve(
    path: &Path,
    device: Arc<Device>,
    control: Arc<Control>,
    networks: Option<Arc<Networks>>,
) -> anyhow::Result<SocketGuard> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("setting permissions of {}", dir.display()))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another meshd is already listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting permissions of {}", path.display()))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let device = device.clone();
                    let control = control.clone();
                    let networks = networks.clone();
                    tokio::spawn(async move {
                        handle(stream, &device, &control, networks.as_ref()).await;
                    });
                }
                Err(e) => {
                    tracing::warn!("API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(SocketGuard(path.to_owned()))
}

async fn handle(
    stream: UnixStream,
    device: &Device,
    control: &Arc<Control>,
    networks: Option<&Arc<Networks>>,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let response = match tokio::time::timeout(CLIENT_TIMEOUT, reader.read_line(&mut line)).await {
        Err(e) => {
            tracing::debug!("API client timed out: {e}");
            return;
        }
        Ok(Ok(0)) => return,
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(request) => match networks {
                Some(n) => route(request, device, control, n).await,
                None => answer(request, device, control).await,
            },
            Err(e) => Response::error(format!("bad request: {e}")),
        },
        Ok(Err(e)) => Response::error(format!("reading request: {e}")),
    };
    let mut text = serde_json::to_string(&response)
        .unwrap_or_else(|e| format!(r#"{{"ok":false,"error":"encoding response: {e}"}}"#));
    text.push('\n');
    if let Err(e) = write.write_all(text.as_bytes()).await {
        tracing::debug!("API write: {e}");
    }
}

/// The first meshd's answer: its own network as before, the others through their meshd.
async fn route(
    request: Request,
    device: &Device,
    control: &Arc<Control>,
    networks: &Arc<Networks>,
) -> Response {
    match request {
        Request::Status => {
            let mut status = device.status();
            status.networks = networks.statuses().await;
            Response::Status { ok: true, status }
        }
        Request::Join(req) => {
            let network = req.network.clone();
            if networks.holds(&network).await {
                return networks.join(Request::Join(req), &network).await;
            }
            match device.network() {
                Some(mine) if mine != network => networks.join(Request::Join(req), &network).await,
                _ => done(control.join(req)),
            }
        }
        Request::Leave { network } => {
            if device.network().as_deref() == Some(network.as_str()) {
                return done(control.leave(&network));
            }
            if networks.holds(&network).await {
                return networks
                    .leave(
                        Request::Leave {
                            network: network.clone(),
                        },
                        &network,
                    )
                    .await;
            }
            let held: Vec<String> = device
                .network()
                .into_iter()
                .chain(networks.names().await)
                .collect();
            if held.is_empty() {
                Response::error(format!(
                    "not a member of {network:?} (member of no network)"
                ))
            } else {
                Response::error(format!(
                    "not a member of {network:?} (member of {})",
                    held.iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
        Request::Ping { peer } => {
            let mine = answer(Request::Ping { peer: peer.clone() }, device, control).await;
            if !matches!(mine, Response::Error { .. }) {
                return mine;
            }
            networks
                .first_ok(&Request::Ping { peer })
                .await
                .unwrap_or(mine)
        }
        Request::Netcheck => {
            let mine = answer(Request::Netcheck, device, control).await;
            if !matches!(mine, Response::Error { .. }) {
                return mine;
            }
            networks.first_ok(&Request::Netcheck).await.unwrap_or(mine)
        }
    }
}

/// The answer of a meshd about its own network.
async fn answer(request: Request, device: &Device, control: &Arc<Control>) -> Response {
    match request {
        Request::Status => Response::Status {
            ok: true,
            status: device.status(),
        },
        Request::Join(req) => done(control.join(req)),
        Request::Leave { network } => done(control.leave(&network)),
        Request::Ping { peer } => match device.ping(&peer).await {
            Ok(ping) => Response::Ping { ok: true, ping },
            Err(e) => Response::error(e),
        },
        Request::Netcheck => {
            if device.has_reflectors() {
                Response::Netcheck {
                    ok: true,
                    netcheck: device.netcheck().await,
                }
            } else {
                Response::error("no reflectors known: join a network first (meshctl join)")
            }
        }
    }
}

fn done(result: Result<String, String>) -> Response {
    match result {
        Ok(message) => Response::Done { ok: true, message },
        Err(error) => Response::error(error),
    }
}
