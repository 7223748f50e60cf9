//! `coordinator serve`: data directory, identity, store, then the QUIC endpoint, the UDP
//! reflectors and relay, and the admin API (plain HTTP, or HTTPS through
//! `coordinator::admin::https`) until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use coordinator::admin;
use coordinator::admin::api::HttpOptions;
use coordinator::admin::https::{self, AdminTls};
use coordinator::config::StoreConfig;
use coordinator::config::{HttpTls, ServeConfig};
use coordinator::control::quic;
use coordinator::control::state::Registration;
use coordinator::control::state::{Clock, Coordinator, JoinInfo, Services, SystemClock};
use coordinator::identity::DataDir;
use coordinator::store::{EtcdStore, SledStore, Store};
use coordinator::udp::relay::{self, Relay};
use coordinator::udp::{self, reflector};

pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let dir = DataDir::new(&cfg.data_dir);
    dir.create()?;
    dir.load_or_create_identity()?;
    dir.load_or_create_admin_token()?;
    dir.load_or_create_relay_secret()?;
    // The store first: on etcd the coordinator set shares one identity (one pin in every
    // join token, one admin token, one relay secret), made by whichever started first.
    let store: Arc<dyn Store> = match &cfg.store {
        StoreConfig::Sled => {
            let db = dir.db();
            Arc::new(SledStore::open(&db).with_context(|| format!("opening {}", db.display()))?)
        }
        StoreConfig::Etcd(opts) => {
            let opts = (**opts).clone();
            let etcd = tokio::task::spawn_blocking(move || EtcdStore::connect(opts))
                .await
                .context("connecting to etcd")??;
            let etcd = Arc::new(etcd);
            let shared = etcd.clone();
            let replaced = tokio::task::block_in_place(|| {
                dir.adopt_shared(|name, local| {
                    shared.adopt_secret(name, local).map_err(|e| e.to_string())
                })
            })?;
            if replaced {
                tracing::info!("joined the coordinator set: adopted its shared identity");
            }
            etcd
        }
    };
    let identity = dir.load_identity()?;
    let admin_token = dir.load_admin_token()?;
    let relay_secret = dir.load_or_create_relay_secret()?;
    let admin_tls = match &cfg.http_tls {
        HttpTls::Off => None,
        HttpTls::Identity => Some(AdminTls::from_identity(&identity)?),
        HttpTls::Pem { cert, key } => Some(AdminTls::from_pem_files(cert, key)?),
    };

    // Every socket is bound before anything is served, so a port in use fails the start.
    let endpoint = quic::bind(&identity, cfg.listen)?;
    let reflect_sockets = cfg
        .reflect
        .iter()
        .map(|a| udp::bind("reflector", *a))
        .collect::<Result<Vec<_>, _>>()?;
    let relay_socket = cfg.relay.map(|a| udp::bind("relay", a)).transpose()?;
    let reflect_addrs = reflect_sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<Vec<SocketAddr>, _>>()
        .context("reading the reflector addresses")?;
    let relay_addr = relay_socket
        .as_ref()
        .map(|s| s.local_addr())
        .transpose()
        .context("reading the relay address")?;
    let (reflectors, advertise_relays) = cfg.advertised_services(&reflect_addrs, relay_addr);
    let relay = advertise_relays.first().cloned();
    // Nodes before dual-stack underlays read `relay` only: no list for one address.
    let relays = if advertise_relays.len() > 1 {
        advertise_relays.clone()
    } else {
        Vec::new()
    };

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store_name = store.describe();
    let coord = Coordinator::open_as(
        store,
        clock.clone(),
        JoinInfo {
            coordinators: cfg.advertise.clone(),
            pin: identity.pin,
        },
        Some(Services {
            reflectors: reflectors.clone(),
            relay: relay.clone(),
            relays: relays.clone(),
            relay_secret,
        }),
        cfg.id.clone(),
    )
    .with_context(|| format!("loading the store ({store_name})"))?;
    coord.register(Registration {
        control: cfg.advertise.clone(),
        relay: relay.clone(),
        relays,
        reflectors: reflectors.clone(),
    });

    let http_listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("binding the admin API to {}", cfg.http))?;
    let quic_addr = endpoint.local_addr().context("reading the QUIC address")?;
    let http_addr = http_listener
        .local_addr()
        .context("reading the admin API address")?;
    tracing::info!(
        pin = %identity.pin,
        quic = %quic_addr,
        http = %http_addr,
        reflect = ?reflect_addrs,
        relay = ?relay_addr,
        advertise = ?cfg.advertise,
        advertise_reflect = ?reflectors,
        advertise_relay = ?advertise_relays,
        admin_token = %dir.admin_token().display(),
        data_dir = %cfg.data_dir.display(),
        id = %cfg.id,
        store = %store_name,
        "coordinator running"
    );
    match &admin_tls {
        Some(tls) => tracing::info!("admin https://{http_addr} (certificate pin {})", tls.pin),
        None => tracing::info!("admin http://{http_addr}"),
    }

    let mut udp_tasks = Vec::new();
    for socket in reflect_sockets {
        udp_tasks.push(tokio::spawn(reflector::serve(
            socket,
            coord.stats().clone(),
        )));
    }
    if let Some(socket) = relay_socket {
        let core = Arc::new(Relay::new(relay_secret, &coord));
        udp_tasks.push(tokio::spawn(relay::serve(socket, core, clock)));
    }
    let quic_task = tokio::spawn(quic::serve(endpoint.clone(), coord.clone()));
    // Over TLS the dashboard's session cookie is marked Secure; open dashboards' change
    // feeds end when shutdown starts.
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let app = admin::router_with(
        coord.clone(),
        &admin_token,
        HttpOptions {
            secure_cookies: cfg.tls_enabled(),
            closing: Some(closing_rx),
        },
    );
    let http_task = match admin_tls {
        Some(tls) => tokio::spawn(https::serve(
            http_listener,
            tls.config,
            app,
            shutdown_signal(),
        )),
        None => tokio::spawn(async move {
            axum::serve(http_listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
        }),
    };

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = closing.send(true);
    for t in &udp_tasks {
        t.abort();
    }
    endpoint.close(0u32.into(), b"coordinator shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    quic_task.abort();
    match tokio::time::timeout(Duration::from_secs(3), http_task).await {
        Ok(Ok(Err(e))) => tracing::warn!("admin API: {e}"),
        Ok(Err(e)) if e.is_panic() => tracing::error!("admin API task panicked"),
        _ => {}
    }
    let stats = coord.stats().read();
    tracing::info!(
        reflector = ?stats.reflector,
        relay = ?stats.relay,
        "udp service counters"
    );
    coord.durable().await.context("flushing the database")?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
