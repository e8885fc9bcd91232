//! Idle connections and live subscriptions: how much resident memory the relay holds for
//! each, read from `/proc/PID/status` (VmRSS) once it has settled.
//!
//! Connections come from several loopback source addresses (127.0.0.1 to 127.0.0.K), so
//! more than one address's ~28,000 ephemeral ports can be used.
//!
//! Run it against a freshly started relay: its allocator keeps the memory of connections
//! that have closed and reuses it, so a second run on the same process shows almost none.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, anyhow, bail, ensure};
use futures_util::StreamExt;
use serde_json::{Value, json};
use starling::nostr::hex;
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::{Semaphore, mpsc, watch},
    time::Instant,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::protocol::WebSocketConfig};

use crate::{fill::Rng, progress::Progress};

/// Options of `connections`.
#[derive(clap::Args, serde::Serialize)]
pub struct Args {
    /// WebSocket URL of the relay (on IPv4 loopback).
    #[arg(long)]
    pub url: String,
    /// Idle connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Live subscriptions opened on each connection once all connections are open.
    #[arg(long, default_value_t = 1)]
    pub subscriptions_per_connection: usize,
    /// Process id of the relay; its resident memory is read from /proc/PID/status.
    #[arg(long)]
    pub pid: u32,
    /// Source addresses 127.0.0.1 to 127.0.0.K that connections are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub sources: u8,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
    /// Connections offer permessage-deflate (and check the relay agreed), to measure what a
    /// compressing connection holds; what they read here is short and never compressed.
    #[arg(long)]
    pub compression: bool,
}

/// Handshakes in progress at once.
const HANDSHAKES: usize = 64;
/// File descriptors kept for the bench itself, besides its connections.
const SPARE_FDS: u64 = 100;
/// Longest wait for the relay's resident memory to settle.
const SETTLE: Duration = Duration::from_secs(30);

/// A client connection; small buffers, since thousands of them sit idle.
type Ws = WebSocketStream<TcpStream>;

/// How far the run has got; every connection task follows it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Idle,
    Subscribe,
    Close,
}

/// A connection task's news: a step done, or why it failed.
type Report = Result<(), String>;

/// The relay's resident memory (bytes) at each step of a run.
struct Readings {
    before: u64,
    connected: u64,
    subscribed: u64,
    closed: u64,
    open_seconds: f64,
}

/// Opens the connections, then the subscriptions, and reports the relay's memory for each.
pub async fn run(args: &Args) -> anyhow::Result<Value> {
    let limit = raise_fd_limit()?;
    ensure!(
        args.connections as u64 + SPARE_FDS <= limit,
        "{} connections need {} file descriptors, but this process may open at most {limit} \
         (its hard RLIMIT_NOFILE); lower --connections or raise the hard limit",
        args.connections,
        args.connections as u64 + SPARE_FDS
    );
    let target = loopback_target(&args.url).await?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let before = settle(args.pid, deadline).await?;
    let (phase, phase_rx) = watch::channel(Phase::Idle);
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let started = Instant::now();
    let tasks = spawn_all(args, target, phase_rx, reports_tx);
    await_reports(&mut reports, args.connections, deadline, "opened").await?;
    let open_seconds = started.elapsed().as_secs_f64();
    let connected = settle(args.pid, deadline).await?;
    phase.send(Phase::Subscribe)?;
    await_reports(&mut reports, args.connections, deadline, "subscribed").await?;
    let subscribed = settle(args.pid, deadline).await?;
    phase.send(Phase::Close)?;
    tokio::time::timeout_at(deadline, futures_util::future::join_all(tasks))
        .await
        .map_err(|_| anyhow!("the connections did not close within --seconds"))?;
    let closed = settle(args.pid, deadline).await?;
    let readings = Readings {
        before,
        connected,
        subscribed,
        closed,
        open_seconds,
    };
    crate::report::of("connections", args, table(args, &readings))
}

/// Prints the readings and the memory per connection and per subscription; returns them.
fn table(args: &Args, r: &Readings) -> Value {
    let subscriptions = args.connections * args.subscriptions_per_connection;
    let per = |after: u64, before: u64, n: usize| (after as f64 - before as f64) / n.max(1) as f64;
    let per_connection = per(r.connected, r.before, args.connections);
    let per_subscription = per(r.subscribed, r.connected, subscriptions);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "connections on {} (relay pid {}): {} source addresses, opened in {:.1} s",
        args.url, args.pid, args.sources, r.open_seconds
    );
    println!(
        "| connections | subscriptions | RSS before MiB | RSS connected MiB | RSS subscribed MiB | RSS closed MiB | bytes/connection | bytes/subscription |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {subscriptions} | {:.1} | {:.1} | {:.1} | {:.1} | {per_connection:.0} | {per_subscription:.0} |",
        args.connections,
        mib(r.before),
        mib(r.connected),
        mib(r.subscribed),
        mib(r.closed),
    );
    json!({
        "connections": args.connections,
        "subscriptions": subscriptions,
        "open_seconds": r.open_seconds,
        "rss_before_bytes": r.before,
        "rss_connected_bytes": r.connected,
        "rss_subscribed_bytes": r.subscribed,
        "rss_closed_bytes": r.closed,
        "bytes_per_connection": per_connection,
        "bytes_per_subscription": per_subscription,
    })
}

/// Raises this process's soft limit on open files to its hard limit, and returns it.
fn raise_fd_limit() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(limit.rlim_max)
}

