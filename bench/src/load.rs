//! Ingest and query load against any relay, over WebSocket, with latency percentiles.
//!
//! - `ingest`: C connections each keep a window of EVENTs in flight; events/s answered
//!   `OK true` and the send-to-OK latency.
//! - `query`: C connections each send one REQ of a shape at a time and wait for EOSE;
//!   REQs/s and the REQ-to-EOSE latency. Run it on a store filled with the same seed
//!   (`starling-bench fill` + `starling import`), so the sampled values exist.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use starling::nostr::hex;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    fill::{Rng, author, event},
    progress::Progress,
};

/// Options of `ingest`.
#[derive(clap::Args, serde::Serialize)]
pub struct IngestArgs {
    /// WebSocket URL of the relay.
    #[arg(long)]
    pub url: String,
    /// Connections publishing at once.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Events to publish in all (generated and signed before the clock starts).
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// EVENTs each connection keeps in flight.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Seed of the generated events (use one the relay has not stored yet).
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
}

/// Options of `query`.
#[derive(clap::Args, serde::Serialize)]
pub struct QueryArgs {
    /// WebSocket URL of the relay.
    #[arg(long)]
    pub url: String,
    /// Connections querying at once.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Seconds to query each shape for.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Authors in the filled store (as given to `fill`).
    #[arg(long, default_value_t = 5_000)]
    pub authors: u64,
    /// Shapes to run, comma-separated (`ids` takes the ids of up to 500 stored notes first).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Shape::ALL)]
    pub shapes: Vec<Shape>,
}

/// The `host:port` of a `ws://` URL.
pub fn address(url: &str) -> anyhow::Result<&str> {
    url.strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .filter(|host| !host.is_empty())
        .ok_or_else(|| anyhow!("{url}: expected a ws:// URL"))
}

/// A client's WebSocket connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects with TCP_NODELAY, so that small frames are not held back by Nagle's algorithm
/// (which would add ~40 ms to every request that follows a small write).
pub async fn connect(url: &str) -> anyhow::Result<Ws> {
    let stream = tokio::net::TcpStream::connect(address(url)?).await?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await?;
    Ok(ws)
}

/// Connects to the relay at `target` from source address `source` (on loopback, any
/// 127.0.0.x), with TCP_NODELAY.
pub async fn connect_from(
    url: &str,
    target: std::net::SocketAddr,
    source: std::net::Ipv4Addr,
) -> anyhow::Result<Ws> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await?;
    Ok(ws)
}

/// Opens one subscription per filter (ids `s0`, `s1`, …) and waits for the `EOSE` of each;
/// fails on a `CLOSED` or if the relay closes the connection.
pub async fn open_subscriptions<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    filters: &[Value],
) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for (i, filter) in filters.iter().enumerate() {
        let req = json!(["REQ", format!("s{i}"), filter]);
        ws.send(Message::text(req.to_string())).await?;
    }
    let mut live = 0;
    while live < filters.len() {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("the relay closed the connection"))??;
        let Ok(text) = msg.to_text() else { continue };
        if text.starts_with("[\"EOSE\"") {
            live += 1;
        } else if text.starts_with("[\"CLOSED\"") {
            bail!("subscription refused: {text}");
        }
    }
    Ok(())
}

/// The `p` quantile (0 to 1) of sorted values, 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p) as usize)
        .copied()
        .unwrap_or(0.0)
}

/// Prints a table row of a run's count, rate and latency percentiles, and returns them.
fn summary(name: &str, mut latencies_ms: Vec<f64>, elapsed: Duration, unit: &str) -> Value {
    latencies_ms.sort_by(f64::total_cmp);
    let count = latencies_ms.len();
    let rate = count as f64 / elapsed.as_secs_f64();
    let (p50, p99, max) = (
        percentile(&latencies_ms, 0.5),
        percentile(&latencies_ms, 0.99),
        percentile(&latencies_ms, 1.0),
    );
    println!("| {name} | {count} | {rate:.0} {unit}/s | {p50:.2} | {p99:.2} | {max:.2} |");
    json!({
        "name": name,
        "count": count,
        "seconds": elapsed.as_secs_f64(),
        "rate_per_s": rate,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max,
    })
}

