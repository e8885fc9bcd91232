//! Well-behaved clients measured alone and then while hostile clients attack the relay:
//! what one user of a public relay sees when others misbehave.
//!
//! Each good client (from 127.0.0.1) holds a live subscription to its own notes and, every
//! `--interval-ms`, publishes a note, waits for its `OK` and its live delivery, and reads it
//! back by id (`REQ` to `EOSE`). The hostile clients come from other loopback addresses
//! (127.0.0.2 onwards; all from 127.0.0.1 with `--same-address`) and reconnect whenever the
//! relay closes them. The attacks:
//!
//! - `req-close`: a `REQ` with a broad filter (`kinds`, `#t`, `search`, `since`, each with
//!   limit 5000) immediately followed by its `CLOSE`, in a loop;
//! - `forged`: `EVENT`s with valid ids and bad signatures, as fast as the socket takes them;
//! - `ping`: pings as fast as the socket takes them, never reading;
//! - `poison`: events with a 6,000-byte single-letter tag value;
//! - `flood`: new connections, each sending one `REQ` and going away.
//!
//! Before the first phase, `--prefill` notes are published (from 20 addresses 127.0.0.100
//! onwards, by 20 authors) so that broad filters have something to read. The relay's
//! resident memory is sampled when `--pid` is given.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use starling::nostr::{Event, Keys, hex};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    connections::rss,
    fill::Rng,
    load::{Ws, connect_from, percentile},
};

/// Options of `abuse`.
#[derive(clap::Args, serde::Serialize)]
pub struct Args {
    /// WebSocket URL of the relay (on IPv4 loopback).
    #[arg(long)]
    pub url: String,
    /// Process id of the relay, to sample its resident memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Well-behaved clients.
    #[arg(long, default_value_t = 1)]
    pub good: usize,
    /// Seconds each phase (alone, under attack) lasts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Milliseconds between a good client's rounds.
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
    /// Hostile connections per attack.
    #[arg(long, default_value_t = 2)]
    pub hostile: usize,
    /// Attacks to run at once, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Attack::ALL)]
    pub attacks: Vec<Attack>,
    /// Notes published before the first phase, for the broad filters to read.
    #[arg(long, default_value_t = 20_000)]
    pub prefill: u64,
    /// Hostile source addresses 127.0.0.2 to 127.0.0.(K+1) the hostile connections use.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub sources: u8,
    /// Every client, good and hostile, from 127.0.0.1.
    #[arg(long)]
    pub same_address: bool,
}

/// One kind of hostile client.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Broad REQs closed at once, in a loop.
    ReqClose,
    /// Events with bad signatures, as fast as possible.
    Forged,
    /// Pings as fast as possible, never reading.
    Ping,
    /// Events with a 6,000-byte tag value.
    Poison,
    /// New connections, one REQ each.
    Flood,
}

impl Attack {
    /// Every attack.
    const ALL: [Attack; 5] = [
        Attack::ReqClose,
        Attack::Forged,
        Attack::Ping,
        Attack::Poison,
        Attack::Flood,
    ];
}

/// Longest a good client waits for one answer before counting it as lost.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the good clients saw in one phase.
#[derive(Default)]
struct Observed {
    rounds: u64,
    ok_ms: Vec<f64>,
    req_ms: Vec<f64>,
    live_ms: Vec<f64>,
    refused: u64,
    lost: u64,
}

impl Observed {
    fn merge(&mut self, other: Observed) {
        self.rounds += other.rounds;
        self.ok_ms.extend(other.ok_ms);
        self.req_ms.extend(other.req_ms);
        self.live_ms.extend(other.live_ms);
        self.refused += other.refused;
        self.lost += other.lost;
    }
}

/// What a hostile task did.
#[derive(Default)]
struct Hostility {
    connections: AtomicU64,
    refused_connections: AtomicU64,
    closed_by_relay: AtomicU64,
    messages: AtomicU64,
}

