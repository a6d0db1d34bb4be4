//! Building and running the server: `Application::build(settings)` opens the
//! store (applying migrations) and binds; `run_until_stopped` serves until
//! SIGINT/SIGTERM, then lets requests in flight finish.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{middleware::from_fn, web, App, HttpServer};
use ledgerdesk_app::Helpdesk;
use ledgerdesk_store::{EventStore, OpenOptions};

use crate::auth::{LoginLimiter, Passwords};
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
    /// The first users could not be created.
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
}

/// A built, bound server.
pub struct Application {
    port: u16,
    server: Server,
    store: Arc<dyn EventStore>,
}

impl Application {
    /// Open the store and bind the listener.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let options = OpenOptions {
            migrate: true,
            max_connections: settings.database.max_connections,
        };
        let store = ledgerdesk_store::open(&settings.database.url, &options).await?;
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
        let db = Db::new(store.pool());
        let state = AppState {
            store: store.clone(),
            helpdesk: Helpdesk::new(store.clone()),
            db: db.clone(),
            passwords,
            sessions: Arc::default(),
            limiter: Arc::new(LoginLimiter::new(&settings.auth)),
            metrics: Arc::new(Metrics::new(store.watch_head())),
            token_ttl_secs: settings.auth.token_ttl_secs,
            max_json_bytes: settings.http.max_json_bytes,
            files_dir: settings.files.dir.clone(),
            max_file_bytes: settings.files.max_bytes,
        };
        bootstrap::run(&state, &settings.bootstrap).await?;
        tokio::spawn(purge(db));
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
                .app_data(web::QueryConfig::default().error_handler(extract::query_error))
                .configure(routes::configure)
                .wrap(from_fn(middleware::idempotency))
                .wrap(from_fn(middleware::gate))
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
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The event store the server uses.
    pub fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    /// Serve until stopped by a signal; actix stops accepting, waits for the
    /// requests in flight (up to `http.shutdown_timeout_secs`) and returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
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
