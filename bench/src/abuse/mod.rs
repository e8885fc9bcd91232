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
//!
//! On one machine the attack costs the machine as well as the relay: the attackers' own
//! work, and the relay's for them, take cores any process there would need. With
//! `--control-url` (a second relay, same build and settings, that no one attacks) the same
//! good clients also run against it, at the same time in both phases: what they see there
//! under attack is what the machine's load alone costs, and the attacked relay is judged
//! against that.

mod good;
mod hostile;
mod shared;

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{connections::rss, load::percentile};
use good::{Observed, good_client};
pub use hostile::Attack;
use hostile::{Hostility, attack_loop, prefill};

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
    /// Publish the `--prefill` notes and stop (for a database to be analyzed before the
    /// phases, as a relay in service would have its statistics; then run again with
    /// `--prefill 0`).
    #[arg(long)]
    pub prefill_only: bool,
    /// Hostile source addresses 127.0.0.2 to 127.0.0.(K+1) the hostile connections use.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub sources: u8,
    /// Every client, good and hostile, from 127.0.0.1.
    #[arg(long)]
    pub same_address: bool,
    /// CPU priority (nice, 0 to 19) of the hostile clients' threads, which run apart from
    /// the good clients'. On one machine the attackers' own work (signing, framing, a
    /// syscall per message) takes the cores the relay needs; 19 stands for attackers on
    /// machines of their own, 0 makes them compete with the relay.
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub attacker_nice: i32,
    /// WebSocket URL of a second relay that no one attacks, measured alongside (see the
    /// module documentation).
    #[arg(long)]
    pub control_url: Option<String>,
}

/// Where the good clients go: the relay under test, and the control relay if there is one.
struct Targets {
    relay: SocketAddr,
    control: Option<(String, SocketAddr)>,
}

/// Runs both phases and prints the good clients' figures for each.
pub async fn run(args: &Args) -> anyhow::Result<Value> {
    let target = crate::connections::loopback_target(&args.url).await?;
    let control = match &args.control_url {
        Some(url) => Some((url.clone(), crate::connections::loopback_target(url).await?)),
        None => None,
    };
    let good_source = Ipv4Addr::LOCALHOST;
    if args.prefill > 0 {
        eprintln!("publishing {} notes first", args.prefill);
        prefill(&args.url, target, args.prefill).await?;
        if let Some((url, control)) = &control {
            prefill(url, *control, args.prefill).await?;
        }
    }
    if args.prefill_only {
        return crate::report::of("abuse", args, json!({"prefilled": args.prefill}));
    }
    let targets = Targets {
        relay: target,
        control,
    };
    let (alone, alone_control, alone_rss) = phase(args, &targets, good_source).await?;
    let attackers = hostile::runtime(args.attacker_nice)?;
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
            hostile.push(attackers.spawn(async move {
                attack_loop(attack, url, target, source, n as u64, stop, counts).await
            }));
        }
    }
    let (attacked, attacked_control, attacked_rss) = phase(args, &targets, good_source).await?;
    stop.store(true, Ordering::Relaxed);
    for task in hostile {
        task.abort();
    }
    attackers.shutdown_background();
    println!(
        "abuse on {}: {} good client(s) every {} ms; {} hostile connection(s) per attack ({}), at nice {}",
        args.url,
        args.good,
        args.interval_ms,
        args.hostile,
        args.attacks
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        args.attacker_nice
    );
    println!(
        "| phase | rounds | OK p50 ms | OK p99 ms | REQ p50 ms | REQ p99 ms | live p99 ms | refused | lost | relay RSS max MiB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut phases = json!({
        "alone": row("alone", alone, alone_rss),
        "attacked": row("under attack", attacked, attacked_rss),
    });
    if let (Some(alone), Some(attacked)) = (alone_control, attacked_control) {
        phases["control_alone"] = row("control relay, first phase", alone, None);
        phases["control_attacked"] = row("control relay, during the attack", attacked, None);
    }
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
    crate::report::of("abuse", args, json!({"phases": phases, "attacks": attacks}))
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

/// Runs the good clients for `--seconds` (against the control relay too, if there is one),
/// sampling the relay's memory; what they saw at each.
async fn phase(
    args: &Args,
    targets: &Targets,
    source: Ipv4Addr,
) -> anyhow::Result<(Observed, Option<Observed>, Option<u64>)> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let interval = Duration::from_millis(args.interval_ms);
    let clients = |url: &str, target: SocketAddr| -> Vec<_> {
        (0..args.good)
            .map(|n| {
                let client = good_client(
                    url.to_string(),
                    target,
                    source,
                    n as u64,
                    interval,
                    deadline,
                );
                tokio::spawn(client)
            })
            .collect()
    };
    let relay = clients(&args.url, targets.relay);
    let control = targets
        .control
        .as_ref()
        .map(|(url, target)| clients(url, *target));
    let mut rss_max = None;
    while Instant::now() < deadline {
        if let Some(pid) = args.pid {
            let now = rss(pid)?;
            rss_max = Some(rss_max.map_or(now, |m: u64| m.max(now)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seen = gather(relay).await?;
    let control = match control {
        Some(tasks) => Some(gather(tasks).await?),
        None => None,
    };
    Ok((seen, control, rss_max))
}

/// What a set of good clients saw, together.
async fn gather(
    clients: Vec<tokio::task::JoinHandle<anyhow::Result<Observed>>>,
) -> anyhow::Result<Observed> {
    let mut seen = Observed::default();
    for client in clients {
        seen.merge(client.await??);
    }
    Ok(seen)
}
