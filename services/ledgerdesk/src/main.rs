//! The `ledgerdesk` binary: read the configuration, start logging, run one
//! subcommand. Everything else lives in the crates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ledgerdesk_api::configuration::Settings;
use ledgerdesk_api::{telemetry, Application};
use ledgerdesk_store::OpenOptions;

#[derive(Parser)]
#[command(
    name = "ledgerdesk",
    version,
    about = "An event-sourced helpdesk backend with a verifiable audit log"
)]
struct Cli {
    /// Configuration file (default: ./ledgerdesk.toml when present).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations and serve the HTTP API.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Walk the whole log and check its hash chain.
    Verify,
    /// Append a realistic helpdesk history (departments, agents, tickets
    /// from many channels worked to closed), to try the system or benchmark it.
    Seed {
        /// About how many events to append.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ledgerdesk: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log.format, &settings.log.level, std::io::stderr);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ledgerdesk: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ledgerdesk: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => {
            let app = Application::build(&settings).await?;
            tracing::info!(
                address = %format!("http://{}:{}", settings.bind_addr()?.ip(), app.port()),
                backend = %app.store().backend(),
                "ledgerdesk is listening"
            );
            app.run_until_stopped().await.context("server failed")?;
            tracing::info!("ledgerdesk stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = open(&settings).await?;
            let head = store.head().await?;
            println!(
                "migrations applied ({} backend, {} events in the log)",
                store.backend(),
                head.position
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Seed { events } => seed(&settings, events).await,
        Command::Verify => {
            let store = open(&settings).await?;
            let report = ledgerdesk_store::verify_chain(store.as_ref()).await?;
            match &report.first_break {
                None => {
                    println!(
                        "OK: {} events verified; head hash {}",
                        report.verified, report.head_hash
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some(b) => {
                    println!("BROKEN: {b}");
                    println!("{} events verified before it", report.verified);
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

async fn seed(settings: &Settings, events: u64) -> anyhow::Result<ExitCode> {
    let store = open(settings).await?;
    let started = std::time::Instant::now();
    let step = (events / 10).max(1);
    let mut next_report = step;
    let report = ledgerdesk_app::seed::seed(store.as_ref(), events, |done| {
        if done >= next_report {
            eprintln!("  {done} events appended");
            next_report = done + step;
        }
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {} events ({} tickets, {} agents) in {secs:.1} s ({:.0} events/s)",
        report.events,
        report.tickets,
        report.agents,
        report.events as f64 / secs
    );
    Ok(ExitCode::SUCCESS)
}

/// Every command migrates first: a new database then behaves as an empty one.
async fn open(
    settings: &Settings,
) -> anyhow::Result<std::sync::Arc<dyn ledgerdesk_store::EventStore>> {
    let options = OpenOptions {
        migrate: true,
        max_connections: settings.database.max_connections,
    };
    ledgerdesk_store::open(&settings.database.url, &options)
        .await
        .with_context(|| format!("cannot open the database at {}", settings.database.url))
}
