//! Building and running the server: `Application::build(settings)` opens the
//! store (applying migrations) and binds; `run_until_stopped` serves until
//! SIGINT/SIGTERM, then lets requests in flight finish.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use ledgerdesk_store::{EventStore, OpenOptions};

use crate::configuration::Settings;
use crate::routes;
use crate::state::AppState;

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
        let state = web::Data::new(AppState {
            store: store.clone(),
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(routes::configure)
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
