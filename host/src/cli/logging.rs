//! tracing subscriber for the `berth` command: `BERTH_LOG` filter
//! (EnvFilter syntax, default `warn`, with libcontainer's and libcgroups'
//! notes about optional kernel features at `error`), text or JSON lines on
//! stderr.
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The default filter: warnings, but not libcontainer's and libcgroups'
/// warnings about controllers and capabilities this host lacks, and not
/// the TLS verifier's own line for a certificate it refuses (berth's error
/// says what is wrong and what to change).
pub const DEFAULT_FILTER: &str = "warn,libcontainer=error,libcgroups=error,rustls_platform_verifier=off";

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
