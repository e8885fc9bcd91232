//! Assembles a node and serves it over HTTP and WebSocket.

use std::{sync::Arc, time::Duration};

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use starling_cluster::{Bus, InProcessBus, Limiter, LocalLimiter, RedisBus, RedisLimiter};

use crate::{config::Config, http, metrics::Metrics, node::Node, store};

/// Runs the relay until it is told to stop (SIGINT or SIGTERM). Call it inside an actix
/// system. Prints `listening on ws://ADDR` on standard output once bound.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(config.bind)
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let node_id: Arc<str> = config
        .node_id
        .clone()
        .unwrap_or_else(|| default_node_id(addr.port()))
        .into();
    let store = store::open(&config).await?;
    let (bus, limiter): (Arc<dyn Bus>, Arc<dyn Limiter>) = match &config.redis_url {
        Some(url) => {
            tracing::info!(node = %node_id, cluster = %config.cluster, "joining the cluster over Redis");
            (
                Arc::new(RedisBus::start(url, &config.cluster, Arc::clone(&node_id))?),
                Arc::new(RedisLimiter::new(url, &config.cluster)?),
            )
        }
        None => (
            Arc::new(InProcessBus::new()),
            Arc::new(LocalLimiter::default()),
        ),
    };
    let metrics = Arc::new(Metrics::new(&node_id, bus.view())?);
    metrics.observe_store(Arc::clone(&store));
    let node = web::Data::from(Node::start(
        config.clone(),
        store,
        bus,
        limiter,
        node_id,
        metrics,
    ));
    let metrics_listener = match config.metrics_bind {
        Some(bind) => Some(
            std::net::TcpListener::bind(bind)
                .with_context(|| format!("binding {bind} for metrics"))?,
        ),
        None => None,
    };
    if let Some(listener) = metrics_listener {
        let node = node.clone();
        let metrics_server = HttpServer::new(move || {
            App::new()
                .app_data(node.clone())
                .configure(http::metrics_route)
        })
        .workers(1)
        .listen(listener)?
        .run();
        actix_web::rt::spawn(metrics_server);
    }
    let routes = http::routes(config.metrics_bind.is_none());
    let app_node = node.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_node.clone())
            .configure(routes.clone())
    })
    .workers(config.worker_count())
    .disable_signals()
    .shutdown_timeout(5)
    .on_connect(|connection, _| {
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    .listen(listener)
    .with_context(|| format!("listening on {addr}"))?;
    println!("listening on ws://{addr}");
    tracing::info!(%addr, "listening");
    let server = server.run();
    let handle = server.handle();
    let drain = Duration::from_secs(config.drain_seconds);
    actix_web::rt::spawn(async move {
        stop_signal().await;
        node.shut_down(drain).await;
        handle.stop(true).await;
    });
    server.await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM (what Kubernetes and Docker send) or SIGINT (Ctrl-C).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// A node's default name: the host name and the port, unique on a host.
fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "starling".to_string());
    format!("{host}:{port}")
}
