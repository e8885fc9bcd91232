//! Assembles a node and serves it over HTTP and WebSocket.

use std::{sync::Arc, time::Duration};

use actix_http::{HttpService, KeepAlive, Protocol, error::DispatchError};
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::{App, HttpServer, dev::AppConfig, rt::net::TcpStream, web};
use anyhow::Context;
use starling_cluster::{
    Bus, BusSettings, InProcessBus, Limiter, LocalLimiter, RedisBus, RedisEndpoint, RedisLimiter,
    RedisSettings, Unusable,
};

use crate::{
    config::Config,
    http,
    metrics::Metrics,
    node::Node,
    proxy::{self, AcceptError, TrustedProxies},
    store,
};

/// Runs the relay until it is told to stop (SIGINT or SIGTERM). Call it inside an actix
/// system. Prints `listening on ws://ADDR` on standard output once bound.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    crate::tls::install_provider();
    let listener = std::net::TcpListener::bind(config.bind)
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let node_id: Arc<str> = config
        .node_id
        .clone()
        .unwrap_or_else(|| default_node_id(addr.port()))
        .into();
    let store = store::open(&config).await?;
    let (bus, limiter): (Arc<dyn Bus>, Arc<dyn Limiter>) = match redis_endpoint(&config).await? {
        Some(endpoint) => {
            tracing::info!(node = %node_id, cluster = %config.cluster, "joining the cluster over Redis");
            (
                Arc::new(RedisBus::start(
                    endpoint.clone(),
                    &config.cluster,
                    Arc::clone(&node_id),
                    BusSettings {
                        timeout: Duration::from_secs(config.bus_timeout_seconds.max(1)),
                    },
                )),
                Arc::new(RedisLimiter::new(endpoint, &config.cluster)),
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
    // The stored rules apply before the first client connects (later changes arrive as
    // they are made).
    if let Err(error) = node.refresh_rules().await {
        tracing::warn!(%error, "could not read the stored rules yet; starting with the configuration's");
    }
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
                .configure(http::metrics_routes)
        })
        .workers(1)
        .listen(listener)?
        .run();
        actix_web::rt::spawn(metrics_server);
    }
    let server = relay_server(&config, listener, node.clone())
        .with_context(|| format!("listening on {addr}"))?;
    println!("listening on ws://{addr}");
    tracing::info!(%addr, "listening");
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

/// The cluster's Redis, when `--redis-url` names one, checked once: settings it does not
/// accept stop the start; a Redis that is down does not (the node serves alone until it is
/// back).
async fn redis_endpoint(config: &Config) -> anyhow::Result<Option<RedisEndpoint>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let read =
        |setting: &str, path: &Option<std::path::PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            path.as_ref()
                .map(|p| {
                    std::fs::read(p).with_context(|| format!("{setting}: reading {}", p.display()))
                })
                .transpose()
        };
    let identity = read("redis_cert_file", &config.redis_cert_file)?
        .zip(read("redis_key_file", &config.redis_key_file)?);
    let settings = RedisSettings {
        url: url.clone(),
        ca_pem: read("redis_ca_file", &config.redis_ca_file)?,
        client_identity: identity,
    };
    let endpoint = RedisEndpoint::new(&settings).context("redis_url")?;
    match endpoint.probe().await {
        Ok(()) => {}
        Err(Unusable::Unreachable(why)) => {
            tracing::warn!(%why, "Redis is not reachable yet; serving alone until it is");
        }
        Err(refused @ Unusable::Refused(_)) => {
            return Err(anyhow::Error::new(refused).context("redis_url (and its TLS settings)"));
        }
    }
    Ok(Some(endpoint))
}

/// The relay's own server on `listener`: each connection is taken through [`proxy::accept`]
/// (which reads a PROXY header from trusted balancers with `--proxy-protocol`), then served
/// as HTTP/1.1 by the relay's routes. Built from actix-server and actix-http directly rather
/// than with `HttpServer`, which has no place to read bytes before HTTP.
fn relay_server(
    config: &Config,
    listener: std::net::TcpListener,
    node: web::Data<Node>,
) -> std::io::Result<actix_server::Server> {
    let addr = listener.local_addr()?;
    let routes = http::routes(config.metrics_bind.is_none());
    let trusted = TrustedProxies::new(config.trusted_proxies.clone());
    let replays = web::Data::new(crate::manage::Replays::default());
    let proxy_protocol = config.proxy_protocol;
    let builder = actix_server::Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    Ok(builder
        .workers(config.worker_count())
        .disable_signals()
        .shutdown_timeout(5)
        .listen("starling", listener, move || {
            let app = App::new()
                .app_data(node.clone())
                .app_data(web::Data::new(trusted.clone()))
                .app_data(replays.clone())
                .configure(routes.clone())
                .into_factory()
                .map_err(|e| e.error_response());
            let shutdown = shutdown.clone();
            let http = HttpService::build()
                .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
                .client_request_timeout(Duration::from_secs(5))
                // No lingering close: while lingering, actix-http reads and discards
                // whatever the client still sends, as fast as it comes, so a flooding
                // client closed for its strikes would keep a core busy for the whole
                // timeout. The socket is shut once the response (the close frame) is out.
                .client_disconnect_timeout(Duration::ZERO)
                .local_addr(addr)
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .finish(map_config(app, |_| AppConfig::default()));
            let trusted = trusted.clone();
            let node = node.clone();
            fn_service(move |io: TcpStream| {
                let trusted = trusted.clone();
                let node = node.clone();
                async move {
                    match proxy::accept(io, proxy_protocol, &trusted).await {
                        Ok((stream, from)) => Ok((stream, Protocol::Http1, Some(from))),
                        Err(refused) => Err(refuse(&node, refused)),
                    }
                }
            })
            .and_then(http)
        })?
        .run())
}

/// Counts and logs a connection closed before HTTP: its PROXY header was missing, malformed
/// or late (a socket that failed on its own is only logged).
fn refuse(node: &Node, refused: AcceptError) -> DispatchError {
    if let Some(reason) = refused.reason() {
        let label = opentelemetry::KeyValue::new("reason", reason);
        node.metrics().proxy_refused.add(1, &[label]);
    }
    tracing::debug!(error = %refused, "connection closed before its first request");
    DispatchError::Io(std::io::Error::other(refused))
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
