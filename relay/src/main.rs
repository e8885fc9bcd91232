//! The `starling` binary.

use std::{io::IsTerminal, process::ExitCode};

use clap::{CommandFactory, FromArgMatches};
use starling::{
    cli::{Cli, Command},
    config::Config,
    server,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let (args, arg_matches) = match cli.command {
        Some(Command::Serve(args)) => (
            args,
            matches.subcommand_matches("serve").unwrap_or(&matches),
        ),
        None => (cli.serve, &matches),
    };
    let result = Config::resolve(args.settings, arg_matches, args.config.as_deref())
        .and_then(|config| actix_web::rt::System::new().block_on(server::serve(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("starling: {e:#}");
            ExitCode::FAILURE
        }
    }
}
