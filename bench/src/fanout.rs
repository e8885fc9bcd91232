//! Fan-out latency: live subscriptions on one or several nodes, a steady publish rate on
//! one node, and how long each event takes from the moment it is sent to the moment each
//! subscriber receives it.
//!
//! Works against any relay (and any set of nodes of one cluster): it only speaks NIP-01.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{fill::author, progress::Progress};

/// Options of `fanout`.
#[derive(clap::Args, serde::Serialize)]
pub struct Args {
    /// WebSocket URL of the node events are published to.
    #[arg(long)]
    pub publish: String,
    /// WebSocket URLs of the nodes subscribers connect to (repeat the option for several);
    /// subscriptions are spread over them in turn.
    #[arg(long = "subscribe", required = true)]
    pub subscribe: Vec<String>,
    /// Live subscriptions in all, one connection each.
    #[arg(long, default_value_t = 100)]
    pub subscriptions: usize,
    /// Events published per second.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// Latencies (µs) seen by subscribers of one node.
type Samples = Arc<Mutex<Vec<u64>>>;

/// Runs the measurement and prints a table per subscriber node.
pub async fn run(args: &Args) -> anyhow::Result<Value> {
    let run_tag = format!("bench-{}", starling::policy::now());
    let start = Instant::now();
    let samples: Vec<Samples> = args.subscribe.iter().map(|_| Samples::default()).collect();
    let mut readers = Vec::new();
    let delivered = Arc::new(AtomicU64::new(0));
    let opening = Progress::start("subscriptions open", Some(args.subscriptions as u64));
    for n in 0..args.subscriptions {
        let node = n % args.subscribe.len();
        let mut ws = crate::load::connect(&args.subscribe[node]).await?;
        let req = json!(["REQ", "bench", {"kinds": [1], "#t": [run_tag], "limit": 0}]);
        ws.send(Message::text(req.to_string())).await?;
        // Wait for EOSE so that every subscription is live before publishing starts.
        loop {
            let msg = ws
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("subscriber closed"))??;
            if msg.to_text().is_ok_and(|t| t.starts_with("[\"EOSE\"")) {
                break;
            }
        }
        opening.add(1);
        let (samples, delivered) = (Arc::clone(&samples[node]), Arc::clone(&delivered));
        readers.push(tokio::spawn(async move {
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
        }));
    }
    drop(opening);
    eprintln!(
        "{} subscriptions open on {} node(s)",
        args.subscriptions,
        args.subscribe.len()
    );

    let total = args.rate * args.seconds;
    let delivering = Progress::watch(
        "deliveries",
        Some(total * args.subscriptions as u64),
        delivered,
    );
    let keys = author(0);
    let mut publisher = crate::load::connect(&args.publish).await?;
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut ticks = tokio::time::interval(interval);
    let created_at = starling::policy::now();
    for n in 0..total {
        ticks.tick().await;
        // The content carries the send time, so a receiver computes its own latency.
        let sent = start.elapsed().as_micros() as u64;
        let tags = vec![
            vec!["t".to_string(), run_tag.clone()],
            vec!["n".to_string(), n.to_string()],
        ];
        let event = keys.sign(created_at, 1, tags, &sent.to_string());
        let frame = format!("[\"EVENT\",{}]", event.to_json());
        publisher.send(Message::text(frame)).await?;
    }
    // Drain OKs and give deliveries time to arrive.
    let drain = tokio::time::timeout(Duration::from_secs(5), async {
        let mut oks = 0;
        while oks < total {
            match publisher.next().await {
                Some(Ok(msg)) if msg.to_text().is_ok_and(|t| t.starts_with("[\"OK\"")) => oks += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        oks
    })
    .await
    .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for reader in readers {
        reader.abort();
    }
    drop(delivering);

    println!(
        "published {total} events at {}/s on {}; {drain} acknowledged",
        args.rate, args.publish
    );
    println!(
        "| subscribers on | subscriptions | deliveries | expected | p50 ms | p99 ms | max ms | deliveries/s |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut nodes = Vec::new();
    for (node, samples) in args.subscribe.iter().zip(&samples) {
        let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
        samples.sort_unstable();
        let subs = (0..args.subscriptions)
            .filter(|n| args.subscribe[n % args.subscribe.len()] == *node)
            .count();
        let at = |p: f64| {
            samples
                .get(((samples.len().max(1) - 1) as f64 * p) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        let expected = subs as u64 * total;
        let rate = samples.len() as f64 / args.seconds as f64;
        let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
        println!(
            "| {node} | {subs} | {} | {expected} | {p50:.2} | {p99:.2} | {max:.2} | {rate:.0} |",
            samples.len(),
        );
        nodes.push(json!({
            "node": node,
            "subscriptions": subs,
            "deliveries": samples.len(),
            "expected": expected,
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max,
            "deliveries_per_s": rate,
        }));
    }
    crate::report(
        "fanout",
        args,
        json!({"published": total, "acknowledged": drain, "nodes": nodes}),
    )
}