/// Publishes pre-signed events on several connections and reports throughput and latency.
pub async fn ingest(args: &IngestArgs) -> anyhow::Result<Value> {
    let now = starling::policy::now();
    eprintln!("signing {} events", args.events);
    let per_connection = args.events.div_ceil(args.connections as u64);
    let signing = Progress::start("events signed", Some(args.events));
    let mut batches = Vec::new();
    for c in 0..args.connections as u64 {
        let (seed, total, signed) = (args.seed, args.events, signing.counter());
        batches.push(tokio::task::spawn_blocking(move || {
            let start = c * per_connection;
            let end = (start + per_connection).min(total);
            (start..end)
                .map(|i| {
                    // Tags and content from the realistic mix; regular kinds only, so that
                    // every event is stored; created_at spread over the last hour, newer than
                    // a filled store's events (all at one second would be unlike traffic).
                    let e = event(i + 1_000_000_000, total, 5_000, seed, now);
                    let kind = if e.kind == 7 { 7 } else { 1 };
                    let created_at = now - 3_600 + i * 3_600 / total.max(1);
                    let e = author(i % 5_000).sign(created_at, kind, e.tags, &e.content);
                    signed.fetch_add(1, Ordering::Relaxed);
                    (e.id_hex(), format!("[\"EVENT\",{}]", e.to_json()))
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut prepared = Vec::new();
    for batch in batches {
        prepared.push(batch.await?);
    }
    drop(signing);
    let acknowledging = Progress::start("events acknowledged", Some(args.events));
    let started = Instant::now();
    let mut workers = Vec::new();
    for events in prepared {
        let (url, window) = (args.url.clone(), args.window);
        let acknowledged = acknowledging.counter();
        workers.push(tokio::spawn(async move {
            let ws = connect(&url).await?;
            let (mut sink, mut stream) = ws.split();
            let mut sent_at = std::collections::HashMap::new();
            let mut latencies = Vec::with_capacity(events.len());
            let mut refused = 0u64;
            let mut next = 0;
            while latencies.len() as u64 + refused < events.len() as u64 {
                while next < events.len() && sent_at.len() < window {
                    let (id, frame) = &events[next];
                    sent_at.insert(id.clone(), Instant::now());
                    sink.send(Message::text(frame.clone())).await?;
                    next += 1;
                }
                let Some(msg) = stream.next().await else {
                    break;
                };
                let text = msg?.into_text()?;
                if let Some((id, accepted)) = ok_message(&text) {
                    if let Some(at) = sent_at.remove(id) {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                        if accepted {
                            latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                        } else {
                            refused += 1;
                        }
                    }
                }
            }
            Ok::<_, anyhow::Error>((latencies, refused))
        }));
    }
    let mut latencies = Vec::new();
    let mut refused = 0;
    for worker in workers {
        let (l, r) = worker.await??;
        latencies.extend(l);
        refused += r;
    }
    let elapsed = started.elapsed();
    drop(acknowledging);
    println!(
        "ingest on {}: {} connections, window {}, {refused} refused",
        args.url, args.connections, args.window
    );
    println!("| mode | acknowledged | rate | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let acknowledged = summary("ingest (OK true)", latencies, elapsed, "events");
    crate::report::of(
        "ingest",
        args,
        json!({"refused": refused, "acknowledged": acknowledged}),
    )
}

/// The event id and verdict of an `OK` message, read without building a JSON tree (the
/// generator shares the relay's machine, so it should cost it as little as it can).
fn ok_message(text: &str) -> Option<(&str, bool)> {
    let (id, rest) = text.strip_prefix("[\"OK\",\"")?.split_at_checked(64)?;
    Some((id, rest.strip_prefix("\",")?.starts_with("true")))
}

/// A common REQ shape.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// One author's notes: `authors` + `kinds`, limit 50.
    AuthorsKinds,
    /// Mentions of a key: `#p`, limit 50.
    PTag,
    /// References to an event: `#e`, limit 50.
    ETag,
    /// The newest notes: `kinds`, limit 100.
    Kinds,
    /// Reactions on a topic: `#t` + `kinds`, limit 50.
    TTagKinds,
    /// A batch of 50 `ids` of stored notes.
    Ids,
}

impl Shape {
    /// Every shape, in the order they run.
    const ALL: [Shape; 6] = [
        Shape::AuthorsKinds,
        Shape::PTag,
        Shape::ETag,
        Shape::Kinds,
        Shape::TTagKinds,
        Shape::Ids,
    ];

    /// The shape's name in the table.
    fn label(self) -> &'static str {
        match self {
            Shape::AuthorsKinds => "authors+kinds limit 50",
            Shape::PTag => "#p limit 50",
            Shape::ETag => "#e limit 50",
            Shape::Kinds => "kinds limit 100",
            Shape::TTagKinds => "#t + kinds limit 50",
            Shape::Ids => "ids batch of 50",
        }
    }
}

/// REQ filters of one shape, with values drawn from a filled store.
struct Filters {
    shape: Shape,
    rng: Rng,
    authors: u64,
    ids: Arc<Vec<String>>,
}

impl Filters {
    /// The next filter.
    fn next(&mut self) -> Value {
        let rng = &mut self.rng;
        let pubkey =
            |rng: &mut Rng| hex::encode(&author(rng.below(self.authors.min(200))).pubkey());
        match self.shape {
            Shape::AuthorsKinds => json!({"authors": [pubkey(rng)], "kinds": [1], "limit": 50}),
            Shape::PTag => json!({"#p": [pubkey(rng)], "limit": 50}),
            Shape::ETag => {
                let target: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
                    sha2::Sha256::default(),
                    format!("1:{}", rng.below(100_000)),
                ))
                .into();
                json!({"#e": [hex::encode(&target)], "limit": 50})
            }
            Shape::Kinds => json!({"kinds": [1], "limit": 100}),
            Shape::TTagKinds => json!({"kinds": [7], "#t": ["nostr"], "limit": 50}),
            Shape::Ids => json!({ "ids": sample(&self.ids, 50, rng) }),
        }
    }
}

/// `n` distinct items of `items` (all of them when there are fewer), drawn with `rng`.
fn sample(items: &[String], n: usize, rng: &mut Rng) -> Vec<String> {
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < n.min(items.len()) {
        picked.insert(rng.below(items.len() as u64) as usize);
    }
    picked.into_iter().map(|i| items[i].clone()).collect()
}

/// Ids of up to 500 stored notes (kind 1), for the `ids` shape.
async fn harvest_ids(url: &str) -> anyhow::Result<Vec<String>> {
    let mut ws = connect(url).await?;
    let req = json!(["REQ", "ids", {"kinds": [1], "limit": 500}]);
    ws.send(Message::text(req.to_string())).await?;
    let mut ids = Vec::new();
    loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("the relay closed the connection"))??;
        let value: Value = serde_json::from_str(msg.to_text()?)?;
        match value[0].as_str() {
            Some("EVENT") => ids.extend(value[2]["id"].as_str().map(String::from)),
            Some("EOSE") => break,
            Some("CLOSED") => bail!("the relay refused the REQ for ids: {value}"),
            _ => {}
        }
    }
    ws.close(None).await?;
    ensure!(
        !ids.is_empty(),
        "no notes (kind 1) are stored to take ids from; fill the relay first"
    );
    Ok(ids)
}

/// Runs each chosen REQ shape for a while on several connections.
pub async fn query(args: &QueryArgs) -> anyhow::Result<Value> {
    let ids = if args.shapes.contains(&Shape::Ids) {
        harvest_ids(&args.url).await?
    } else {
        Vec::new()
    };
    let ids = Arc::new(ids);
    println!(
        "queries on {}: {} connections, {} s per shape",
        args.url, args.connections, args.seconds
    );
    println!("| shape | REQs | rate | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut shapes = Vec::new();
    for &shape in &args.shapes {
        let started = Instant::now();
        let latencies = run_shape(args, shape, &ids).await?;
        shapes.push(summary(shape.label(), latencies, started.elapsed(), "REQ"));
    }
    crate::report::of("query", args, json!({ "shapes": shapes }))
}

/// Queries one shape on every connection for `--seconds`; the REQ-to-EOSE latencies (ms).
async fn run_shape(
    args: &QueryArgs,
    shape: Shape,
    ids: &Arc<Vec<String>>,
) -> anyhow::Result<Vec<f64>> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let progress = Progress::start(format!("{}: REQs", shape.label()), None);
    let workers: Vec<_> = (0..args.connections)
        .map(|c| {
            let filters = Filters {
                shape,
                rng: Rng::new(c as u64 + 7),
                authors: args.authors,
                ids: Arc::clone(ids),
            };
            let url = args.url.clone();
            tokio::spawn(query_worker(url, filters, deadline, progress.counter()))
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    Ok(latencies)
}

/// One connection sending a REQ, waiting for its EOSE and closing it, until `deadline`.
async fn query_worker(
    url: String,
    mut filters: Filters,
    deadline: Instant,
    answered: Arc<AtomicU64>,
) -> anyhow::Result<Vec<f64>> {
    let mut ws = connect(&url).await?;
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let sub = format!("q{n}");
        let at = Instant::now();
        let req = json!(["REQ", sub, filters.next()]);
        ws.send(Message::text(req.to_string())).await?;
        loop {
            let msg = ws
                .next()
                .await
                .ok_or_else(|| anyhow!("the relay closed the connection"))??;
            let text = msg.into_text()?;
            if text.starts_with("[\"EOSE\"") || text.starts_with("[\"CLOSED\"") {
                break;
            }
        }
        latencies.push(at.elapsed().as_secs_f64() * 1000.0);
        answered.fetch_add(1, Ordering::Relaxed);
        ws.send(Message::text(json!(["CLOSE", sub]).to_string()))
            .await?;
        n += 1;
    }
    Ok(latencies)
}
