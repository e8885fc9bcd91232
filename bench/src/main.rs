//! `starling-bench`: generates realistic Nostr data and measures relays.
//!
//! - `fill`: writes N signed events of a realistic mix as JSON lines, for `starling import`.
//! - `explain`: runs the PostgreSQL store's SQL for the common filter shapes under
//!   `EXPLAIN ANALYZE` and prints each plan with its timing.

mod explain;
mod fill;

use clap::{Parser, Subcommand};

/// Load generator and measurements for Starling.
#[derive(Parser)]
#[command(name = "starling-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate signed events (kinds 1, 0, 3, 7, 30023) as JSON lines.
    Fill(fill::Args),
    /// Show how PostgreSQL runs each common filter shape (EXPLAIN ANALYZE).
    Explain(explain::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Fill(args) => fill::run(&args),
        Command::Explain(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(explain::run(&args)),
    }
}
