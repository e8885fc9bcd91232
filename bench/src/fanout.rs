//! Fan-out latency: live subscriptions on one or several nodes, a steady publish rate on
//! one node, and how long each event takes from the moment it is sent to the moment each
//! subscriber receives it.
//!
//! Subscriptions can share connections (`--subscriptions-per-connection`), and each event
//! can match only some of them (`--matching`): then every subscription has a `#t` value of
//! its own and each event carries M of those values, in turn, so the others stay live
//! without matching.
//!
//! With `--compression` the subscribers offer permessage-deflate (and inflate what the relay
//! compresses, [`crate::inflating`]); either way the bytes they read are counted, and the
//! report gives them per delivered event.
//!
//! Works against any relay (and any set of nodes of one cluster): it only speaks NIP-01.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    fill::author,
    inflating::{self, Ws},
    load::connect,
    progress::Progress,
};

/// Options of `fanout`.
#[derive(clap::Args, serde::Serialize)]
pub struct Args {
    /// WebSocket URL of the node events are published to.
    #[arg(long)]
    pub publish: String,
    /// WebSocket URLs of the nodes subscribers connect to (repeat the option for several);
    /// connections are spread over them in turn.
    #[arg(long = "subscribe", required = true)]
    pub subscribe: Vec<String>,
    /// Live subscriptions in all.
    #[arg(long, default_value_t = 100)]
    pub subscriptions: usize,
    /// Subscriptions sharing one connection (the relay's --max-subscriptions bounds it).
    #[arg(
        long,
        default_value_t = 1,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub subscriptions_per_connection: usize,
    /// Subscriptions each event matches (default: all); each event then carries M `t`
    /// tags (the relay's --max-event-tags bounds it).
    #[arg(long)]
    pub matching: Option<usize>,
    /// Events published per second.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Subscribers offer permessage-deflate (no context takeover).
    #[arg(long)]
    pub compression: bool,
}

/// Subscriber connections opening at once.
const OPENING: usize = 32;
/// Longest wait for deliveries once publishing is over.
const DRAIN: Duration = Duration::from_secs(10);

/// Latencies (µs) seen by subscribers of one node.
type Samples = Arc<Mutex<Vec<u64>>>;

/// Which subscriptions there are, where they live, and which events match them.
struct Plan {
    run_tag: String,
    subscriptions: usize,
    per_connection: usize,
    nodes: usize,
    matching: Option<usize>,
    events: u64,
}

impl Plan {
    /// The plan of a run, checked against its options.
    fn new(args: &Args) -> anyhow::Result<Self> {
        ensure!(args.subscriptions > 0, "--subscriptions must be at least 1");
        if let Some(m) = args.matching {
            ensure!(
                (1..=args.subscriptions).contains(&m),
                "--matching must be between 1 and --subscriptions ({})",
                args.subscriptions
            );
        }
        Ok(Self {
            run_tag: format!("bench-{}", starling::policy::now()),
            subscriptions: args.subscriptions,
            per_connection: args.subscriptions_per_connection,
            nodes: args.subscribe.len(),
            matching: args.matching,
            events: args.rate * args.seconds,
        })
    }

    /// Connections needed for every subscription.
    fn connections(&self) -> usize {
        self.subscriptions.div_ceil(self.per_connection)
    }

    /// The node (index into `--subscribe`) of subscription `sub`.
    fn node(&self, sub: usize) -> usize {
        (sub / self.per_connection) % self.nodes
    }

    /// The `t` value subscription `sub` follows.
    fn tag(&self, sub: usize) -> String {
        match self.matching {
            Some(_) => format!("{}-{sub}", self.run_tag),
            None => self.run_tag.clone(),
        }
    }

    /// The filters of connection `c`'s subscriptions.
    fn filters(&self, c: usize) -> Vec<Value> {
        let first = c * self.per_connection;
        (first..(first + self.per_connection).min(self.subscriptions))
            .map(|sub| json!({"kinds": [1], "#t": [self.tag(sub)], "limit": 0}))
            .collect()
    }

