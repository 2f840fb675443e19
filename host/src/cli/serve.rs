//! `berth serve`: serve a `wasi:http/incoming-handler` component over
//! HTTP/1.1 (keep-alive), a fresh instance per request. SIGTERM/SIGINT stop
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
    rt.block_on(run(service, args.addr, args.max_concurrency.max(1), grace))
}

async fn run(service: Arc<HttpService>, addr: SocketAddr, max: usize, grace: Duration) -> Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("berth: serving on http://{local}/");
    tracing::info!(address = %local, "serving");
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
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
        let (service, slots, mut stop) = (service.clone(), slots.clone(), stop_rx.clone());
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (service, slots) = (service.clone(), slots.clone());
                async move {
                    let _slot = slots.acquire_owned().await;
                    Ok::<_, std::convert::Infallible>(service.handle(req).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc);
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
