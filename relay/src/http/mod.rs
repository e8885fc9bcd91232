//! HTTP: the WebSocket endpoint, NIP-11 and the NIP-86 management API on the same URL, and
//! health checks (on the relay's port and on the metrics port, when it has one).

pub mod info;

use std::time::Instant;

use actix_web::{
    HttpRequest, HttpResponse,
    http::{Method, header},
    web,
};

use crate::{
    actors::connection::{Connection, Peer},
    fair::ClientAddress,
    manage,
    node::Node,
    policy::AddressLease,
    proxy::{self, TrustedProxies},
    websocket,
};

/// Registers every route of the relay; `/metrics` too unless it has a port of its own.
pub fn routes(with_metrics: bool) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::resource("/")
                .route(web::get().to(root))
                .route(web::post().to(manage::endpoint::handle))
                .route(web::method(Method::OPTIONS).to(preflight)),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
        if with_metrics {
            cfg.route("/metrics", web::get().to(metrics));
        }
    }
}

/// Registers what a separate metrics port (`--metrics-bind`) serves: `/metrics`, and the
/// health checks `/healthz` and `/readyz`, for probes that cannot speak to the relay's own
/// port (with `--proxy-protocol`, a connection without a PROXY header is closed there).
pub fn metrics_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

/// `/`: a WebSocket upgrade becomes a connection; `Accept: application/nostr+json` gets the
/// NIP-11 document; anything else gets a small HTML page.
async fn root(
    req: HttpRequest,
    body: web::Payload,
    node: web::Data<Node>,
    trusted: web::Data<TrustedProxies>,
) -> Result<HttpResponse, actix_web::Error> {
    if wants_websocket(&req) {
        if node.is_draining() {
            return Ok(HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("shutting down\n"));
        }
        let peer = req.peer_addr();
        let client = peer.map(|peer| {
            let header = node.config().proxy_header();
            proxy::client_ip(peer.ip(), req.headers(), header, &trusted)
        });
        let address = client.map_or_else(ClientAddress::local, ClientAddress::of);
        let Some(admission) = node.admit_connection(address) else {
            return Ok(relay_full(&node));
        };
        if !admission.address.allow_connection(Instant::now()) {
            return Ok(connecting_too_fast(&node));
        }
        let limiter = node.limiter();
        let lease = match AddressLease::take(limiter, node.config(), node.id(), &address).await {
            Ok(lease) => lease,
            Err(limit) => return Ok(too_many_connections(&node, limit)),
        };
        let config = node.config();
        let settings = websocket::Settings {
            max_message_bytes: config.max_message_bytes,
            compression: config.websocket_compression,
            compression_min_bytes: config.compression_min_bytes,
        };
        let (response, session, stream) = websocket::handle(&req, body, &settings, node.metrics())?;
        let addr = match (client, peer) {
            (Some(client), Some(peer)) if client != peer.ip() => format!("{client} via {peer}"),
            (_, Some(peer)) => peer.to_string(),
            _ => "unknown".to_string(),
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let peer = Peer {
            addr,
            admission,
            lease,
            host,
        };
        Connection::start(node.into_inner(), session, stream, peer);
        return Ok(response);
    }
    if accepts(&req, "application/nostr+json") {
        return Ok(with_cors(HttpResponse::Ok())
            .content_type("application/nostr+json")
            .body(info::document(&node).to_string()));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(info::page(&node)))
}

/// The answer to an upgrade when the node holds all the connections it may.
fn relay_full(node: &Node) -> HttpResponse {
    let label = opentelemetry::KeyValue::new("limit", "node-connections");
    node.metrics().rate_limited.add(1, &[label]);
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, "10"))
        .content_type("text/plain")
        .body("rate-limited: this relay holds all the connections it can; try again later\n")
}

/// The answer to an upgrade from an address that holds all the connections it may.
fn too_many_connections(node: &Node, limit: u64) -> HttpResponse {
    let label = opentelemetry::KeyValue::new("limit", "connections");
    node.metrics().rate_limited.add(1, &[label]);
    HttpResponse::TooManyRequests()
        .content_type("text/plain")
        .body(format!(
            "rate-limited: at most {limit} connections per address\n"
        ))
}

/// The answer to an upgrade from an address that opens connections faster than it may.
fn connecting_too_fast(node: &Node) -> HttpResponse {
    let label = opentelemetry::KeyValue::new("limit", "connection-rate");
    node.metrics().rate_limited.add(1, &[label]);
    let per_minute = node.config().max_connections_per_minute_per_ip;
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, "10"))
        .content_type("text/plain")
        .body(format!(
            "rate-limited: at most {per_minute} new connections a minute per address\n"
        ))
}

/// CORS preflight for browsers fetching the NIP-11 document.
async fn preflight() -> HttpResponse {
    with_cors(HttpResponse::NoContent())
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .finish()
}

/// `/healthz`: the process is up and serving HTTP.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// `/readyz`: this node, the nodes it sees, its bus and its store. `degraded` (still HTTP
/// 200, the node serves what it can) while the bus is down (live events from other nodes are
/// delayed until it is back) or the store unreachable (events are refused with `error:`).
/// `draining` (HTTP 503) once the node is stopping.
async fn readyz(node: web::Data<Node>) -> HttpResponse {
    let view = node.cluster();
    let store_up = node.metrics().store_up();
    let status = match (node.is_draining(), view.connected && store_up) {
        (true, _) => "draining",
        (false, true) => "ready",
        (false, false) => "degraded",
    };
    let mut response = if node.is_draining() {
        HttpResponse::ServiceUnavailable()
    } else {
        HttpResponse::Ok()
    };
    response.content_type("application/json").body(
        serde_json::json!({
            "status": status,
            "node": &**node.id(),
            "nodes": view.nodes,
            "bus": if view.connected { "connected" } else { "disconnected" },
            "store": if store_up { "ok" } else { "unreachable" },
        })
        .to_string(),
    )
}

/// `/metrics`: every metric, in the Prometheus text format.
async fn metrics(node: web::Data<Node>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(node.metrics().render())
}

fn with_cors(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Accept, Authorization, Content-Type",
        ))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, OPTIONS"));
    response
}

fn wants_websocket(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn accepts(req: &HttpRequest, media_type: &str) -> bool {
    let values = req
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok());
    accepts_media_type(values, media_type)
}

/// Whether `Accept` header values (`text/html, application/nostr+json;q=0.9`) name
/// `media_type`.
pub fn accepts_media_type<'a>(values: impl IntoIterator<Item = &'a str>, media_type: &str) -> bool {
    values
        .into_iter()
        .any(|v| v.split(',').any(|part| part.trim().starts_with(media_type)))
}
