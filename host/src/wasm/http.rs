//! Serving `wasi:http/incoming-handler` components: the component is
//! pre-instantiated once (`ProxyPre`); every request gets a fresh store and
//! instance from the pool, with its own memory cap and deadline, so a trap
//! or a timeout answers that request (500 / 504) and touches no other.
//! Outbound HTTP from handlers goes only to the plan's allowed origins.
use super::code::Loaded;
use super::error::RunError;
use super::interrupt::Interrupt;
use super::limits::{GuestLimiter, Meter};
use super::run::{GuestState, Prepared, Runtime};
use crate::plan::{RunPlan, Stdio};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

pub(super) struct HttpState {
    ctx: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: Outbound,
    limiter: GuestLimiter,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl GuestState for HttpState {
    fn limiter(&mut self) -> &mut GuestLimiter {
        &mut self.limiter
    }
}

/// Outbound requests from handlers: sent only to allowed origins, judged
/// by the URI the guest sends to (never by anything the inbound request
/// carries, such as its `Host` header).
struct Outbound {
    allowed: Arc<Vec<crate::caps::http::HttpOrigin>>,
}

type SendResult =
    Result<(http::Response<WasiBody>, Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>), wasmtime_wasi_http::Error>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn std::future::Future<Output = SendResult> + Send> {
        if !crate::caps::http::allows(&self.allowed, request.uri()) {
            tracing::info!(uri = %request.uri(), "outbound HTTP request denied: no --http-outbound origin allows it");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        tracing::debug!(uri = %request.uri(), "outbound HTTP request");
        Box::new(async move {
            let (resp, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((resp.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>))
        })
    }
}

/// A component ready to answer requests.
pub struct HttpService {
    runtime: Arc<Runtime>,
    pre: ProxyPre<HttpState>,
    plan: RunPlan,
    outbound: Arc<Vec<crate::caps::http::HttpOrigin>>,
    next_id: AtomicU64,
    /// The plan's stdout and stderr, opened once and shared by every
    /// request's instance (`None`: the host's own).
    output: Option<[Option<std::fs::File>; 2]>,
    /// What the requests' instances use, together (when metered).
    meter: Option<Arc<Meter>>,
}

/// A response of a served component.
pub type Resp = hyper::Response<HyperOutgoingBody>;

/// Whether a compiled guest is a component exporting
/// `wasi:http/incoming-handler` (of any 0.2 version): such a guest is
/// served, even if it also exports `wasi:cli/run` (as Rust binaries built
/// for wasm32-wasip2 do, with an empty `main`).
pub fn is_http_handler(prepared: &Prepared) -> bool {
    let Loaded::Component(c) = prepared.loaded() else { return false };
    let ty = c.component_type();
    let found = ty.exports(c.engine()).any(|(name, _)| name.starts_with("wasi:http/incoming-handler@"));
    found
}

/// A plain-text response (errors and refusals).
pub fn text(status: u16, msg: String) -> Resp {
    let body = http_body_util::Full::new(Bytes::from(msg)).map_err(|never| match never {}).boxed_unsync();
    let mut r = hyper::Response::new(body);
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

impl HttpService {
    /// Pre-instantiates `prepared`, which must be a component exporting
    /// `wasi:http/incoming-handler`.
    pub fn new(runtime: Arc<Runtime>, prepared: &Prepared, plan: &RunPlan) -> Result<Self, RunError> {
        Self::build(runtime, prepared, plan, None)
    }

    /// [`HttpService::new`], charging every request's instance (its memory
    /// while it lives, the CPU time of its polls) to `meter`.
    /// (Metering reads the thread's CPU clock around every poll of every
    /// instance: a cost only a container's stats should pay.)
    pub fn metered(runtime: Arc<Runtime>, prepared: &Prepared, plan: &RunPlan, meter: Arc<Meter>) -> Result<Self, RunError> {
        Self::build(runtime, prepared, plan, Some(meter))
    }

    fn build(runtime: Arc<Runtime>, prepared: &Prepared, plan: &RunPlan, meter: Option<Arc<Meter>>) -> Result<Self, RunError> {
        let name = plan.entrypoint.source.to_string();
        let fail = |source| RunError::Instantiate { name: name.clone(), source };
        let Loaded::Component(component) = prepared.loaded() else {
            return Err(RunError::CoreModuleHttp { name });
        };
        let mut linker = wasmtime::component::Linker::new(&runtime.engine().engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(fail)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(fail)?;
        let pre = linker.instantiate_pre(component).map_err(fail)?;
        let pre = ProxyPre::new(pre).map_err(|source| RunError::NoHttpHandler { name: name.clone(), source })?;
        let output = match &plan.stdio {
            Stdio::Inherit => None,
            Stdio::Paths { stdout, stderr, .. } => {
                let open = |p: &Option<std::path::PathBuf>| p.as_deref().map(|p| super::wasi::open_stdio(p, true)).transpose();
                Some([open(stdout)?, open(stderr)?])
            }
        };
        Ok(HttpService { runtime, pre, plan: plan.clone(), outbound: Arc::new(plan.http_outbound.clone()), next_id: AtomicU64::new(1), output, meter })
    }

    /// The guest's WASI context for one request: the plan's capabilities,
    /// no stdin, and the shared stdout/stderr.
    fn wasi(&self, id: u64) -> Result<WasiCtx, RunError> {
        use wasmtime_wasi::cli::OutputFile;
        let mut wasi = super::wasi::base(&self.plan)?;
        match &self.output {
            None => {
                wasi.inherit_stdout().inherit_stderr();
            }
            Some([out, err]) => {
                let dup = |f: &std::fs::File| f.try_clone().map_err(|source| RunError::Stdio { path: "stdout/stderr".into(), source });
                if let Some(f) = out {
                    wasi.stdout(OutputFile::new(dup(f)?));
                }
                if let Some(f) = err {
                    wasi.stderr(OutputFile::new(dup(f)?));
                }
            }
        }
        wasi.env("BERTH_REQUEST_ID", id.to_string());
        Ok(wasi.build())
    }

    /// Answers one request with a fresh instance. `hold` (a concurrency
    /// slot) is kept for as long as that instance lives: past the response
    /// head, while the guest still writes the body.
    pub async fn handle<B>(&self, req: hyper::Request<B>, hold: impl Send + 'static) -> Resp
    where
        B: hyper::body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let resp = match self.call(id, req, hold).await {
            Ok(r) => r,
            Err((status, msg)) => text(status, format!("{msg}\n")),
        };
        tracing::info!(request_id = id, method = %method, path = %path, status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
        resp
    }

    async fn call<B>(&self, id: u64, req: hyper::Request<B>, hold: impl Send + 'static) -> Result<Resp, (u16, String)>
    where
        B: hyper::body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
    {
        let internal = |e: wasmtime::Error| (500, format!("request {id}: {e:#}"));
        let ctx = self.wasi(id).map_err(|e| (500, e.to_string()))?;
        let limiter = GuestLimiter::new(self.plan.limits.memory_bytes);
        let limiter = match &self.meter {
            Some(m) => limiter.with_meter(m.clone()),
            None => limiter,
        };
        let state = HttpState { ctx, table: ResourceTable::new(), http: WasiHttpCtx::new(), hooks: Outbound { allowed: self.outbound.clone() }, limiter };
        let timeout = self.plan.limits.timeout.unwrap_or(Duration::from_secs(30));
        let interrupt = Interrupt::new();
        let mut store = self.runtime.store(state, &self.plan, &interrupt, Some(Instant::now() + timeout));
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, req).map_err(internal)?;
        let out = store.data_mut().http().new_response_outparam(sender).map_err(internal)?;
        let pre = self.pre.clone();
        let meter = self.meter.clone();
        let mut task = AbortOnDrop::new(tokio::spawn(async move {
            let _hold = hold;
            let mut handle = std::pin::pin!(async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            });
            match meter {
                Some(meter) => super::run::cpu_metered(handle.as_mut(), &meter).await,
                None => handle.await,
            }
        }));
        let deadline = tokio::time::sleep(timeout);
        tokio::select! {
            r = receiver => match r {
                // The guest goes on writing the body: its task must outlive
                // this call (the store's deadline still bounds it).
                Ok(Ok(resp)) => {
                    task.detach();
                    Ok(resp)
                }
                Ok(Err(code)) => Err((500, format!("request {id}: the handler answered with an error: {code:?}"))),
                Err(_) => match (&mut task.0).await {
                    Ok(Ok(())) => Err((500, format!("request {id}: the handler returned without a response"))),
                    Ok(Err(e)) if super::error::is_pool_full(&e) => {
                        Err((503, format!("request {id}: no room for another instance ({e}); retry later, or lower berth.dev/http-max-concurrency or raise BERTH_SHIM_MAX_GUESTS")))
                    }
                    Ok(Err(e)) if interrupt.reason().is_some() => Err((504, format!("request {id}: the handler ran past the {} limit: {}", humantime::format_duration(timeout), e.root_cause()))),
                    Ok(Err(e)) => Err((500, format!("request {id}: the handler trapped: {}", e.root_cause()))),
                    Err(e) => Err((500, format!("request {id}: the handler task failed: {e}"))),
                },
            },
            () = deadline => {
                interrupt.trigger(super::interrupt::Reason::Timeout);
                Err((504, format!("request {id}: no response within {}", humantime::format_duration(timeout))))
            }
        }
    }
}

/// A request's instance task, ended if the request is dropped before the
/// guest answered (its client went away or the server stopped at once).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>, bool);

impl<T> AbortOnDrop<T> {
    fn new(h: tokio::task::JoinHandle<T>) -> Self {
        AbortOnDrop(h, true)
    }

    /// Lets the task run on when this is dropped.
    fn detach(&mut self) {
        self.1 = false;
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if self.1 {
            self.0.abort();
        }
    }
}
