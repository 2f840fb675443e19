//! `berth serve`: serve a `wasi:http/incoming-handler` component over
//! HTTP/1.1 (keep-alive) and HTTP/2 cleartext (prior knowledge), a fresh
//! instance per request. SIGTERM/SIGINT stop
//! accepting, let in-flight requests finish (up to `--grace`), then exit 0.
use super::size::parse_size;
use anyhow::{Context, Result};
use berth_host::oci::annotations;
use berth_host::plan::{Entrypoint, ModuleSource, RunPlan};
use berth_host::wasm::http::HttpService;
use berth_host::wasm::{cache::Cache, EngineOptions, Runtime, WasmEngine};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::io::TokioIo;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The component (wasm32-wasip2, exporting wasi:http/incoming-handler).
    #[arg(value_name = "COMPONENT")]
    component: PathBuf,
    /// Address to listen on (default: $BERTH_HTTP_ADDR, else 0.0.0.0:8080).
    #[arg(long, env = "BERTH_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    addr: SocketAddr,
    /// Requests handled at once; more wait for a slot.
    #[arg(long, default_value_t = 256)]
    max_concurrency: usize,
    /// Requests that may wait for a slot; past that the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 1024)]
    max_queue: usize,
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
    let timeout = annotations::parse_duration(&args.request_timeout).with_context(|| format!("--request-timeout {:?}", args.request_timeout))?;
    let grace = annotations::parse_duration(&args.grace).with_context(|| format!("--grace {:?}", args.grace))?;
    let limits = Limits { slots: args.max_concurrency.max(1), queue: args.max_queue, max_body: parse_size(&args.max_body_size).context("--max-body-size")? };
    let mut plan = RunPlan {
        name: args.component.display().to_string(),
        entrypoint: Entrypoint { source: ModuleSource::File(args.component.clone()), export: None },
        args: vec![args.component.display().to_string()],
        ..Default::default()
    };
    plan.limits.timeout = Some(timeout);
    for o in &args.http_outbound {
        berth_host::caps::http::HttpOrigin::parse_list(o, &mut plan.http_outbound).context("--http-outbound")?;
    }
    if let Some(m) = &args.memory {
        plan.limits.memory_bytes = Some(parse_size(m).context("--memory")?);
    }
    let slots = (args.max_concurrency as u32).max(1);
    let engine = WasmEngine::new(&EngineOptions { pool_instances: slots + 8, max_memory_bytes: 4 << 30 })?;
    let runtime = Arc::new(Runtime::new(engine, Cache::new(berth_host::paths::cache_dir()), 256 << 20));
    let prepared = runtime.prepare(&plan)?;
    let service = Arc::new(HttpService::new(runtime, &prepared, &plan)?);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(run(service, args.addr, limits, grace))
}

/// Backpressure: concurrent slots, a bounded wait queue, a body cap.
#[derive(Clone, Copy)]
struct Limits {
    slots: usize,
    queue: usize,
    max_body: u64,
}

struct Gate {
    slots: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    limits: Limits,
}

type Resp = hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>;

fn refuse(status: u16, msg: &str, retry_after: bool) -> Resp {
    let mut r = berth_host::wasm::http::text(status, format!("{msg}\n"));
    if retry_after {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
    }
    r
}

impl Gate {
    async fn handle(&self, service: &HttpService, req: hyper::Request<hyper::body::Incoming>) -> Resp {
        use std::sync::atomic::Ordering::SeqCst;
        let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.max_body) {
            tracing::info!(method = %req.method(), path = %req.uri().path(), status = 413, "request refused: body over --max-body-size");
            return refuse(413, "request body too large", false);
        }
        let permit = match self.slots.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, SeqCst) >= self.limits.queue {
                    self.waiting.fetch_sub(1, SeqCst);
                    tracing::info!(method = %req.method(), path = %req.uri().path(), status = 503, "request refused: all slots busy and the queue is full");
                    return refuse(503, "busy; retry shortly", true);
                }
                let p = self.slots.acquire().await;
                self.waiting.fetch_sub(1, SeqCst);
                match p {
                    Ok(p) => p,
                    Err(_) => return refuse(503, "shutting down", true),
                }
            }
        };
        let resp = service.handle(req).await;
        drop(permit);
        resp
    }
}

async fn run(service: Arc<HttpService>, addr: SocketAddr, limits: Limits, grace: Duration) -> Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("berth: serving on http://{local}/");
    tracing::info!(address = %local, "serving");
    let gate = Arc::new(Gate { slots: tokio::sync::Semaphore::new(limits.slots), waiting: Default::default(), limits });
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        // Responses go out as headers then body chunks: without TCP_NODELAY,
        // Nagle's algorithm holds each small write for the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let (service, gate, mut stop) = (service.clone(), gate.clone(), stop_rx.clone());
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (service, gate) = (service.clone(), gate.clone());
                async move { Ok::<_, std::convert::Infallible>(gate.handle(&service, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { tracing::debug!(peer = %peer, error = %e, "connection ended") },
                _ = stop.changed() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    eprintln!("berth: stopping; waiting up to {} for requests in flight", humantime::format_duration(grace));
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await.is_ok();
    if !drained {
        tracing::warn!("grace period over; requests still in flight are cut off");
    }
    Ok(0)
}
