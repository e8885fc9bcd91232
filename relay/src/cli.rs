//! The `starling` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

/// Starling: a horizontally scaled Nostr relay.
///
/// With no command, runs the relay (as `starling serve`). Every option can also be set in the
/// TOML file given with --config (key = option name with underscores) or as the environment
/// variable shown; flags override the environment, which overrides the file.
#[derive(Parser, Debug)]
#[command(name = "starling", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, accepted without the word `serve`.
    #[command(flatten)]
    pub serve: NodeArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay (the default).
    Serve(NodeArgs),
    /// Apply pending PostgreSQL migrations (needs DATABASE_URL) and exit.
    Migrate(NodeArgs),
    /// Write every stored event, one JSON object a line, in the order they were stored.
    Export(ExportArgs),
    /// Store events read as JSON lines, checking each as the relay checks what clients send.
    Import(ImportArgs),
    /// Call a relay's NIP-86 management API (`starling admin --relay URL banpubkey <hex>`).
    Admin(AdminArgs),
    /// Reconcile this relay's store with another relay over NIP-77 (negentropy).
    Sync(SyncArgs),
}

/// The settings every command reads.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// TOML file with settings (keys as the long options, with underscores).
    #[arg(long, env = "STARLING_CONFIG")]
    pub config: Option<PathBuf>,
    /// The relay's settings.
    #[command(flatten)]
    pub settings: Config,
}

/// Options of `starling export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// File to write (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Which store to read.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Options of `starling import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// File to read, one event a line ("-": standard input).
    pub input: PathBuf,
    /// Which store to write.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Options of `starling admin`.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The relay's URL (ws://, wss://, http:// or https://).
    #[arg(long, env = "STARLING_RELAY_URL")]
    pub relay: String,
    /// File holding the admin's secret key (64 hex); without it, `STARLING_ADMIN_KEY`.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The method (`supportedmethods` lists them).
    pub method: String,
    /// Its parameters; numbers are sent as numbers.
    pub params: Vec<String>,
}

/// Options of `starling sync`.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The other relay (ws:// or wss://).
    pub url: String,
    /// Which events, as a NIP-01 filter.
    #[arg(long, default_value = "{}")]
    pub filter: String,
    /// Fetch what is missing here (`down`), send what is missing there (`up`), or both.
    #[arg(long, value_enum, default_value = "both")]
    pub direction: crate::transfer::sync::Direction,
    /// With a relay that has no NIP-77: stop (`none`) or page through it with REQ (`req`).
    #[arg(long, value_enum, default_value = "none")]
    pub fallback: crate::transfer::sync::Fallback,
    /// Which store to reconcile.
    #[command(flatten)]
    pub node: NodeArgs,
}
