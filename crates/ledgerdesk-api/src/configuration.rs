//! Settings: built-in defaults, then an optional `ledgerdesk.toml` (or the
//! file given with `--config`), then `LEDGERDESK__SECTION__KEY` environment
//! variables. A wrong setting stops start-up with a message naming it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default configuration file, read when present in the working folder.
pub const DEFAULT_FILE: &str = "ledgerdesk.toml";

/// Every setting of ledgerdesk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[database]`
    pub database: DatabaseSettings,
    /// `[http]`
    pub http: HttpSettings,
    /// `[log]`
    pub log: LogSettings,
    /// `[bootstrap]`
    pub bootstrap: BootstrapSettings,
    /// `[auth]`
    pub auth: AuthSettings,
    /// `[files]`
    pub files: FileSettings,
    /// `[audit]`
    pub audit: AuditSettings,
    /// `[projections]`
    pub projections: ProjectionSettings,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (the default, `sqlite://data/ledgerdesk.db`) or `postgres://…`.
    pub url: String,
    /// Read pool size.
    pub max_connections: u32,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on, e.g. `127.0.0.1:8080` (port 0 picks a free one).
    pub bind: String,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Seconds to let requests in flight finish on shutdown.
    pub shutdown_timeout_secs: u64,
    /// Largest JSON request body in bytes (413 above).
    pub max_json_bytes: usize,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for a terminal, `json` for one JSON object per line.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `ledgerdesk=debug,info`
    /// (`RUST_LOG` wins when set).
    pub level: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// JSON lines.
    Json,
}

/// `[bootstrap]`: the first admin, created on the first start of an empty database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSettings {
    /// The first admin's email.
    pub admin_email: String,
    /// The first admin's password; when unset, one is generated and logged once.
    pub admin_password: Option<Secret>,
}

/// `[auth]`: sessions, password hashing and the slowing down of failed logins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// How long a login token stays valid, in seconds.
    pub token_ttl_secs: u64,
    /// Failed logins for one account, or from one address, within
    /// `failure_window_secs` before further attempts get 429.
    pub max_failed_logins: u32,
    /// The window in which failed logins count, in seconds.
    pub failure_window_secs: u64,
    /// Argon2id memory cost in KiB (OWASP: 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations (OWASP: 2).
    pub argon2_iterations: u32,
    /// Password verifications running at once (0: one per core), each on
    /// a thread of its own holding `argon2_memory_kib`.
    pub max_concurrent_verifications: usize,
    /// How long a login waits for a verification turn before it gets 503
    /// with `Retry-After`, in milliseconds.
    pub verification_wait_ms: u64,
}

/// `[files]`: uploaded attachments, stored by SHA-256 outside the event log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// The folder the bytes are kept in.
    pub dir: PathBuf,
    /// Largest upload in bytes (413 above).
    pub max_bytes: u64,
}

/// `[audit]`: the verifiable log's checkpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// The checkpoint signing key (created on first use).
    pub signing_key_file: PathBuf,
    /// Sign a checkpoint once the log grew by this many events (0: never by count).
    pub checkpoint_every_events: u64,
    /// Sign a checkpoint at least this often, even when nothing happened, so
    /// a quiet period is provably quiet (0: never by time).
    pub checkpoint_every_secs: u64,
    /// Live streams (`/api/v1/audit/stream`) one user may hold open at once.
    pub max_streams_per_user: usize,
    /// Live streams this process serves at once.
    pub max_streams: usize,
}

/// `[projections]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSettings {
    /// Run the projection workers inside `ledgerdesk serve` (the default,
    /// one machine); turn off when `ledgerdesk project` workers run them.
    pub run_in_server: bool,
    /// The longest a query with `min_position` waits for a projection (ms).
    pub max_wait_ms: u64,
}

