//! The hostile clients, one function per attack, and the prefill that gives broad filters
//! something to read.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use starling::nostr::{Event, Keys};
use tokio_tungstenite::tungstenite::Message;

use super::shared::{ANSWER_TIMEOUT, nanos, secret};
use crate::{
    fill::Rng,
    load::{Ws, connect_from},
};

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
    pub(super) const ALL: [Attack; 5] = [
        Attack::ReqClose,
        Attack::Forged,
        Attack::Ping,
        Attack::Poison,
        Attack::Flood,
    ];
}

/// What a hostile task did.
#[derive(Default)]
pub(super) struct Hostility {
    pub(super) connections: AtomicU64,
    pub(super) refused_connections: AtomicU64,
    pub(super) closed_by_relay: AtomicU64,
    pub(super) messages: AtomicU64,
}

/// Connections (each from its own address 127.0.0.(100 + n), by its own author) the
/// prefill is spread over, so that no address or author passes a relay's rate limits.
const PREFILL_CONNECTIONS: u64 = 20;

/// Worker threads of the hostile clients' runtime.
const HOSTILE_THREADS: usize = 2;

/// A runtime of its own for the hostile clients, so that their tasks never delay a good
/// client's, with its threads at CPU priority `nice`.
pub(super) fn runtime(nice: i32) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(HOSTILE_THREADS)
        .thread_name("hostile")
        .enable_all()
        .on_thread_start(move || lower_priority(nice))
        .build()
}

/// Sets the calling thread's nice value (on Linux each thread has its own).
fn lower_priority(nice: i32) {
    // SAFETY: gettid and setpriority only read their arguments; a failure leaves the
    // thread at its priority, which only makes the attack stronger.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, nice);
    }
}

/// Publishes `count` notes with `t` tags and words, over [`PREFILL_CONNECTIONS`].
pub(super) async fn prefill(url: &str, target: SocketAddr, count: u64) -> anyhow::Result<()> {
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
pub(super) async fn attack_loop(
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
