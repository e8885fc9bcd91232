//! Assembles a node and serves it over HTTP and WebSocket.

use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use starling_cluster::{Bus, InProcessBus};

use crate::{config::Config, http, node::Node, store};

/// Runs the relay until it is told to stop (SIGINT or SIGTERM). Call it inside an actix
/// system. Prints `listening on ws://ADDR` on standard output once bound.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let store = store::open(&config).await?;
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new());
    let node = web::Data::from(Node::start(config.clone(), store, bus));
    let server = HttpServer::new(move || App::new().app_data(node.clone()).configure(http::routes))
        .workers(config.worker_count())
        .shutdown_timeout(5)
        .on_connect(|connection, _| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .bind(config.bind)
        .with_context(|| format!("binding {}", config.bind))?;
    for addr in server.addrs() {
        println!("listening on ws://{addr}");
        tracing::info!(%addr, "listening");
    }
    server.run().await.context("serving")
}