/// A string that never prints.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A setting that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Load from defaults, the file and the environment. `file` is required
    /// to exist when given explicitly; `ledgerdesk.toml` is optional.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, config::Environment::with_prefix("LEDGERDESK"))
    }

    /// Defaults overridden by `LEDGERDESK__…` variables given here instead
    /// of the process environment (no file is read): for tests and tools.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect::<std::collections::HashMap<String, String>>();
        Self::load_from(
            Some(Path::new("")),
            config::Environment::with_prefix("LEDGERDESK").source(Some(vars)),
        )
    }

    fn load_from(file: Option<&Path>, env: config::Environment) -> Result<Self, ConfigError> {
        let (path, required) = match file {
            // An empty path: no file at all.
            Some(p) if p.as_os_str().is_empty() => (PathBuf::new(), false),
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_FILE), false),
        };
        if required && !path.exists() {
            return Err(ConfigError(format!(
                "--config {}: no such file",
                path.display()
            )));
        }
        let err = |e: config::ConfigError| ConfigError(e.to_string());
        let builder = config::Config::builder()
            .set_default("database.url", "sqlite://data/ledgerdesk.db")
            .and_then(|b| b.set_default("database.max_connections", 8))
            .and_then(|b| b.set_default("http.bind", "127.0.0.1:8080"))
            .and_then(|b| b.set_default("http.workers", 0))
            .and_then(|b| b.set_default("http.shutdown_timeout_secs", 30))
            .and_then(|b| b.set_default("log.format", "pretty"))
            .and_then(|b| b.set_default("log.level", "info"))
            .and_then(|b| b.set_default("http.max_json_bytes", 65_536))
            .and_then(|b| b.set_default("bootstrap.admin_email", "admin@example.com"))
            .and_then(|b| b.set_default("auth.token_ttl_secs", 43_200))
            .and_then(|b| b.set_default("auth.max_failed_logins", 5))
            .and_then(|b| b.set_default("auth.failure_window_secs", 300))
            .and_then(|b| b.set_default("auth.argon2_memory_kib", 19_456))
            .and_then(|b| b.set_default("auth.argon2_iterations", 2))
            .and_then(|b| b.set_default("auth.max_concurrent_verifications", 0))
            .and_then(|b| b.set_default("auth.verification_wait_ms", 1000))
            .and_then(|b| b.set_default("files.dir", "data/files"))
            .and_then(|b| b.set_default("files.max_bytes", 10_485_760))
            .and_then(|b| b.set_default("audit.signing_key_file", "data/checkpoint.key"))
            .and_then(|b| b.set_default("audit.checkpoint_every_events", 1000))
            .and_then(|b| b.set_default("audit.checkpoint_every_secs", 3600))
            .and_then(|b| b.set_default("audit.max_streams_per_user", 5))
            .and_then(|b| b.set_default("audit.max_streams", 100))
            .and_then(|b| b.set_default("projections.run_in_server", true))
            .and_then(|b| b.set_default("projections.max_wait_ms", 2000))
            .map_err(err)?;
        let builder = if path.as_os_str().is_empty() {
            builder
        } else {
            builder.add_source(config::File::from(path).required(required))
        };
        let settings: Settings = builder
            .add_source(env.prefix_separator("__").separator("__").try_parsing(true))
            .build()
            .map_err(err)?
            .try_deserialize()
            .map_err(err)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ledgerdesk_store::backend_of(&self.database.url).map_err(|_| {
            ConfigError(format!(
                "database.url `{}` is not a database URL: use sqlite://PATH or postgres://USER@HOST/DB",
                self.database.url
            ))
        })?;
        if self.database.max_connections == 0 {
            return Err(ConfigError(
                "database.max_connections must be at least 1".into(),
            ));
        }
        self.bind_addr()?;
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(ConfigError(format!(
                "log.level `{}` is not a valid filter",
                self.log.level
            )));
        }
        if !self.bootstrap.admin_email.contains('@') {
            return Err(ConfigError(format!(
                "bootstrap.admin_email `{}` is not an email address",
                self.bootstrap.admin_email
            )));
        }
        if self.auth.token_ttl_secs == 0 {
            return Err(ConfigError("auth.token_ttl_secs must be at least 1".into()));
        }
        if self.auth.max_failed_logins == 0 || self.auth.failure_window_secs == 0 {
            return Err(ConfigError(
                "auth.max_failed_logins and auth.failure_window_secs must be at least 1".into(),
            ));
        }
        if argon2::Params::new(
            self.auth.argon2_memory_kib,
            self.auth.argon2_iterations,
            1,
            None,
        )
        .is_err()
        {
            return Err(ConfigError(format!(
                "auth.argon2_memory_kib `{}` / auth.argon2_iterations `{}` are not valid Argon2 parameters (memory at least 8 KiB, iterations at least 1)",
                self.auth.argon2_memory_kib, self.auth.argon2_iterations
            )));
        }
        if self.audit.max_streams_per_user == 0 || self.audit.max_streams == 0 {
            return Err(ConfigError(
                "audit.max_streams_per_user and audit.max_streams must be at least 1".into(),
            ));
        }
        if self.files.max_bytes == 0 || self.http.max_json_bytes == 0 {
            return Err(ConfigError(
                "files.max_bytes and http.max_json_bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// `http.bind` as a socket address.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.http.bind.parse().map_err(|_| {
            ConfigError(format!(
                "http.bind `{}` is not an address such as 127.0.0.1:8080",
                self.http.bind
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_from(
            None,
            config::Environment::with_prefix("LEDGERDESK").source(Some(vars)),
        )
    }

    #[test]
    fn defaults_select_the_embedded_database() {
        let s = load(&[]).unwrap();
        assert_eq!(s.database.url, "sqlite://data/ledgerdesk.db");
        assert_eq!(s.http.bind, "127.0.0.1:8080");
        assert_eq!(s.log.format, LogFormat::Pretty);
        assert_eq!(s.bootstrap.admin_email, "admin@example.com");
        assert!(s.bootstrap.admin_password.is_none());
    }

    #[test]
    fn environment_overrides_with_double_underscores() {
        let s = load(&[
            (
                "LEDGERDESK__DATABASE__URL",
                "postgres://postgres@127.0.0.1/test",
            ),
            ("LEDGERDESK__HTTP__BIND", "0.0.0.0:9000"),
            ("LEDGERDESK__LOG__FORMAT", "json"),
            ("LEDGERDESK__BOOTSTRAP__ADMIN_PASSWORD", "s3cret-pass"),
        ])
        .unwrap();
        assert_eq!(s.database.url, "postgres://postgres@127.0.0.1/test");
        assert_eq!(s.bind_addr().unwrap().port(), 9000);
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.bootstrap.admin_password.unwrap().expose(), "s3cret-pass");
    }

    #[test]
    fn a_wrong_setting_is_named() {
        for (key, value, named) in [
            ("LEDGERDESK__HTTP__BIND", "not-an-address", "http.bind"),
            ("LEDGERDESK__DATABASE__URL", "mysql://x", "database.url"),
            ("LEDGERDESK__LOG__FORMAT", "xml", "log.format"),
            (
                "LEDGERDESK__DATABASE__MAX_CONNECTIONS",
                "many",
                "max_connections",
            ),
            ("LEDGERDESK__HTTP__PORTT", "1", "portt"),
        ] {
            let e = load(&[(key, value)]).expect_err(key).to_string();
            assert!(e.contains(named), "{key}: `{e}` should name {named}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = load(&[("LEDGERDESK__BOOTSTRAP__ADMIN_PASSWORD", "hunter22")]).unwrap();
        assert!(!format!("{s:?}").contains("hunter22"));
    }
}
