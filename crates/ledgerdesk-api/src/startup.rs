//! Building and running the server: `Application::build(settings)` opens the
//! store (applying migrations) and binds; `run_until_stopped` serves until
//! SIGINT/SIGTERM, then lets requests in flight finish.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{middleware::from_fn, web, App, HttpServer};
use ledgerdesk_app::Helpdesk;
use ledgerdesk_app::SealedStore;
use ledgerdesk_projections::Projector;
use ledgerdesk_store::{CheckpointKey, Checkpointer, EventStore, OpenOptions};

use crate::auth::{LoginLimiter, Passwords, Verifier};
use crate::configuration::Settings;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::{bootstrap, extract, middleware, routes};

/// Idempotency records are kept this long (seconds), then purged.
pub const IDEMPOTENCY_RETENTION_SECS: i64 = 24 * 3600;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened or migrated.
    #[error("cannot open the database: {0}")]
    Store(#[from] ledgerdesk_store::StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A bad setting.
    #[error(transparent)]
    Config(#[from] crate::configuration::ConfigError),
    /// The projections' schema or the signing key could not be prepared.
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    /// The first users could not be created.
    #[error("bootstrap failed: {0}")]
    FirstUsers(#[from] crate::bootstrap::BootstrapError),
}

/// A built, bound server.
pub struct Application {
    port: u16,
    server: Server,
    store: Arc<dyn EventStore>,
    raw_store: Arc<dyn EventStore>,
    projector: Projector,
    run_projections: bool,
    checkpoints: Option<(Checkpointer, Arc<CheckpointKey>)>,
    verifier: Verifier,
    audit_feed: Arc<crate::audit_feed::AuditFeed>,
}

impl Application {
    /// Open the store and bind the listener.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let metrics = Arc::new(Metrics::new());
        let options = OpenOptions {
            migrate: true,
            max_connections: settings.database.max_connections,
            observer: Some(metrics.writer()),
            ..OpenOptions::default()
        };
        let raw_store = ledgerdesk_store::open(&settings.database.url, &options).await?;
        // Everything but verification reads and writes through the vault:
        // personal data is sealed on append and opened (or erased) on read.
        let sealed = Arc::new(SealedStore::new(raw_store.clone()));
        let vault = sealed.vault();
        let store: Arc<dyn EventStore> = sealed;
        let projector = Projector::new(store.clone());
        metrics.follow(store.watch_head(), projector.clone());
        projector
            .ensure_schema()
            .await
            .map_err(|e| StartupError::Bootstrap(format!("projections: {e}")))?;
        let key = CheckpointKey::load_or_create(&settings.audit.signing_key_file)
            .map_err(|e| StartupError::Bootstrap(format!("audit.signing_key_file: {e}")))?;
        let checkpointer = Checkpointer {
            every_events: settings.audit.checkpoint_every_events,
            every: std::time::Duration::from_secs(settings.audit.checkpoint_every_secs),
        };
        let addr = settings.bind_addr()?;
        let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let port = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let passwords = Passwords::new(&settings.auth)
            .map_err(|e| StartupError::Bootstrap(format!("argon2: {e}")))?;
        let verifier = Verifier::new(
            passwords.clone(),
            settings.auth.max_concurrent_verifications,
            std::time::Duration::from_millis(settings.auth.verification_wait_ms),
        );
        let audit_feed = Arc::new(crate::audit_feed::AuditFeed::new(
            settings.audit.max_streams_per_user,
            settings.audit.max_streams,
        ));
        let db = Db::new(store.db());
        let state = AppState {
            store: store.clone(),
            vault,
            raw_store: raw_store.clone(),
            public_key: key.public_key(),
            projector: projector.clone(),
            projection_wait: std::time::Duration::from_millis(settings.projections.max_wait_ms),
            helpdesk: Helpdesk::new(store.clone()),
            db: db.clone(),
            passwords,
            sessions: Arc::default(),
            limiter: Arc::new(LoginLimiter::new(&settings.auth)),
            verifier: verifier.clone(),
            audit_feed: audit_feed.clone(),
            metrics,
            token_ttl_secs: settings.auth.token_ttl_secs,
            max_json_bytes: settings.http.max_json_bytes,
            files_dir: settings.files.dir.clone(),
            max_file_bytes: settings.files.max_bytes,
            files_lock: Arc::default(),
            rebuilds: Arc::default(),
        };
        bootstrap::run(&state, &settings.bootstrap).await?;
        tokio::spawn(purge(db));
        tokio::spawn(routes::auth::report_throttles(state.clone()));
        tokio::spawn(routes::audit::follow_audit(state.clone()));
        let state = web::Data::new(state);
        let json_limit = settings.http.max_json_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(json_limit)
                        .error_handler(extract::json_error),
                )
                .app_data(web::PathConfig::default().error_handler(extract::path_error))
                .configure(routes::configure)
                .wrap(from_fn(middleware::observe))
        })
        .shutdown_timeout(settings.http.shutdown_timeout_secs);
        if settings.http.workers > 0 {
            server = server.workers(settings.http.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                addr: addr.to_string(),
                source,
            })?
            .run();
        Ok(Self {
            port: port.port(),
            server,
            store,
            raw_store,
            projector,
            run_projections: settings.projections.run_in_server,
            checkpoints: Some((checkpointer, Arc::new(key))),
            verifier,
            audit_feed,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The event store as handlers see it (personal data opened).
    pub fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    /// The password verifier (tests saturate it through its permits).
    pub fn verifier(&self) -> Verifier {
        self.verifier.clone()
    }

    /// The live streams' follower and count.
    pub fn audit_feed(&self) -> Arc<crate::audit_feed::AuditFeed> {
        self.audit_feed.clone()
    }

    /// Serve until stopped by a signal; actix stops accepting, waits for the
    /// requests in flight (up to `http.shutdown_timeout_secs`) and returns.
    /// The projection workers (unless `projections.run_in_server` is off) and
    /// the checkpointer run alongside and stop with it.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let workers = self
            .run_projections
            .then(|| self.projector.spawn(until_stopped(stopped.clone())));
        let signer = self.checkpoints.take().map(|(checkpointer, key)| {
            tokio::spawn(checkpointer.run(
                self.raw_store.clone(),
                key,
                until_stopped(stopped.clone()),
            ))
        });
        let served = self.server.await;
        let _ = stop.send(true);
        for task in workers.into_iter().chain(signer) {
            let _ = task.await;
        }
        served
    }
}

/// Forget idempotency records after their retention and expired sessions,
/// hourly.
async fn purge(db: Db) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every.tick().await;
        let before = crate::db::now() - IDEMPOTENCY_RETENTION_SECS;
        if let Err(e) = db.purge(before).await {
            tracing::warn!(error = %e, "purging idempotency records failed");
        }
    }
}
