//! Logging through `tracing`: readable lines on a terminal, JSON lines when
//! `log.format = "json"`. The sink is a parameter so tests can silence it.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::configuration::LogFormat;

/// actix-http's connection dispatcher logs every malformed request line a
/// client sends (`invalid uri character`, `uri too long`) at ERROR, before
/// any of our code runs: anyone could fill the log with errors and trip the
/// alerts that watch them. The client gets its 400 regardless. This hides
/// the dispatcher's other lines too (a connection's I/O failing mid-body);
/// requests that reach a route are still logged by `observe`, and
/// `RUST_LOG` brings the dispatcher back.
const CLIENT_NOISE: &str = "actix_http::h1::dispatcher=off";

/// Install the global subscriber. `RUST_LOG`, when set, wins over `level`.
/// Calling it twice is harmless (the second call does nothing).
pub fn init<W>(format: LogFormat, level: &str, sink: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},{CLIENT_NOISE}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