/// Runs both phases and prints the good clients' figures for each.
pub async fn run(args: &Args) -> anyhow::Result<Value> {
    let target = crate::connections::loopback_target(&args.url).await?;
    let good_source = Ipv4Addr::LOCALHOST;
    if args.prefill > 0 {
        eprintln!("publishing {} notes first", args.prefill);
        prefill(&args.url, target, args.prefill).await?;
    }
    let (alone, alone_rss) = phase(args, target, good_source).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut hostile = Vec::new();
    let mut stats = Vec::new();
    for (a, &attack) in args.attacks.iter().enumerate() {
        let counts = Arc::new(Hostility::default());
        stats.push((attack, Arc::clone(&counts)));
        for c in 0..args.hostile {
            let n = a * args.hostile + c;
            let source = if args.same_address {
                good_source
            } else {
                Ipv4Addr::new(127, 0, 0, 2 + (n % usize::from(args.sources)) as u8)
            };
            let (url, stop, counts) = (args.url.clone(), Arc::clone(&stop), Arc::clone(&counts));
            hostile.push(tokio::spawn(async move {
                attack_loop(attack, url, target, source, n as u64, stop, counts).await
            }));
        }
    }
    let (attacked, attacked_rss) = phase(args, target, good_source).await?;
    stop.store(true, Ordering::Relaxed);
    for task in hostile {
        task.abort();
    }
    println!(
        "abuse on {}: {} good client(s) every {} ms; {} hostile connection(s) per attack ({})",
        args.url,
        args.good,
        args.interval_ms,
        args.hostile,
        args.attacks
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| phase | rounds | OK p50 ms | OK p99 ms | REQ p50 ms | REQ p99 ms | live p99 ms | refused | lost | relay RSS max MiB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let phases = json!({
        "alone": row("alone", alone, alone_rss),
        "attacked": row("under attack", attacked, attacked_rss),
    });
    println!();
    println!("| attack | connections | refused at upgrade | closed by the relay | messages sent |");
    println!("| --- | --- | --- | --- | --- |");
    let attacks: Vec<Value> = stats
        .iter()
        .map(|(attack, c)| {
            let (opened, refused, closed, sent) = (
                c.connections.load(Ordering::Relaxed),
                c.refused_connections.load(Ordering::Relaxed),
                c.closed_by_relay.load(Ordering::Relaxed),
                c.messages.load(Ordering::Relaxed),
            );
            println!("| {attack:?} | {opened} | {refused} | {closed} | {sent} |");
            json!({"attack": attack, "connections": opened, "refused_connections": refused,
                   "closed_by_relay": closed, "messages": sent})
        })
        .collect();
    crate::report("abuse", args, json!({"phases": phases, "attacks": attacks}))
}

/// Prints a phase's row and returns it as JSON.
fn row(name: &str, mut seen: Observed, rss_max: Option<u64>) -> Value {
    for v in [&mut seen.ok_ms, &mut seen.req_ms, &mut seen.live_ms] {
        v.sort_by(f64::total_cmp);
    }
    let rss = rss_max.map_or("-".to_string(), |b| format!("{:.1}", b as f64 / 1048576.0));
    let (ok50, ok99) = (percentile(&seen.ok_ms, 0.5), percentile(&seen.ok_ms, 0.99));
    let (req50, req99) = (
        percentile(&seen.req_ms, 0.5),
        percentile(&seen.req_ms, 0.99),
    );
    let live99 = percentile(&seen.live_ms, 0.99);
    println!(
        "| {name} | {} | {ok50:.2} | {ok99:.2} | {req50:.2} | {req99:.2} | {live99:.2} | {} | {} | {rss} |",
        seen.rounds, seen.refused, seen.lost
    );
    json!({"rounds": seen.rounds, "ok_p50_ms": ok50, "ok_p99_ms": ok99, "req_p50_ms": req50,
           "req_p99_ms": req99, "live_p99_ms": live99, "refused": seen.refused,
           "lost": seen.lost, "rss_max_bytes": rss_max})
}

/// Runs the good clients for `--seconds`, sampling the relay's memory; what they saw.
async fn phase(
    args: &Args,
    target: SocketAddr,
    source: Ipv4Addr,
) -> anyhow::Result<(Observed, Option<u64>)> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let clients: Vec<_> = (0..args.good)
        .map(|n| {
            let url = args.url.clone();
            let interval = Duration::from_millis(args.interval_ms);
            tokio::spawn(good_client(
                url, target, source, n as u64, interval, deadline,
            ))
        })
        .collect();
    let mut rss_max = None;
    while Instant::now() < deadline {
        if let Some(pid) = args.pid {
            let now = rss(pid)?;
            rss_max = Some(rss_max.map_or(now, |m: u64| m.max(now)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut seen = Observed::default();
    for client in clients {
        seen.merge(client.await??);
    }
    Ok((seen, rss_max))
}

/// A good client's rounds until `deadline`: publish, see it live, read it back.
async fn good_client(
    url: String,
    target: SocketAddr,
    source: Ipv4Addr,
    n: u64,
    interval: Duration,
    deadline: Instant,
) -> anyhow::Result<Observed> {
    let keys = Keys::from_secret(secret(1_000 + n)).ok_or_else(|| anyhow!("bad secret"))?;
    let mut ws = connect_from(&url, target, source).await?;
    let me = hex::encode(&keys.pubkey());
    let live = json!(["REQ", "live", {"authors": [me], "kinds": [1], "limit": 0}]);
    ws.send(Message::text(live.to_string())).await?;
    wait_for(&mut ws, |v| v[0] == "EOSE" && v[1] == "live").await?;
    let mut seen = Observed::default();
    let mut round = 0u64;
    while Instant::now() < deadline {
        let started = Instant::now();
        round += 1;
        let content = format!("good {n} {round} {}", nanos());
        let event = keys.sign(starling::policy::now(), 1, vec![], &content);
        let id = event.id_hex();
        ws.send(Message::text(format!("[\"EVENT\",{}]", event.to_json())))
            .await?;
        let (mut ok, mut delivered) = (None, None);
        while ok.is_none() || (delivered.is_none() && ok == Some(true)) {
            let Some(msg) = next_json(&mut ws).await? else {
                seen.lost += 1;
                break;
            };
            if msg[0] == "OK" && msg[1] == id.as_str() {
                let accepted = msg[2] == true;
                ok = Some(accepted);
                if accepted {
                    seen.ok_ms.push(ms(started));
                } else {
                    seen.refused += 1;
                    eprintln!("a good event was refused: {msg}");
                }
            } else if msg[0] == "EVENT" && msg[1] == "live" && msg[2]["id"] == id.as_str() {
                delivered = Some(ms(started));
            }
        }
        if let Some(at) = delivered {
            seen.live_ms.push(at);
        }
        if ok == Some(true) {
            let asked = Instant::now();
            let req = json!(["REQ", "read", {"ids": [id]}]);
            ws.send(Message::text(req.to_string())).await?;
            let mut found = false;
            loop {
                let Some(msg) = next_json(&mut ws).await? else {
                    seen.lost += 1;
                    break;
                };
                if msg[0] == "EVENT" && msg[1] == "read" {
                    found = true;
                } else if (msg[0] == "EOSE" || msg[0] == "CLOSED") && msg[1] == "read" {
                    if found {
                        seen.req_ms.push(ms(asked));
                    } else {
                        seen.lost += 1;
                    }
                    break;
                }
            }
            ws.send(Message::text(json!(["CLOSE", "read"]).to_string()))
                .await?;
        }
        seen.rounds += 1;
        if let Some(rest) = interval.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    Ok(seen)
}

/// The next JSON message, or `None` if none came within [`ANSWER_TIMEOUT`].
async fn next_json(ws: &mut Ws) -> anyhow::Result<Option<Value>> {
    loop {
        let msg = match tokio::time::timeout(ANSWER_TIMEOUT, ws.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => bail!("the relay closed a good client's connection"),
            Ok(Some(msg)) => msg?,
        };
        if let Message::Text(text) = msg {
            return Ok(Some(serde_json::from_str(&text)?));
        }
    }
}

async fn wait_for(ws: &mut Ws, wanted: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
    loop {
        match next_json(ws).await? {
            Some(msg) if wanted(&msg) => return Ok(()),
            Some(_) => {}
            None => bail!("no answer within {ANSWER_TIMEOUT:?}"),
        }
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Nanoseconds since the Unix epoch, to make every run's events new.
fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A secret key for author number `n` of this mode.
fn secret(n: u64) -> [u8; 32] {
    let mut secret = [7u8; 32];
    secret[..8].copy_from_slice(&n.to_be_bytes());
    secret
}

/// Connections (each from its own address 127.0.0.(100 + n), by its own author) the
/// prefill is spread over, so that no address or author passes a relay's rate limits.
const PREFILL_CONNECTIONS: u64 = 20;

/// Publishes `count` notes with `t` tags and words, over [`PREFILL_CONNECTIONS`].
async fn prefill(url: &str, target: SocketAddr, count: u64) -> anyhow::Result<()> {
    let per_connection = count.div_ceil(PREFILL_CONNECTIONS);
    let tasks: Vec<_> = (0..PREFILL_CONNECTIONS)
        .map(|n| {
            let url = url.to_string();
            let events = per_connection.min(count.saturating_sub(n * per_connection));
            tokio::spawn(async move { prefill_one(&url, target, n, events).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// One prefill connection: `count` notes by author `n` from 127.0.0.(100 + n).
async fn prefill_one(url: &str, target: SocketAddr, n: u64, count: u64) -> anyhow::Result<()> {
    let keys = Keys::from_secret(secret(100 + n)).ok_or_else(|| anyhow!("bad secret"))?;
    let now = starling::policy::now();
    let source = Ipv4Addr::new(127, 0, 0, 100 + n as u8);
    let ws = connect_from(url, target, source).await?;
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..count {
            let topic = (n * count + i) % 20;
            let tags = vec![vec!["t".to_string(), format!("topic{topic}")]];
            let content = format!(
                "prefill note {i} about nostr relays and topic{topic} {}",
                nanos()
            );
            let e = keys.sign(now - 3_600 + i % 3_600, 1, tags, &content);
            sink.send(Message::text(format!("[\"EVENT\",{}]", e.to_json())))
                .await?;
        }
        Ok::<_, anyhow::Error>(sink)
    });
    let (mut answered, mut refused) = (0, 0);
    while answered < count {
        let msg = tokio::time::timeout(ANSWER_TIMEOUT, stream.next())
            .await
            .map_err(|_| anyhow!("prefill: no OK within {ANSWER_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow!("prefill: the relay closed the connection"))??;
        if let Ok(text) = msg.to_text()
            && text.starts_with("[\"OK\"")
        {
            answered += 1;
            refused += u64::from(!text.contains(",true,"));
        }
    }
    drop(sender.await??);
    if refused > 0 {
        eprintln!("prefill: {refused} of {count} notes refused on connection {n}");
    }
    Ok(())
}

/// Runs one hostile connection's attack until `stop`, reconnecting whenever it ends.
async fn attack_loop(
    attack: Attack,
    url: String,
    target: SocketAddr,
    source: Ipv4Addr,
    n: u64,
    stop: Arc<AtomicBool>,
    counts: Arc<Hostility>,
) {
    let mut rng = Rng::new(n + 99);
    let forged = if attack == Attack::Forged {
        forgeries(n, 500)
    } else {
        Vec::new()
    };
    while !stop.load(Ordering::Relaxed) {
        let ws = match connect_from(&url, target, source).await {
            Ok(ws) => ws,
            Err(_) => {
                counts.refused_connections.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        counts.connections.fetch_add(1, Ordering::Relaxed);
        let ended = match attack {
            Attack::ReqClose => req_close(ws, &mut rng, &counts).await,
            Attack::Forged => {
                send_all(ws, |i| forged[i as usize % forged.len()].clone(), &counts).await
            }
            Attack::Ping => pings(ws, &counts).await,
            Attack::Poison => {
                let keys = Keys::from_secret(secret(5_000 + n)).expect("valid secret");
                let poison = |i: u64| {
                    let tags = vec![vec!["x".to_string(), "p".repeat(6_000)]];
                    let content = format!("poison {n} {i} {}", nanos());
                    let e = keys.sign(starling::policy::now(), 1, tags, &content);
                    Message::text(format!("[\"EVENT\",{}]", e.to_json()))
                };
                send_all(ws, poison, &counts).await
            }
            Attack::Flood => flood_once(ws, &counts).await,
        };
        if ended.is_err() {
            counts.closed_by_relay.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `count` events of author `n` with valid ids and signatures of another event.
fn forgeries(n: u64, count: u64) -> Vec<Message> {
    let keys = Keys::from_secret(secret(9_000 + n)).expect("valid secret");
    (0..count)
        .map(|i| {
            let content = format!("forged {n} {i} {}", nanos());
            let mut e: Event = keys.sign(starling::policy::now(), 1, vec![], &content);
            e.sig[0] ^= 0x55;
            Message::text(format!("[\"EVENT\",{}]", e.to_json()))
        })
        .collect()
}

/// Broad REQs, each closed at once; reads and discards everything, so the relay keeps
/// the connection.
async fn req_close(ws: Ws, rng: &mut Rng, counts: &Hostility) -> anyhow::Result<()> {
    let (mut sink, stream) = ws.split();
    let reader = tokio::spawn(stream.for_each(|_| async {}));
    let filters = [
        json!({"kinds": [1], "limit": 5000}),
        json!({"#t": ["topic1", "topic2", "topic3"], "limit": 5000}),
        json!({"search": "nostr relays", "limit": 5000}),
        json!({"since": 0, "limit": 5000}),
    ];
    let mut i = 0u64;
    let result = loop {
        if reader.is_finished() {
            break Err(anyhow!("closed"));
        }
        let sub = format!("x{}", rng.below(1_000_000));
        let req = json!(["REQ", sub, filters[(i % 4) as usize]]);
        let close = json!(["CLOSE", sub]);
        if let Err(e) = sink.send(Message::text(req.to_string())).await {
            break Err(e.into());
        }
        if let Err(e) = sink.send(Message::text(close.to_string())).await {
            break Err(e.into());
        }
        counts.messages.fetch_add(2, Ordering::Relaxed);
        i += 1;
    };
    reader.abort();
    result
}

/// Sends message after message (`message(i)` for i = 0, 1, …) as fast as the socket takes
/// them, reading and discarding the answers, until the relay closes the connection.
async fn send_all(
    ws: Ws,
    mut message: impl FnMut(u64) -> Message,
    counts: &Hostility,
) -> anyhow::Result<()> {
    let (mut sink, stream) = ws.split();
    let reader = tokio::spawn(stream.for_each(|_| async {}));
    let result = async {
        for i in 0u64.. {
            if reader.is_finished() {
                bail!("closed");
            }
            sink.send(message(i)).await?;
            counts.messages.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
    .await;
    reader.abort();
    result
}

/// Pings as fast as the socket takes them, never reading.
async fn pings(ws: Ws, counts: &Hostility) -> anyhow::Result<()> {
    let (mut sink, _stream) = ws.split();
    loop {
        sink.send(Message::Ping(vec![0u8; 16].into())).await?;
        counts.messages.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection of the flood: a REQ, then away.
async fn flood_once(mut ws: Ws, counts: &Hostility) -> anyhow::Result<()> {
    ws.send(Message::text(json!(["REQ", "f", {"limit": 1}]).to_string()))
        .await?;
    counts.messages.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
