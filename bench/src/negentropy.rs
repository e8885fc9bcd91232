//! NIP-77 reconciliation of a large set: the relay holds the events of a `fill` file; this
//! client holds the same set but for `--differ-percent` of it (half left out, half ids the
//! relay lacks), reconciles over `--filter`, and reports the time, the rounds, the bytes
//! sent and received (the frames' text), what each side found, and the relay's memory
//! (from `/proc`, given `--pid`).

use std::{
    io::BufRead,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use negentropy::{Id, Negentropy, NegentropyStorageVector};
use serde_json::{Value, json};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;

use crate::load::connect;

/// Options of `negentropy`.
#[derive(clap::Args, serde::Serialize)]
pub struct Args {
    /// WebSocket URL of the relay.
    #[arg(long)]
    pub relay: String,
    /// The JSON-lines file the relay's store was filled from.
    #[arg(long)]
    pub events: std::path::PathBuf,
    /// How much of the set differs: half left out here, half only here.
    #[arg(long, default_value_t = 1.0)]
    pub differ_percent: f64,
    /// The filter reconciled.
    #[arg(long, default_value = "{}")]
    pub filter: String,
    /// The relay's process id, to read its memory.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// A field of `/proc/PID/status`, in KiB.
fn memory_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub async fn run(args: &Args) -> anyhow::Result<Value> {
    ensure!(
        (0.0..=100.0).contains(&args.differ_percent),
        "--differ-percent is a percentage"
    );
    let file = std::fs::File::open(&args.events)
        .with_context(|| format!("opening {}", args.events.display()))?;
    let every = if args.differ_percent > 0.0 {
        (200.0 / args.differ_percent).round().max(1.0) as u64
    } else {
        u64::MAX
    };
    let (mut storage, mut total, mut left_out, mut extra) =
        (NegentropyStorageVector::new(), 0u64, 0u64, 0u64);
    for line in std::io::BufReader::new(file).lines() {
        let event: Value = serde_json::from_str(&line?)?;
        let (Some(id), Some(at)) = (event["id"].as_str(), event["created_at"].as_u64()) else {
            continue;
        };
        let id: [u8; 32] = starling::nostr::hex::decode(id).context("an event id")?;
        total += 1;
        if total % every == 0 {
            left_out += 1;
            continue;
        }
        storage.insert(at, Id::from_byte_array(id))?;
        if total % every == every / 2 {
            extra += 1;
            let fake: [u8; 32] = sha2::Sha256::digest(id).into();
            storage.insert(at, Id::from_byte_array(fake))?;
        }
    }
    storage.seal()?;
    let mut negentropy = Negentropy::owned(storage, 60_000)?;
    let first = negentropy.initiate()?;
    let mut ws = connect(&args.relay).await?;
    let filter: Value = serde_json::from_str(&args.filter).context("--filter")?;
    let rss_before = memory_kib(args.pid, "VmRSS:");
    let started = Instant::now();
    let open = json!([
        "NEG-OPEN",
        "bench",
        filter,
        starling::nostr::hex::encode(&first)
    ])
    .to_string();
    let (mut sent, mut received, mut rounds) = (open.len() as u64, 0u64, 0u64);
    ws.send(Message::text(open)).await?;
    let (mut have, mut need) = (0u64, 0u64);
    let mut first_answer = None;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(600), ws.next())
            .await
            .context("the relay stopped answering")?
            .context("the relay closed the connection")??;
        let Message::Text(text) = next else { continue };
        let msg: Value = serde_json::from_str(&text)?;
        match msg[0].as_str() {
            Some("NEG-MSG") => {}
            Some("NEG-ERR") => bail!("the relay refused: {msg}"),
            _ => continue,
        }
        first_answer.get_or_insert_with(|| started.elapsed());
        received += text.len() as u64;
        rounds += 1;
        let bytes =
            starling::nostr::hex::decode_vec(msg[2].as_str().unwrap_or_default()).context("hex")?;
        let (mut has, mut needs) = (Vec::new(), Vec::new());
        let reply = negentropy.reconcile_with_ids(&bytes, &mut has, &mut needs)?;
        have += has.len() as u64;
        need += needs.len() as u64;
        match reply {
            Some(reply) => {
                let text =
                    json!(["NEG-MSG", "bench", starling::nostr::hex::encode(&reply)]).to_string();
                sent += text.len() as u64;
                ws.send(Message::text(text)).await?;
            }
            None => break,
        }
    }
    let elapsed = started.elapsed();
    ws.send(Message::text(json!(["NEG-CLOSE", "bench"]).to_string()))
        .await?;
    let (rss_after, peak) = (
        memory_kib(args.pid, "VmRSS:"),
        memory_kib(args.pid, "VmHWM:"),
    );
    let mib = |k: Option<u64>| k.map_or("-".to_string(), |k| format!("{:.0}", k as f64 / 1024.0));
    println!(
        "| events | differ | left out here | only here | rounds | first answer s | total s | sent KiB | received KiB | need | have | relay RSS before → after MiB (peak) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {total} | {}% | {left_out} | {extra} | {rounds} | {:.2} | {:.2} | {:.0} | {:.0} | {need} | {have} | {} → {} ({}) |",
        args.differ_percent,
        first_answer.unwrap_or_default().as_secs_f64(),
        elapsed.as_secs_f64(),
        sent as f64 / 1024.0,
        received as f64 / 1024.0,
        mib(rss_before),
        mib(rss_after),
        mib(peak),
    );
    crate::report::of(
        "negentropy",
        args,
        json!({
            "events": total, "left_out": left_out, "only_here": extra, "rounds": rounds,
            "seconds": elapsed.as_secs_f64(), "bytes_sent": sent, "bytes_received": received,
            "need": need, "have": have,
        }),
    )
}
