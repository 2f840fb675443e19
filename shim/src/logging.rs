//! Shim logs go through `tracing` to the `log` FIFO containerd reads in the
//! bundle directory. The short-lived `start` and `delete` commands log
//! nothing: containerd reads their combined stdout and stderr as the reply.
//! `BERTH_LOG` filters; the default is `info`, or `debug` under `-debug`.
use tracing_subscriber::EnvFilter;

pub fn init(debug: bool, namespace: &str, id: &str) {
    let default = if debug { "debug" } else { "info,libcontainer=error,libcgroups=error" };
    let filter = EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    // The log FIFO: read-write so the open never blocks on a missing reader.
    let _ = match std::fs::OpenOptions::new().read(true).write(true).open("log") {
        Ok(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
    tracing::debug!(namespace, shim_id = id, "berth shim logging");
}
