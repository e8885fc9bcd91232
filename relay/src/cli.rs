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
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay (the default).
    Serve(ServeArgs),
}

/// Options of `starling serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML file with settings (keys as the long options, with underscores).
    #[arg(long, env = "STARLING_CONFIG")]
    pub config: Option<PathBuf>,
    /// The relay's settings.
    #[command(flatten)]
    pub settings: Config,
}
