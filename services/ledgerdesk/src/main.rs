//! The `ledgerdesk` binary: read the configuration, start logging, run one
//! subcommand. Everything else lives in the crates.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ledgerdesk_api::configuration::Settings;
use ledgerdesk_api::{telemetry, Application};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

/// A server allocates and frees small strings and JSON values by the
/// million (rows, events, responses); glibc's allocator spent a fifth of the
/// server's CPU on it under `make bench-http` (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use ledgerdesk_app::SealedStore;
use ledgerdesk_projections::Projector;
use ledgerdesk_store::{
    checkpoint_now, export_bundle, verify_all, verify_bundle, Bundle, CheckpointKey, EventStore,
    OpenOptions, PublicKey,
};

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
    /// Check the whole log: the hash chain, the Merkle tree and every signed
    /// checkpoint; or, with --bundle, an evidence bundle offline.
    Verify {
        /// An evidence bundle to check offline, without any database.
        #[arg(long, value_name = "FILE")]
        bundle: Option<PathBuf>,
        /// The public key to trust (hex or base64); by default the one in the
        /// bundle, or the configured signing key's.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write an evidence bundle: the events of a range, the signed
    /// checkpoint that covers them, the proofs and the public key.
    Export {
        /// First position, or a time (RFC 3339).
        #[arg(long)]
        from: String,
        /// Last position, or a time (RFC 3339).
        #[arg(long)]
        to: String,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a stream's history: every event in order with its time,
    /// actor, label, description and before/after values.
    Replay {
        /// The stream, e.g. `ticket-<uuid>` or `user-<uuid>`; a bare id is
        /// taken as a ticket.
        stream: String,
        /// Stop at this time (RFC 3339): the history as it stood then.
        #[arg(long, conflicts_with = "at_position")]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Stop at this log position.
        #[arg(long)]
        at_position: Option<u64>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the projection workers (without the HTTP API) until stopped.
    Project,
    /// Rebuild, inspect or build projections for an investigation.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Append a realistic helpdesk history (departments, agents, tickets
    /// from many channels worked to closed), to try the system or benchmark it.
    Seed {
        /// About how many events to append.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
    },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Each projection's position, the log head, lag and state.
    Status,
    /// Rebuild one projection from the whole log into shadow tables while
    /// the live one keeps serving, then swap them in atomically.
    Rebuild {
        /// tickets, conversation, audit, presence, reports or people.
        name: String,
    },
    /// Build one projection as it stood at a past moment into a separate
    /// SQLite file, without touching the live database.
    Build {
        /// tickets, conversation, audit, presence, reports or people.
        name: String,
        /// A past time (RFC 3339, e.g. 2026-11-20T09:00:00Z).
        #[arg(
            long,
            conflicts_with = "at_position",
            required_unless_present = "at_position"
        )]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// A past log position.
        #[arg(long)]
        at_position: Option<u64>,
        /// The SQLite file to write (replaced if present).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Verify {
        bundle: Some(path),
        public_key,
    } = &cli.command
    {
        return verify_bundle_offline(path, public_key.as_deref());
    }
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
            let served = app.run_until_stopped().await;
            served.context("server failed")?;
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
        Command::Project => {
            let projector = Projector::new(sealed(open(&settings).await?));
            tracing::info!(projections = ?projector.names(), "projection worker started");
            projector.spawn(shutdown_signal()).await?;
            // What the workers' lag was over this process's life, for
            // whoever runs several processes and has no scrape of them.
            for lag in projector.lags() {
                let at_most = |q| match lag.quantile_bound(q) {
                    Some(d) => format!("<= {} ms", d.as_millis()),
                    None => "-".to_string(),
                };
                tracing::info!(
                    projection = lag.projection,
                    events = lag.total(),
                    p50 = %at_most(0.5),
                    p99 = %at_most(0.99),
                    "projection lag"
                );
            }
            tracing::info!("projection worker stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Projections { command } => projections(&settings, command).await,
        Command::Verify { public_key, .. } => verify(&settings, public_key.as_deref()).await,
        Command::Export { from, to, out } => export(&settings, &from, &to, &out).await,
        Command::Replay {
            stream,
            until,
            at_position,
            json,
        } => replay(&settings, &stream, until, at_position, json).await,
    }
}

async fn replay(
    settings: &Settings,
    stream: &str,
    until: Option<chrono::DateTime<chrono::Utc>>,
    at_position: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let stream = match stream.parse::<uuid::Uuid>() {
        Ok(id) => format!("ticket-{id}"),
        Err(_) => stream.to_string(),
    };
    let helpdesk = ledgerdesk_app::Helpdesk::new(sealed(open(settings).await?));
    let range = ledgerdesk_store::StreamRange {
        until_time: until,
        until_position: at_position,
        ..ledgerdesk_store::StreamRange::all()
    };
    let entries = helpdesk.history(&stream, range).await?;
    if entries.is_empty() {
        eprintln!("ledgerdesk: no events in stream {stream} up to that point");
        return Ok(ExitCode::FAILURE);
    }
    let mut out = std::io::stdout().lock();
    for e in &entries {
        if json {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
            continue;
        }
        let actor = match e.actor_id {
            Some(id) => format!(
                "{} {id}",
                serde_json::to_value(e.actor_kind)?.as_str().unwrap_or("")
            ),
            None => "system".to_string(),
        };
        writeln!(
            out,
            "#{:<8} v{:<4} {}  {:<28} {}",
            e.position,
            e.version,
            e.recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            e.label,
            actor
        )?;
        writeln!(out, "    {}", e.description)?;
        for c in e.changes.as_array().into_iter().flatten() {
            let show = |v: &serde_json::Value| {
                if v.is_null() {
                    "—".to_string()
                } else {
                    v.to_string()
                }
            };
            writeln!(
                out,
                "      {}: {} → {}",
                c["field"].as_str().unwrap_or(""),
                show(&c["before"]),
                show(&c["after"])
            )?;
        }
    }
    if !json {
        writeln!(out, "{} events of {stream}", entries.len())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the checkpoint signing key lives.
fn key_path(settings: &Settings) -> PathBuf {
    PathBuf::from(&settings.audit.signing_key_file)
}

fn trusted_key(explicit: Option<&str>, settings: &Settings) -> anyhow::Result<PublicKey> {
    match explicit {
        Some(k) => PublicKey::parse(k).map_err(|e| anyhow::anyhow!("--public-key: {e}")),
        None => Ok(CheckpointKey::load_or_create(&key_path(settings))?.public_key()),
    }
}

async fn verify(settings: &Settings, public_key: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = open(settings).await?;
    let key = trusted_key(public_key, settings)?;
    let report = verify_all(store.as_ref(), &key).await?;
    if report.ok() {
        println!(
            "OK: {} events verified; head hash {}; Merkle leaves and every signed checkpoint check out",
            report.chain.verified, report.chain.head_hash
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("BROKEN:");
        for finding in report.findings() {
            println!("  {finding}");
        }
        println!(
            "{} events verified before the first break",
            report.chain.verified
        );
        Ok(ExitCode::from(1))
    }
}

/// A position, or the last position at or before a time.
async fn position_arg(store: &dyn EventStore, arg: &str, name: &str) -> anyhow::Result<u64> {
    if let Ok(p) = arg.parse::<u64>() {
        return Ok(p);
    }
    let time = chrono::DateTime::parse_from_rfc3339(arg).map_err(|_| {
        anyhow::anyhow!("--{name} `{arg}` is neither a position nor an RFC 3339 time")
    })?;
    Ok(store.position_at(time.with_timezone(&chrono::Utc)).await?)
}

async fn export(
    settings: &Settings,
    from: &str,
    to: &str,
    out: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let store = open(settings).await?;
    let from = position_arg(store.as_ref(), from, "from").await?.max(1);
    let to = position_arg(store.as_ref(), to, "to").await?;
    let key = CheckpointKey::load_or_create(&key_path(settings))?;
    // Sign a fresh checkpoint so the newest events can be exported too.
    checkpoint_now(store.as_ref(), &key).await?;
    let bundle = export_bundle(store.as_ref(), from, to, &key.public_key()).await?;
    std::fs::write(out, serde_json::to_vec_pretty(&bundle)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "wrote events {from}..={to} with their proofs to {}",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify_bundle_offline(path: &std::path::Path, public_key: Option<&str>) -> ExitCode {
    let run = || -> anyhow::Result<ExitCode> {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let bundle: Bundle = serde_json::from_slice(&text).context("not an evidence bundle")?;
        let key = public_key
            .map(PublicKey::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
        match verify_bundle(&bundle, key.as_ref()) {
            Ok(r) => {
                println!(
                    "OK: events {}..={} ({}) are intact and covered by a valid signed checkpoint",
                    r.from_position, r.to_position, r.events
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("BROKEN: {e}");
                Ok(ExitCode::from(1))
            }
        }
    };
    run().unwrap_or_else(|e| {
        eprintln!("ledgerdesk: {e:#}");
        ExitCode::FAILURE
    })
}

/// The store as readers see it: personal data opened, or `[erased]`.
fn sealed(store: Arc<dyn EventStore>) -> Arc<dyn EventStore> {
    Arc::new(SealedStore::new(store))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn projections(settings: &Settings, command: ProjectionsCommand) -> anyhow::Result<ExitCode> {
    let store = sealed(open(settings).await?);
    let projector = Projector::new(store.clone());
    match command {
        ProjectionsCommand::Status => {
            projector.ensure_schema().await?;
            println!(
                "{:<10} {:>10} {:>10} {:>10} {:>10}  state",
                "name", "position", "head", "lag", "lag s"
            );
            let statuses = projector.status().await?;
            for s in &statuses {
                println!(
                    "{:<10} {:>10} {:>10} {:>10} {:>10.1}  {:?}",
                    s.name, s.position, s.head, s.lag_events, s.lag_seconds, s.state
                );
            }
            // A failed projection says where and why, and exits non-zero so
            // a script or a check notices.
            let mut failed = false;
            for s in &statuses {
                if let Some(f) = &s.failure {
                    failed = true;
                    println!(
                        "\n{} failed at position {}: {}\n  fix the cause; the worker retries every {} s, \
                         or run `ledgerdesk projections rebuild {}`",
                        s.name,
                        f.position,
                        f.error,
                        ledgerdesk_projections::runner::FAILED_RETRY_INTERVAL.as_secs(),
                        s.name
                    );
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        ProjectionsCommand::Rebuild { name } => {
            let bar = ProgressBar::new(store.head().await?.position);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {human_pos}/{human_len} events, {per_sec}, {eta} left",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(format!("rebuilding {name}"));
            let started = std::time::Instant::now();
            let position = projector
                .rebuild(&name, |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .await?;
            bar.finish();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "rebuilt {name} to position {position} in {secs:.1} s ({:.0} events/s)",
                position as f64 / secs.max(1e-9)
            );
        }
        ProjectionsCommand::Build {
            name,
            as_of,
            at_position,
            out,
        } => {
            let until = match (at_position, as_of) {
                (Some(p), _) => p,
                (None, Some(t)) => store.position_at(t).await?,
                (None, None) => anyhow::bail!("give --as-of TIME or --at-position N"),
            };
            let reached = projector.build_as_of(&name, until, &out).await?;
            println!(
                "built {name} as of position {reached} into {}",
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn seed(settings: &Settings, events: u64) -> anyhow::Result<ExitCode> {
    let store = sealed(open(settings).await?);
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
        ..OpenOptions::default()
    };
    ledgerdesk_store::open(&settings.database.url, &options)
        .await
        .with_context(|| format!("cannot open the database at {}", settings.database.url))
}
