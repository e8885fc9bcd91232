//! The `starling` binary.

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, Write},
    process::ExitCode,
};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use starling::{
    cli::{AdminArgs, Cli, Command, NodeArgs},
    config::Config,
    manage, server, store,
    telemetry::Telemetry,
    transfer,
};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let sub = matches.subcommand().map_or(&matches, |(_, sub)| sub);
    let (args, command) = match cli.command {
        None => (cli.serve, Task::Serve),
        Some(Command::Serve(args)) => (args, Task::Serve),
        Some(Command::Migrate(args)) => (args, Task::Migrate),
        Some(Command::Export(args)) => (args.node, Task::Export(args.output)),
        Some(Command::Import(args)) => (args.node, Task::Import(args.input)),
        Some(Command::Admin(args)) => return admin(args),
        Some(Command::Sync(args)) => (
            args.node,
            Task::Sync {
                url: args.url,
                filter: args.filter,
                direction: args.direction,
                fallback: args.fallback,
            },
        ),
    };
    let result = config(args, sub).and_then(|config| {
        actix_web::rt::System::new().block_on(async move {
            let telemetry = Telemetry::init(&config)?;
            let result = command.run(config).await;
            telemetry.shutdown();
            result
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("starling: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `starling admin`: one management call, its answer on standard output.
fn admin(args: AdminArgs) -> ExitCode {
    let called = actix_web::rt::System::new().block_on(async {
        let keys = manage::client::admin_keys(args.key_file.as_deref())?;
        let params = manage::client::params(&args.params);
        manage::client::call(&args.relay, &keys, &args.method, params).await
    });
    match called.map(|(status, answer)| manage::client::describe(status, &answer)) {
        Ok(Ok(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Err(refused)) => {
            eprintln!("starling admin: {refused}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("starling admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(args: NodeArgs, matches: &clap::ArgMatches) -> anyhow::Result<Config> {
    Config::resolve(args.settings, matches, args.config.as_deref())
}

/// What the command line asked for, once its settings are resolved.
enum Task {
    Serve,
    Migrate,
    Export(Option<std::path::PathBuf>),
    Import(std::path::PathBuf),
    Sync {
        url: String,
        filter: String,
        direction: transfer::sync::Direction,
        fallback: transfer::sync::Fallback,
    },
}

impl Task {
    async fn run(self, config: Config) -> anyhow::Result<()> {
        match self {
            Task::Serve => server::serve(config).await,
            Task::Migrate => {
                let settings = store::PgSettings::from_config(&config).context(
                    "`starling migrate` needs DATABASE_URL (the embedded store migrates itself)",
                )?;
                let store = store::PgStore::new(&settings)?;
                // The same checks as `serve`: TLS, the login, and a pooler that would lose
                // the sessions the relay's nodes then open on this schema.
                store.probe().await?;
                let applied = store.migrate().await?;
                println!(
                    "applied {} migration(s): {}",
                    applied.len(),
                    applied.join(", ")
                );
                Ok(())
            }
            Task::Export(output) => {
                let store = store::open(&config).await?;
                let mut out: Box<dyn Write> = match &output {
                    Some(path) => Box::new(
                        File::create(path)
                            .with_context(|| format!("creating {}", path.display()))?,
                    ),
                    None => Box::new(io::stdout().lock()),
                };
                let mut out = BufWriter::new(&mut out);
                let count = transfer::export(store, &mut out).await?;
                drop(out);
                eprintln!("exported {count} events");
                Ok(())
            }
            Task::Import(input) => {
                let store = store::open(&config).await?;
                let (mut reader, size): (Box<dyn io::BufRead>, Option<u64>) =
                    if input.as_os_str() == "-" {
                        (Box::new(BufReader::new(io::stdin())), None)
                    } else {
                        let file = File::open(&input)
                            .with_context(|| format!("opening {}", input.display()))?;
                        let size = file.metadata().ok().map(|m| m.len());
                        (Box::new(BufReader::new(file)), size)
                    };
                let source = input.display().to_string();
                let report = transfer::import(
                    store,
                    &config,
                    (&mut reader, &source),
                    size,
                    &mut io::stderr(),
                )
                .await?;
                eprintln!(
                    "imported {} events; {} already stored; {} refused",
                    report.stored, report.duplicates, report.refused
                );
                Ok(())
            }
            Task::Sync {
                url,
                filter,
                direction,
                fallback,
            } => {
                let store = store::open(&config).await?;
                let intake = transfer::Intake::new(&config, &*store).await?;
                let report = transfer::sync::sync(
                    store,
                    &intake,
                    (&url, &filter),
                    (direction, fallback),
                    &mut io::stderr(),
                )
                .await?;
                let s = &report.stored;
                eprintln!(
                    "synced with {url} by {}: {} here and not there, {} there and not here; \
                     fetched {}: stored {}, already stored {}, refused {}; \
                     sent {}: accepted {}, refused {}",
                    report.method,
                    report.have,
                    report.need,
                    report.fetched,
                    s.stored,
                    s.duplicates,
                    s.refused,
                    report.sent,
                    report.accepted,
                    report.rejected
                );
                Ok(())
            }
        }
    }
}