/// The relay's address, which must be on IPv4 loopback (the source addresses are).
pub async fn loopback_target(url: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(crate::load::address(url)?)
        .await?
        .find(|a| a.is_ipv4() && a.ip().is_loopback())
        .ok_or_else(|| anyhow!("{url}: the relay must listen on IPv4 loopback (127.0.0.0/8)"))
}

/// Resident memory of process `pid`, in bytes (VmRSS of /proc/PID/status).
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path}: is the relay (--pid) running?"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS in {path}"))?;
    Ok(kib * 1024)
}

/// The relay's resident memory once two readings a second apart differ by less than 1 %
/// (or the last reading, when it is still changing after `SETTLE` or at the deadline).
async fn settle(pid: u32, deadline: Instant) -> anyhow::Result<u64> {
    let until = deadline.min(Instant::now() + SETTLE);
    let mut last = rss(pid)?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss(pid)?;
        if now.abs_diff(last) * 100 < last {
            return Ok(now);
        }
        if Instant::now() >= until {
            eprintln!("the relay's memory is still changing; using the last reading");
            return Ok(now);
        }
        last = now;
    }
}

/// Starts one task per connection, each from source address `127.0.0.(1 + i % K)`.
fn spawn_all(
    args: &Args,
    target: SocketAddr,
    phase: watch::Receiver<Phase>,
    reports: mpsc::UnboundedSender<Report>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (0..args.connections)
        .map(|i| {
            let source = Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(args.sources)) as u8);
            let connection = Connection {
                url: args.url.clone(),
                source: IpAddr::V4(source),
                target,
                subscriptions: args.subscriptions_per_connection,
                compression: args.compression,
                rng: Rng::new(seed.wrapping_add(i as u64)),
            };
            let (handshakes, phase, reports) =
                (Arc::clone(&handshakes), phase.clone(), reports.clone());
            tokio::spawn(async move {
                let outcome = connection.hold(&handshakes, phase, &reports).await;
                if let Err(e) = outcome {
                    // The run is over if nobody listens any more.
                    reports.send(Err(format!("connection {i}: {e:#}"))).ok();
                }
            })
        })
        .collect()
}

/// Waits for `want` reports of success; fails on the first failure or at the deadline.
async fn await_reports(
    reports: &mut mpsc::UnboundedReceiver<Report>,
    want: usize,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<()> {
    let progress = Progress::start(format!("connections {what}"), Some(want as u64));
    for got in 0..want {
        let report = tokio::time::timeout_at(deadline, reports.recv())
            .await
            .map_err(|_| anyhow!("{got} of {want} connections {what} within --seconds"))?
            .ok_or_else(|| anyhow!("every connection task has ended"))?;
        if let Err(e) = report {
            bail!("{got} of {want} connections {what}, then {e}");
        }
        progress.add(1);
    }
    Ok(())
}

/// One client connection and what it subscribes to.
struct Connection {
    url: String,
    source: IpAddr,
    target: SocketAddr,
    subscriptions: usize,
    compression: bool,
    rng: Rng,
}

impl Connection {
    /// Connects, subscribes when told to, and closes when told to; reads all along, so the
    /// relay's pings are answered.
    async fn hold(
        mut self,
        handshakes: &Semaphore,
        mut phase: watch::Receiver<Phase>,
        reports: &mpsc::UnboundedSender<Report>,
    ) -> anyhow::Result<()> {
        let mut ws = {
            let _permit = handshakes.acquire().await?;
            self.open().await?
        };
        reports.send(Ok(()))?;
        drain_until(&mut ws, &mut phase, Phase::Subscribe).await?;
        {
            // A bounded number of connections subscribe at once, as clients arriving over
            // time do: the figure is then what a live subscription holds, not the peak of
            // every connection's stored query in flight at the same moment.
            let _permit = handshakes.acquire().await?;
            self.subscribe(&mut ws).await?;
        }
        reports.send(Ok(()))?;
        drain_until(&mut ws, &mut phase, Phase::Close).await?;
        // Closing is a courtesy: the socket is released either way.
        ws.close(None).await.ok();
        Ok(())
    }

    /// Connects from this connection's source address, with TCP_NODELAY.
    async fn open(&self) -> anyhow::Result<Ws> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.source, 0))?;
        let stream = socket.connect(self.target).await?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let request = crate::inflating::request(&self.url, self.compression)?;
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
        crate::inflating::ensure_agreed(&self.url, &response, self.compression)?;
        Ok(ws)
    }

    /// Opens live subscriptions for random authors (so nothing stored matches) and waits
    /// for the EOSE of each.
    async fn subscribe(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        let filters: Vec<Value> = (0..self.subscriptions)
            .map(|_| {
                let author: Vec<u8> = (0..4).flat_map(|_| self.rng.next().to_le_bytes()).collect();
                json!({"authors": [hex::encode(&author)], "kinds": [1]})
            })
            .collect();
        crate::load::open_subscriptions(ws, &filters).await
    }
}

/// Reads (answering pings) until the run reaches `target`.
async fn drain_until(
    ws: &mut Ws,
    phase: &mut watch::Receiver<Phase>,
    target: Phase,
) -> anyhow::Result<()> {
    let reached = async { phase.wait_for(|p| *p >= target).await.map(|_| ()) };
    tokio::pin!(reached);
    loop {
        tokio::select! {
            outcome = &mut reached => return Ok(outcome?),
            msg = ws.next() => match msg {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("the relay closed the connection"),
            },
        }
    }
}
