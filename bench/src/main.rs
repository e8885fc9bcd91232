//! `starling-bench`: generates realistic Nostr data and measures relays.
//!
//! - `fill`: writes N signed events of a realistic mix as JSON lines, for `starling import`.
//! - `explain`: runs the PostgreSQL store's SQL for the common filter shapes under
//!   `EXPLAIN ANALYZE` and prints each plan with its timing.
//! - `fanout`: live delivery latency from a publisher on one node to subscribers on others.
//! - `ingest`, `query`: events/s and REQ→EOSE/s with latency percentiles.
//! - `connections`: the relay's resident memory per idle connection and per subscription.
//! - `abuse`: well-behaved clients alone and while hostile clients attack the relay.
//! - `bus`: the cluster bus's ceiling, events/s through one Redis from one or more nodes.
//! - `negentropy`: NIP-77 reconciliation of a large set that differs a little.
//!
//! Every mode prints Markdown on stdout; `--json FILE` also writes its results as JSON. On a
//! terminal, a progress line on stderr shows how far a run has got.

mod abuse;
mod bus;
mod connections;
mod explain;
mod fanout;
mod fill;
mod inflating;
mod load;
mod negentropy;
mod progress;
mod report;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Load generator and measurements for Starling.
#[derive(Parser)]
#[command(name = "starling-bench", version)]
struct Cli {
    /// Also write the results as a JSON object (mode, parameters, results) to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate signed events (kinds 1, 0, 3, 7, 30023) as JSON lines.
    Fill(fill::Args),
    /// Show how PostgreSQL runs each common filter shape (EXPLAIN ANALYZE).
    Explain(explain::Args),
    /// Measure live delivery latency: subscribers on some nodes, a publish rate on one.
    Fanout(fanout::Args),
    /// Measure ingest: events/s answered OK true and OK latency.
    Ingest(load::IngestArgs),
    /// Measure queries: REQ to EOSE per second and latency, for the common shapes.
    Query(load::QueryArgs),
    /// Measure the relay's memory per idle connection and per live subscription.
    Connections(connections::Args),
    /// Measure well-behaved clients alone and while hostile clients attack the relay.
    Abuse(abuse::Args),
    /// Measure the cluster bus alone: events/s through one Redis from one or more nodes.
    Bus(bus::Args),
    /// Measure a NIP-77 reconciliation: time, bytes each way, relay memory.
    Negentropy(negentropy::Args),
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.command {
        Command::Fill(args) => fill::run(&args),
        Command::Explain(args) => runtime()?.block_on(explain::run(&args)),
        Command::Fanout(args) => runtime()?.block_on(fanout::run(&args)),
        Command::Ingest(args) => runtime()?.block_on(load::ingest(&args)),
        Command::Query(args) => runtime()?.block_on(load::query(&args)),
        Command::Connections(args) => runtime()?.block_on(connections::run(&args)),
        Command::Abuse(args) => runtime()?.block_on(abuse::run(&args)),
        Command::Bus(args) => runtime()?.block_on(bus::run(&args)),
        Command::Negentropy(args) => runtime()?.block_on(negentropy::run(&args)),
    }?;
    if let Some(path) = cli.json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}