    /// The tags of the `n`-th event: the `t` values of the subscriptions it matches.
    fn event_tags(&self, n: u64) -> Vec<Vec<String>> {
        let targets: Vec<String> = match self.matching {
            Some(m) => (0..m as u64)
                .map(|k| self.tag(((n * m as u64 + k) % self.subscriptions as u64) as usize))
                .collect(),
            None => vec![self.run_tag.clone()],
        };
        targets
            .into_iter()
            .map(|t| vec!["t".to_string(), t])
            .chain([vec!["n".to_string(), n.to_string()]])
            .collect()
    }

    /// Deliveries subscription `sub` should receive over the run.
    fn expected(&self, sub: usize) -> u64 {
        let Some(m) = self.matching else {
            return self.events;
        };
        // The events' targets run round-robin over the subscriptions.
        let matches = self.events * m as u64;
        let subs = self.subscriptions as u64;
        matches / subs + u64::from((sub as u64) < matches % subs)
    }
}

/// Runs the measurement and prints a table per subscriber node.
pub async fn run(args: &Args) -> anyhow::Result<Value> {
    let plan = Plan::new(args)?;
    let start = Instant::now();
    let samples: Vec<Samples> = args.subscribe.iter().map(|_| Samples::default()).collect();
    let delivered = Arc::new(AtomicU64::new(0));
    let bytes_read = Arc::new(AtomicU64::new(0));
    let subscribers = open_all(args, &plan, &bytes_read).await?;
    let read_before = bytes_read.load(Ordering::Relaxed);
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|(node, ws)| {
            let (samples, delivered) = (Arc::clone(&samples[node]), Arc::clone(&delivered));
            tokio::spawn(read_deliveries(ws, samples, delivered, start))
        })
        .collect();
    eprintln!(
        "{} subscriptions open on {} connections to {} node(s)",
        plan.subscriptions,
        plan.connections(),
        plan.nodes
    );

    let expected: u64 = (0..plan.subscriptions).map(|s| plan.expected(s)).sum();
    let delivering = Progress::watch("deliveries", Some(expected), Arc::clone(&delivered));
    let acknowledged = publish(args, &plan, start).await?;
    // Give deliveries time to arrive, up to a bound.
    let drained = tokio::time::timeout(DRAIN, async {
        while delivered.load(Ordering::Relaxed) < expected {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    drained.await.ok();
    for reader in readers {
        reader.abort();
    }
    drop(delivering);
    let nodes = table(args, &plan, &samples, acknowledged);
    let read = bytes_read.load(Ordering::Relaxed) - read_before;
    let deliveries = delivered.load(Ordering::Relaxed);
    let per_event = read as f64 / deliveries.max(1) as f64;
    println!(
        "subscribers read {read} bytes for {deliveries} deliveries: {per_event:.0} bytes a delivered event (compression offered: {})",
        args.compression
    );
    crate::report::of(
        "fanout",
        args,
        json!({
            "published": plan.events,
            "acknowledged": acknowledged,
            "connections": plan.connections(),
            "nodes": nodes,
            "bytes_read": read,
            "bytes_per_delivery": per_event,
        }),
    )
}

/// Opens every subscriber connection, a few at a time; each with its node's index.
async fn open_all(
    args: &Args,
    plan: &Plan,
    bytes_read: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<(usize, Ws)>> {
    let opening = Progress::start(
        "subscriber connections open",
        Some(plan.connections() as u64),
    );
    futures_util::stream::iter(0..plan.connections())
        .map(|c| {
            let node = c % plan.nodes;
            let (url, filters) = (&args.subscribe[node], plan.filters(c));
            let read = Arc::clone(bytes_read);
            async move {
                let ws = subscribe(url, &filters, args.compression, read).await?;
                Ok::<_, anyhow::Error>((node, ws))
            }
        })
        .buffer_unordered(OPENING)
        .inspect_ok(|_| opening.add(1))
        .try_collect()
        .await
}

/// Connects and opens one subscription per filter; returns once every one is live (EOSE).
async fn subscribe(
    url: &str,
    filters: &[Value],
    compression: bool,
    read: Arc<AtomicU64>,
) -> anyhow::Result<Ws> {
    let mut ws = inflating::connect(url, compression, read).await?;
    crate::load::open_subscriptions(&mut ws, filters)
        .await
        .with_context(|| format!("subscribing on {url}"))?;
    Ok(ws)
}

/// Records the latency of every event delivered on a connection, until it is aborted.
async fn read_deliveries(mut ws: Ws, samples: Samples, delivered: Arc<AtomicU64>, start: Instant) {
    while let Some(Ok(msg)) = ws.next().await {
        let Ok(text) = msg.to_text() else { continue };
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        if value[0] != "EVENT" {
            continue;
        }
        let sent: u64 = value[2]["content"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let now = start.elapsed().as_micros() as u64;
        samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(now.saturating_sub(sent));
        delivered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Publishes the run's events at a steady rate; returns how many were acknowledged.
async fn publish(args: &Args, plan: &Plan, start: Instant) -> anyhow::Result<u64> {
    let keys = author(0);
    let mut publisher = connect(&args.publish).await?;
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut ticks = tokio::time::interval(interval);
    let created_at = starling::policy::now();
    for n in 0..plan.events {
        ticks.tick().await;
        // The content carries the send time, so a receiver computes its own latency.
        let sent = start.elapsed().as_micros() as u64;
        let event = keys.sign(created_at, 1, plan.event_tags(n), &sent.to_string());
        let frame = format!("[\"EVENT\",{}]", event.to_json());
        publisher.send(Message::text(frame)).await?;
    }
    let acknowledging = async {
        let mut oks = 0;
        while oks < plan.events {
            match publisher.next().await {
                Some(Ok(msg)) if msg.to_text().is_ok_and(|t| t.starts_with("[\"OK\"")) => oks += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        oks
    };
    Ok(tokio::time::timeout(Duration::from_secs(5), acknowledging)
        .await
        .unwrap_or(0))
}

/// Prints a row per subscriber node and returns the rows.
fn table(args: &Args, plan: &Plan, samples: &[Samples], acknowledged: u64) -> Vec<Value> {
    println!(
        "published {} events at {}/s on {}; {acknowledged} acknowledged; {} subscriptions on {} connections, {} matching each event",
        plan.events,
        args.rate,
        args.publish,
        plan.subscriptions,
        plan.connections(),
        plan.matching.unwrap_or(plan.subscriptions),
    );
    println!(
        "| subscribers on | subscriptions | deliveries | expected | p50 ms | p99 ms | max ms | deliveries/s |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut nodes = Vec::new();
    for (index, (node, samples)) in args.subscribe.iter().zip(samples).enumerate() {
        let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
        samples.sort_unstable();
        let subs: Vec<usize> = (0..plan.subscriptions)
            .filter(|&s| plan.node(s) == index)
            .collect();
        let expected: u64 = subs.iter().map(|&s| plan.expected(s)).sum();
        let at = |p: f64| {
            samples
                .get(((samples.len().max(1) - 1) as f64 * p) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        let rate = samples.len() as f64 / args.seconds as f64;
        let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
        println!(
            "| {node} | {} | {} | {expected} | {p50:.2} | {p99:.2} | {max:.2} | {rate:.0} |",
            subs.len(),
            samples.len(),
        );
        nodes.push(json!({
            "node": node,
            "subscriptions": subs.len(),
            "deliveries": samples.len(),
            "expected": expected,
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max,
            "deliveries_per_s": rate,
        }));
    }
    nodes
}
