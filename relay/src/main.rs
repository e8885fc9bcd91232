//! The `starling` binary.

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, IsTerminal, Write},
    process::ExitCode,
};

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use starling::{
    cli::{Cli, Command, NodeArgs},
    config::Config,
    server, store, transfer,
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
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    let sub = matches.subcommand().map_or(&matches, |(_, sub)| sub);
    match actix_web::rt::System::new().block_on(run(cli, sub)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("starling: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(args: NodeArgs, matches: &ArgMatches) -> anyhow::Result<Config> {
    Config::resolve(args.settings, matches, args.config.as_deref())
}

async fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        None => server::serve(config(cli.serve, matches)?).await,
        Some(Command::Serve(args)) => server::serve(config(args, matches)?).await,
        Some(Command::Migrate(args)) => {
            let config = config(args, matches)?;
            let settings = config.postgres().context(
                "`starling migrate` needs DATABASE_URL (the embedded store migrates itself)",
            )?;
            let applied = store::PgStore::new(&settings)?.migrate().await?;
            println!(
                "applied {} migration(s): {}",
                applied.len(),
                applied.join(", ")
            );
            Ok(())
        }
        Some(Command::Export(args)) => {
            let store = store::open(&config(args.node, matches)?).await?;
            let mut out: Box<dyn Write> = match &args.output {
                Some(path) => Box::new(
                    File::create(path).with_context(|| format!("creating {}", path.display()))?,
                ),
                None => Box::new(io::stdout().lock()),
            };
            let mut out = BufWriter::new(&mut out);
            let count = transfer::export(store, &mut out).await?;
            drop(out);
            eprintln!("exported {count} events");
            Ok(())
        }
        Some(Command::Import(args)) => {
            let config = config(args.node, matches)?;
            let store = store::open(&config).await?;
            let (mut input, size): (Box<dyn io::BufRead>, Option<u64>) =
                if args.input.as_os_str() == "-" {
                    (Box::new(BufReader::new(io::stdin())), None)
                } else {
                    let file = File::open(&args.input)
                        .with_context(|| format!("opening {}", args.input.display()))?;
                    let size = file.metadata().ok().map(|m| m.len());
                    (Box::new(BufReader::new(file)), size)
                };
            let report =
                transfer::import(store, &config, &mut input, size, &mut io::stderr()).await?;
            eprintln!(
                "imported {} events; {} already stored; {} refused",
                report.stored, report.duplicates, report.refused
            );
            Ok(())
        }
    }
}
