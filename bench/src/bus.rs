//! The bus's ceiling: how many events a second go through one Redis, from one node or
//! several, measured on the cluster crate's `RedisBus` alone (no relay, no store).
//!
//! `--nodes` publishing buses each publish `--events` envelopes of `--payload-bytes` as
//! fast as their queues take them; one more bus, as another node would, receives them and
//! counts. The result is the rate at which envelopes arrived, and how many were lost (a
//! publisher's queue full: the relay would catch up on those from the store).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::ensure;
use futures_util::StreamExt;
use serde_json::{Value, json};
use starling_cluster::{Bus, BusSettings, Envelope, RedisBus, RedisEndpoint, RedisSettings};

/// Options of `bus`.
#[derive(clap::Args, serde::Serialize)]
pub struct Args {
    /// The Redis the buses share.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis: String,
    /// Publishing nodes.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Envelopes each node publishes.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Bytes of each payload (a typical short note is about 450).
    #[arg(long, default_value_t = 450)]
    pub payload_bytes: usize,
    /// Envelopes per second each node offers (0: as fast as its queue takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

/// How long the receiver waits for more once envelopes stop coming.
const QUIET: Duration = Duration::from_secs(3);

/// How many envelopes a publisher hands its bus before yielding, unpaced.
const BURST: u64 = 512;

/// The pacing tick of a paced publisher.
const TICK: Duration = Duration::from_millis(10);

pub async fn run(args: &Args) -> anyhow::Result<Value> {
    ensure!(args.nodes > 0, "--nodes must be at least 1");
    let endpoint = RedisEndpoint::new(&RedisSettings {
        url: args.redis.clone(),
        ..Default::default()
    })?;
    endpoint.probe().await?;
    let cluster = format!("bench-bus-{}", starling::policy::now());
    let bus = |name: String| {
        RedisBus::start(
            endpoint.clone(),
            &cluster,
            name.into(),
            BusSettings::default(),
        )
    };
    let receiver = bus("receiver".into());
    let mut incoming = receiver.subscribe();
    let publishers: Vec<RedisBus> = (0..args.nodes).map(|n| bus(format!("node-{n}"))).collect();
    let mut view = receiver.view();
    while !view.borrow().connected {
        view.changed().await?;
    }
    for publisher in &publishers {
        let mut view = publisher.view();
        while !view.borrow().connected {
            view.changed().await?;
        }
    }
    let filler = "x".repeat(args.payload_bytes.saturating_sub(14));
    let payload = bytes::Bytes::from(format!("{{\"content\":\"{filler}\"}}"));
    let total = args.events * args.nodes as u64;
    let counting = tokio::spawn(async move {
        let mut received = 0u64;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while let Ok(Some(envelope)) = tokio::time::timeout(QUIET, incoming.next()).await {
            if envelope.origin.starts_with("node-") {
                received += 1;
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
                if received == total {
                    break;
                }
            }
        }
        (received, first.map(|f| last.duration_since(f)))
    });
    let started = Instant::now();
    let publishing: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(n, bus)| {
            let (events, payload, rate) = (args.events, payload.clone(), args.rate);
            let origin: Arc<str> = Arc::from(format!("node-{n}"));
            let per_tick = (rate * TICK.as_millis() as u64 / 1000).max(1);
            tokio::spawn(async move {
                let bus = Arc::new(bus);
                let mut ticks = tokio::time::interval(TICK);
                for n in 0..events {
                    if rate > 0 && n % per_tick == 0 {
                        ticks.tick().await;
                    }
                    bus.publish(Envelope {
                        origin: Arc::clone(&origin),
                        payload: payload.clone(),
                        sent_at_micros: starling_cluster::now_micros(),
                        epoch: 0,
                        seq: 0,
                    });
                    if rate == 0 && n % BURST == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                bus
            })
        })
        .collect();
    let mut kept = Vec::new();
    for task in publishing {
        kept.push(task.await?);
    }
    let handed = started.elapsed();
    let (received, span) = counting.await?;
    let seconds = span.unwrap_or(handed).as_secs_f64().max(1e-9);
    let rate = received as f64 / seconds;
    let lost = total - received;
    let offered = match args.rate {
        0 => "as fast as possible".to_string(),
        r => format!("{} ({r} per node)", r * args.nodes as u64),
    };
    println!(
        "| nodes | payload B | offered events/s | published | received | lost | events/s received |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {offered} | {total} | {received} | {lost} | {rate:.0} |",
        args.nodes, args.payload_bytes
    );
    drop(kept);
    crate::report::of(
        "bus",
        args,
        json!({"published": total, "received": received, "lost": lost, "events_per_second": rate, "seconds": seconds}),
    )
}
