//! `berth serve`: serve a `wasi:http/incoming-handler` component over
//! HTTP/1.1 (keep-alive) and HTTP/2 cleartext (prior knowledge), a fresh
//! instance per request. SIGTERM/SIGINT stop
//! accepting, let in-flight requests finish (up to `--grace`), then exit 0.
use super::size::parse_size;
use crate::oci::annotations;
use crate::plan::{Entrypoint, ModuleSource, RunPlan};
use crate::wasm::http::HttpService;
use crate::wasm::server::{self, Limits};
use crate::wasm::{cache::Cache, EngineOptions, Runtime, WasmEngine};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The component (wasm32-wasip2, exporting wasi:http/incoming-handler).
    #[arg(value_name = "COMPONENT")]
    component: PathBuf,
    /// Address to listen on (default: $BERTH_HTTP_ADDR, else 0.0.0.0:8080).
    #[arg(long, env = annotations::HTTP_ADDR_ENV, default_value = annotations::DEFAULT_HTTP_ADDR)]
    addr: SocketAddr,
    /// Requests handled at once; more wait for a slot.
    #[arg(long, default_value_t = 256)]
    max_concurrency: usize,
    /// Requests that may wait for a slot; past that the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 1024)]
    max_queue: usize,
    /// Connections kept open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// How long a client may take to send a request's head; slower ones (and idle keep-alive connections) are closed.
    #[arg(long, default_value = "10s")]
    header_timeout: String,
    /// Largest request body (by Content-Length) accepted; larger gets 413.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    max_body_size: String,
    /// Wall-clock limit of one request (504 past it).
    #[arg(long, default_value = "30s")]
    request_timeout: String,
    /// Memory cap (linear memory + tables) of one request's instance.
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Allow outbound HTTP to an origin: http[s]://HOST[:PORT], HOST may be *.domain. Comma-separated or repeated; none allowed by default.
    #[arg(long, value_name = "ORIGIN")]
    http_outbound: Vec<String>,
    /// How long SIGTERM waits for in-flight requests.
    #[arg(long, default_value = "30s")]
    grace: String,
}

pub fn serve(args: ServeArgs) -> Result<i32> {
    let timeout = duration_flag("--request-timeout", &args.request_timeout)?;
    let grace = duration_flag("--grace", &args.grace)?;
    let header_timeout = duration_flag("--header-timeout", &args.header_timeout)?;
    let mut limits = Limits {
        slots: args.max_concurrency.max(1),
        queue: args.max_queue,
        max_body: parse_size(&args.max_body_size).context("--max-body-size")?,
        max_connections: args.max_connections.max(1),
        header_timeout,
    };
    let mut plan = RunPlan {
        name: args.component.display().to_string(),
        entrypoint: Entrypoint { source: ModuleSource::File(args.component.clone()), export: None },
        args: vec![args.component.display().to_string()],
        ..Default::default()
    };
    plan.limits.timeout = Some(timeout);
    for o in &args.http_outbound {
        crate::caps::http::HttpOrigin::parse_list(o, &mut plan.http_outbound).context("--http-outbound")?;
    }
    if let Some(m) = &args.memory {
        plan.limits.memory_bytes = Some(parse_size(m).context("--memory")?);
    }
    let engine = WasmEngine::new(&EngineOptions { pool_instances: limits.slots as u32 + SPARE_INSTANCES, max_memory_bytes: 4 << 30 })?;
    let runtime = Arc::new(Runtime::new(engine, Cache::new(crate::paths::cache_dir()), crate::wasm::load::DEFAULT_MAX_MODULE_BYTES));
    let prepared = runtime.prepare(&plan)?;
    // A smaller pool than asked (a small address space), or a component
    // with more memories or tables than the pool holds a guest, bounds
    // concurrency; the rest of the requests queue instead of failing.
    let pool = runtime.guests_fitting(&prepared);
    let fits = pool.saturating_sub(SPARE_INSTANCES.min(pool / 4)).max(1) as usize;
    if fits < limits.slots {
        tracing::info!(max_concurrency = limits.slots, serving = fits, "serving fewer requests at once than --max-concurrency asks; the others queue");
        limits.slots = fits;
    }
    let service = Arc::new(HttpService::new(runtime, &prepared, &plan)?);
    serve_until_signalled(service, args.addr, None, limits, grace)
}

/// Instances the pool holds beyond the request slots: headroom, so that the
/// pool is never what refuses a request the slots let in.
const SPARE_INSTANCES: u32 = 8;

fn duration_flag(flag: &str, v: &str) -> Result<Duration> {
    annotations::parse_duration(v).with_context(|| format!("{flag} {v:?} is not a positive duration; use e.g. 10s, 500ms or 2m"))
}

/// Serves until SIGTERM or SIGINT, then drains for at most `grace`.
pub fn serve_until_signalled(service: Arc<HttpService>, addr: SocketAddr, netns: Option<&std::path::Path>, limits: Limits, grace: Duration) -> Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = server::bind(addr, netns).with_context(|| format!("listening on {addr}"))?;
    eprintln!("berth: serving on http://{}/", listener.local_addr()?);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async {
        let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
        let stop = async {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            eprintln!("berth: stopping; waiting up to {} for requests in flight", humantime::format_duration(grace));
        };
        server::serve(service, listener, limits, stop, Some(grace)).await?;
        Ok(0)
    })
}
