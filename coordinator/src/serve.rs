//! `coordinator serve`: data directory, identity, store, then the QUIC endpoint and the
//! admin API until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use coordinator::config::ServeConfig;
use coordinator::identity::DataDir;
use coordinator::state::{Coordinator, JoinInfo, SystemClock};
use coordinator::store::SledStore;
use coordinator::{http, quic};

pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let dir = DataDir::new(&cfg.data_dir);
    dir.create()?;
    let identity = dir.load_or_create_identity()?;
    let admin_token = dir.load_or_create_admin_token()?;
    let db = dir.db();
    let store = SledStore::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let coord = Coordinator::open(
        Arc::new(store),
        Arc::new(SystemClock),
        JoinInfo {
            coordinators: cfg.advertise.clone(),
            pin: identity.pin,
        },
    )
    .with_context(|| format!("loading {}", db.display()))?;

    let endpoint = quic::bind(&identity, cfg.listen)?;
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
        advertise = ?cfg.advertise,
        admin_token = %dir.admin_token().display(),
        data_dir = %cfg.data_dir.display(),
        "coordinator running"
    );

    let quic_task = tokio::spawn(quic::serve(endpoint.clone(), coord.clone()));
    let app = http::router(coord.clone(), &admin_token);
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });

    shutdown_signal().await;
    tracing::info!("shutting down");
    endpoint.close(0u32.into(), b"coordinator shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    quic_task.abort();
    match tokio::time::timeout(Duration::from_secs(3), http_task).await {
        Ok(Ok(Err(e))) => tracing::warn!("admin API: {e}"),
        Ok(Err(e)) if e.is_panic() => tracing::error!("admin API task panicked"),
        _ => {}
    }
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
