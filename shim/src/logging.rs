//! Shim logs go through `tracing` to the `log` FIFO containerd reads in the
//! bundle directory. The short-lived `start` and `delete` commands log
//! nothing: containerd reads their combined stdout and stderr as the reply.
//! `BERTH_LOG` filters by target and level (`info`,
//! `info,containerd_shim_berth_v1=debug`); the default is `info`, or `debug` under
//! `-debug`.
//!
//! A line is `TIME LEVEL TARGET: MESSAGE FIELD=VALUE...`, as
//! tracing-subscriber's formatter writes it. The subscriber is berth's own:
//! the shim logs events only (it opens no spans), and tracing-subscriber's
//! formatter needs its span registry, whose slab takes 32 KB from the
//! start, in every pod's shim.
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::util::SubscriberInitExt;

pub fn init(debug: bool, namespace: &str, id: &str) {
    let default = if debug { "debug" } else { "info,libcontainer=error,libcgroups=error" };
    let asked = std::env::var("BERTH_LOG").ok().map(|v| v.parse::<Targets>().map_err(|e| (v, e)));
    let (filter, bad) = match asked {
        Some(Ok(t)) => (t, None),
        other => (default.parse().expect("the default filter parses"), other.and_then(Result::err)),
    };
    // The log FIFO: read-write so the open never blocks on a missing reader.
    let _ = match std::fs::OpenOptions::new().read(true).write(true).open("log") {
        Ok(f) => ShimLog::new(filter, Box::new(f)).try_init(),
        Err(_) => ShimLog::new(filter, Box::new(std::io::stderr())).try_init(),
    };
    if let Some((value, error)) = bad {
        tracing::warn!(value, %error, "BERTH_LOG is not a list of TARGET=LEVEL (as in info,berth_host=debug); logging at the default");
    }
    tracing::debug!(namespace, shim_id = id, "berth shim logging");
}

/// Writes the events `filter` lets through, a line each, to `out`.
struct ShimLog {
    filter: Targets,
    out: Mutex<Box<dyn std::io::Write + Send>>,
}

impl ShimLog {
    fn new(filter: Targets, out: Box<dyn std::io::Write + Send>) -> Self {
        ShimLog { filter, out: Mutex::new(out) }
    }

    fn line(event: &Event<'_>, now: std::time::SystemTime) -> String {
        // A `log` record comes as an event of tracing-log's, its own target
        // and place in `log.*` fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = format!("{} {:>5} {}: ", humantime::format_rfc3339_micros(now), meta.level(), meta.target());
        let mut fields = Fields { line: &mut line, first: true };
        event.record(&mut fields);
        line.push('\n');
        line
    }
}

/// Formats an event's fields: the message first, bare; then `name=value`.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name().starts_with("log.") {
            return;
        }
        if !self.first {
            self.line.push(' ');
        }
        self.first = false;
        let _ = if field.name() == "message" { write!(self.line, "{value:?}") } else { write!(self.line, "{}={value:?}", field.name()) };
    }
}

impl Subscriber for ShimLog {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && self.filter.would_enable(meta.target(), meta.level())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        <Targets as tracing_subscriber::Layer<Self>>::max_level_hint(&self.filter)
    }

    fn event(&self, event: &Event<'_>) {
        let line = Self::line(event, std::time::SystemTime::now());
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A log that cannot be written is not worth failing a container for.
        let _ = out.write_all(line.as_bytes());
    }

    // Spans are never enabled: none is made, entered or recorded.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(filter: &str, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let log = ShimLog::new(filter.parse().unwrap(), Box::new(buf.clone()));
        tracing::subscriber::with_default(log, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn lines_carry_time_level_target_message_and_fields() {
        let text = logged("info", || tracing::info!(socket = "/run/s", shim_pid = 7, "berth shim serving"));
        let (time, rest) = text.split_once(' ').unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{text}");
        assert_eq!(rest, " INFO containerd_shim_berth_v1::logging::tests: berth shim serving socket=\"/run/s\" shim_pid=7\n");
    }

    #[test]
    fn the_filter_picks_levels_by_target() {
        let text = logged("info,libcontainer=error,containerd_shim_berth_v1=debug", || {
            tracing::debug!("shown: the shim at debug");
            tracing::trace!("hidden: trace");
            tracing::info!(target: "libcontainer::process", "hidden: libcontainer at info");
            tracing::error!(target: "libcontainer::process", "shown: libcontainer at error");
            tracing::debug!(target: "h2", "hidden: others at debug");
            tracing::info!(target: "h2", "shown: others at info");
        });
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text.contains("hidden"), "{text}");
    }

    #[test]
    fn spans_are_neither_made_nor_needed() {
        let text = logged("debug", || {
            let span = tracing::info_span!("request", id = 3);
            let _in = span.enter();
            tracing::info!("inside");
            assert!(span.is_disabled());
        });
        assert!(text.ends_with(" INFO containerd_shim_berth_v1::logging::tests: inside\n"), "{text}");
    }

    /// A `log` record (wasmtime and Cranelift write those) shows its own
    /// target, and not the fields that carry it through `tracing`.
    #[test]
    fn log_records_show_their_own_target() {
        let _ = tracing_log::LogTracer::init();
        let text = logged("info", || tracing_log::log::warn!(target: "wasmtime::runtime", "a log record"));
        assert!(text.ends_with(" WARN wasmtime::runtime: a log record\n"), "{text}");
    }

    /// tracing-subscriber's formatter keeps a span registry whose slab
    /// takes 32 KB as it is made.
    #[test]
    fn the_subscriber_holds_little_memory() {
        let before = crate::alloc_count::live_bytes();
        let log = tracing::Dispatch::new(ShimLog::new("info".parse().unwrap(), Box::new(std::io::sink())));
        tracing::dispatcher::with_default(&log, || tracing::info!("one line"));
        let held = crate::alloc_count::live_bytes() - before;
        assert!(held < 2048, "the shim's subscriber holds {held} bytes");
        drop(log);
    }
}
