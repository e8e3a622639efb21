//! The `herald` binary: parse flags, load config, start logging, run the command, and map
//! the result to an exit code.

use std::process::ExitCode;

use clap::Parser;
use herald::app::Herald;
use herald::cli::{
    Cli, Command, DeadCommand, EXIT_CONFIG, EXIT_FAILURE, EXIT_USAGE, PublishArgs, StatusArgs,
    SuppressionCommand,
};
use herald::config::Settings;
use herald::dead_letters::{self, ReplayFilter};
use herald::ledger::{self, Ledger};
use herald::shutdown::{Shutdown, termination_signal};
use herald::{publish, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("herald: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(message) = telemetry::init(&settings.log) {
        eprintln!("herald: {message}");
        return ExitCode::from(EXIT_CONFIG);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("herald: failed to start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(execute(cli.command, settings))
}

async fn execute(command: Command, settings: Settings) -> ExitCode {
    match command {
        Command::Run => run(settings).await,
        Command::CheckConfig => {
            if let Err(error) = check_credentials(&settings) {
                eprintln!("herald: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
            print!("{}", settings.to_redacted_toml());
            eprintln!("herald: configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Publish(args) => publish_jobs(args, settings).await,
        Command::Sandbox(args) => sandbox(args).await,
        Command::Migrate => migrate_ledger(settings).await,
        Command::Status(args) => ledger_status(args, settings).await,
        Command::Dead(command) => dead(command, settings).await,
        Command::Suppression(command) => suppression(command, settings).await,
    }
}

async fn suppression(command: SuppressionCommand, settings: Settings) -> ExitCode {
    let ledger = match open_ledger(&settings).await {
        Ok(ledger) => ledger,
        Err(code) => return code,
    };
    let code = match command {
        SuppressionCommand::List(args) => match ledger.suppressions(args.channel, args.limit).await
        {
            Ok(rows) => {
                print!("{}", ledger::render_suppressions(&rows));
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
        SuppressionCommand::Remove(args) => {
            match herald::suppression::lift(&ledger, args.channel, &args.recipient).await {
                Ok(true) => {
                    println!("removed the {} suppression of the recipient", args.channel);
                    ExitCode::SUCCESS
                }
                Ok(false) => fail(&format!(
                    "no {} suppression of that recipient; nothing removed",
                    args.channel
                )),
                Err(error) => {
                    eprintln!("herald: {error}");
                    ExitCode::from(lift_exit_code(&error))
                }
            }
        }
    };
    ledger.close().await;
    code
}

/// Maps a failed `suppression remove` to an exit code: 2 for a recipient that is not valid
/// for the channel, as for any invalid argument, and 78 for a missing hash key.
fn lift_exit_code(error: &herald::suppression::LiftError) -> u8 {
    use herald::ledger::LedgerError;
    use herald::suppression::LiftError;
    match error {
        LiftError::InvalidRecipient(_) => EXIT_USAGE,
        LiftError::Ledger(LedgerError::Config(_)) => EXIT_CONFIG,
        LiftError::Ledger(_) => EXIT_FAILURE,
    }
}

async fn dead(command: DeadCommand, settings: Settings) -> ExitCode {
    let broker = &settings.broker;
    match command {
        DeadCommand::List => match dead_letters::summarize(broker).await {
            Ok(counts) => {
                println!(
                    "{:<16} {:<8} {:<12} {:<16} {:>8}",
                    "REASON", "CHANNEL", "PROVIDER", "ERROR CODE", "COUNT"
                );
                for (kind, count) in &counts {
                    println!(
                        "{:<16} {:<8} {:<12} {:<16} {count:>8}",
                        kind.reason, kind.channel, kind.provider, kind.error_code
                    );
                }
                println!(
                    "{} messages in {}",
                    counts.values().sum::<u64>(),
                    broker.dead_letter_queue
                );
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
        DeadCommand::Replay(args) => {
            let filter = ReplayFilter {
                reasons: args.reasons,
                job_id: args.job_id,
                limit: args.limit,
                rate: args.rate,
            };
            let ledger = match open_ledger(&settings).await {
                Ok(ledger) => ledger,
                Err(code) => return code,
            };
            match dead_letters::replay(broker, &ledger, &filter).await {
                Ok(count) => {
                    println!("replayed {count} messages to exchange {}", broker.exchange);
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error),
            }
        }
    }
}

async fn sandbox(args: herald::sandbox::SandboxArgs) -> ExitCode {
    let sandbox = match herald::sandbox::Sandbox::bind(args).await {
        Ok(sandbox) => sandbox,
        Err(error) => return fail(&format!("failed to start the sandbox: {error}")),
    };
    println!("sandbox listening on http://{}", sandbox.local_addr());
    match sandbox.serve(termination_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&format!("sandbox failed: {error}")),
    }
}

/// Loads every secret and builds every provider adapter, as `herald run` does at start, so
/// a key file that exists but does not hold a usable key is reported too.
fn check_credentials(settings: &Settings) -> Result<(), herald::config::ConfigError> {
    settings.check_secrets()?;
    let client = herald::providers::http::build_client(&settings.http).map_err(|error| {
        herald::config::ConfigError::invalid(
            "http",
            format!("failed to build the HTTP client: {error}"),
        )
    })?;
    let metrics = std::sync::Arc::new(herald::metrics::Metrics::new());
    herald::routes::Routes::build(settings, &client, &metrics).map(drop)
}

async fn run(settings: Settings) -> ExitCode {
    // SIGHUP reloads secrets once the providers are built. Listening from the start keeps a
    // SIGHUP that arrives while Herald starts from ending the process, its default action.
    let _early_hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let shutdown = Shutdown::new();
    shutdown.stop_on(termination_signal());
    match Herald::start(settings, shutdown).await {
        Ok(herald) => {
            herald.wait().await;
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(error.message = %error, "failed to start");
            match error {
                herald::app::StartError::Config(_) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::from(EXIT_FAILURE),
            }
        }
    }
}

async fn publish_jobs(args: PublishArgs, settings: Settings) -> ExitCode {
    let bodies = match &args.file {
        Some(path) if args.raw => match publish::read_raw(path) {
            Ok(body) => vec![body],
            Err(error) => return fail(&error),
        },
        Some(path) => match publish::read_bodies(path) {
            Ok(bodies) => bodies,
            Err(error) => return fail(&error),
        },
        None => publish::example_bodies(args.count, &args.channels),
    };
    let checked = match args.no_validate || args.raw {
        true => Ok(()),
        false => publish::check_bodies(&bodies, &settings.broker),
    };
    if let Err(error) = checked {
        return fail(&error);
    }
    let delay_tiers = settings.retry.delay_tiers();
    match publish::publish_bodies(&settings.broker, &delay_tiers, &bodies).await {
        Ok(count) => {
            let noun = if count == 1 { "job" } else { "jobs" };
            println!(
                "published {count} {noun} to exchange {} with routing key {}",
                settings.broker.exchange, settings.broker.routing_key
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("herald: {error}");
    ExitCode::from(EXIT_FAILURE)
}

async fn migrate_ledger(settings: Settings) -> ExitCode {
    let ledger = match open_ledger(&settings).await {
        Ok(ledger) => ledger,
        Err(code) => return code,
    };
    let url = settings.ledger.masked_url();
    let result = ledger.migrate().await;
    ledger.close().await;
    match result {
        Ok(applied) if applied.is_empty() => {
            println!("ledger schema at {url} is current; no migrations applied");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            for migration in &applied {
                println!(
                    "applied migration {}: {}",
                    migration.version, migration.description
                );
            }
            println!("ledger schema at {url} is current");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

async fn ledger_status(args: StatusArgs, settings: Settings) -> ExitCode {
    let ledger = match open_ledger(&settings).await {
        Ok(ledger) => ledger,
        Err(code) => return code,
    };
    let result = ledger.status(&args.job_id).await;
    ledger.close().await;
    match result {
        Ok(rows) if rows.is_empty() => fail(&format!(
            "the ledger has no rows for job {}; it was never claimed",
            args.job_id
        )),
        Ok(rows) => {
            print!("{}", ledger::render_table(&rows));
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

/// Builds the ledger handle, mapping a bad URL or hash key to the configuration exit code.
async fn open_ledger(settings: &Settings) -> Result<Ledger, ExitCode> {
    Ledger::connect(&settings.ledger).await.map_err(|error| {
        eprintln!("herald: {error}");
        ExitCode::from(EXIT_CONFIG)
    })
}
