//! Runs a [`RunPlan`]: load (through the cache), instantiate with the
//! plan's capabilities and limits, call the entrypoint, map the outcome to
//! an [`Exit`].
use super::cache::Cache;
use super::code::Loaded;
use super::engine::WasmEngine;
use super::error::{instantiate_error, is_pool_full, RunError};
use super::interrupt::{Interrupt, Reason};
use super::limits::{CpuThrottle, GuestLimiter, Meter, Usage};
use super::load::{self, LoadInfo};
use super::{invoke, wasi};
use crate::plan::{ModuleSource, RunPlan};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::time::Instant as TokioInstant;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

/// Exit status for a trap (128 + SIGABRT, as a native program that aborts).
pub const EXIT_TRAP: i32 = 134;
/// Exit status when the wall-clock limit runs out (as coreutils `timeout`).
pub const EXIT_TIMEOUT: i32 = 124;

/// How a guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The guest exited (returned, or called `proc_exit` / `exit`).
    Code(i32),
    /// The guest trapped; the message holds the trap and wasm backtrace.
    Trap(String),
    /// The guest was stopped from outside.
    Stopped(Reason),
}

impl Exit {
    /// The process exit status convention: the guest's code, 134 for a
    /// trap, 128+signal when signalled, 124 for a timeout.
    pub fn status(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Trap(_) => EXIT_TRAP,
            Exit::Stopped(Reason::Signal(s)) => 128 + s,
            Exit::Stopped(Reason::Timeout) => EXIT_TIMEOUT,
        }
    }

    /// What the user is told when guest `name` trapped (ending in a
    /// newline); `None` for any other end.
    pub fn trap_report(&self, name: &str) -> Option<String> {
        match self {
            Exit::Trap(msg) => Some(format!("berth: {name} trapped (exit status {}):\n{msg}\n", self.status())),
            _ => None,
        }
    }
}

/// A guest stopped by an [`Interrupt`], raised from the epoch callback.
#[derive(Debug, thiserror::Error)]
#[error("guest stopped: {0:?}")]
struct Stopped(Reason);

/// Code loaded for a plan, ready to run.
pub struct Prepared {
    name: String,
    loaded: Arc<Loaded>,
    pub info: LoadInfo,
}

impl Prepared {
    pub fn kind(&self) -> super::code::Kind {
        self.loaded.kind()
    }

    pub(super) fn loaded(&self) -> &Loaded {
        &self.loaded
    }
}

struct P1State {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
}

struct P2State {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
}

/// Store data of a guest: gives the store its limiter.
pub(super) trait GuestState: Send + 'static {
    fn limiter(&mut self) -> &mut GuestLimiter;
}

impl GuestState for P1State {
    fn limiter(&mut self) -> &mut GuestLimiter {
        &mut self.limiter
    }
}

impl GuestState for P2State {
    fn limiter(&mut self) -> &mut GuestLimiter {
        &mut self.limiter
    }
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// The wasm runtime: an engine, a cache and the WASI linkers.
pub struct Runtime {
    engine: WasmEngine,
    cache: Cache,
    max_module_bytes: u64,
    p1: OnceLock<Result<wasmtime::Linker<P1State>, String>>,
    p2: OnceLock<Result<wasmtime::component::Linker<P2State>, String>>,
}

impl Runtime {
    pub fn new(engine: WasmEngine, cache: Cache, max_module_bytes: u64) -> Self {
        Runtime { engine, cache, max_module_bytes, p1: OnceLock::new(), p2: OnceLock::new() }
    }

    pub fn engine(&self) -> &WasmEngine {
        &self.engine
    }

    /// How many instances of `prepared` the engine runs at once (see
    /// [`WasmEngine::guests_fitting`]).
    pub fn guests_fitting(&self, prepared: &Prepared) -> u32 {
        let needs = match prepared.loaded() {
            Loaded::Module(m) => Some(m.resources_required()),
            // None: it imports core modules, which no linker here provides.
            Loaded::Component(c) => c.resources_required(),
        };
        match needs {
            Some(r) => self.engine.guests_fitting(r.num_memories, r.num_tables),
            None => self.engine.pool_instances(),
        }
    }

    /// Opens, reads and compiles (or loads from cache) the plan's code.
    pub fn prepare(&self, plan: &RunPlan) -> Result<Prepared, RunError> {
        let (name, bytes) = self.read_source(&plan.entrypoint.source)?;
        let known = match &plan.entrypoint.source {
            ModuleSource::Blob { digest, .. } => digest.strip_prefix("sha256:"),
            _ => None,
        };
        let (loaded, info) = load::load(&self.engine, &self.cache, &name, bytes, plan.allow_precompiled, known)?;
        Ok(Prepared { name, loaded, info })
    }

    /// Opens and reads a module source within the size cap; returns its
    /// display name and bytes.
    pub fn read_source(&self, source: &ModuleSource) -> Result<(String, Vec<u8>), RunError> {
        let name = source.to_string();
        let file = crate::rooted::open_source(source)?;
        let bytes = load::read_capped(file, &name, self.max_module_bytes)?;
        if let ModuleSource::Blob { digest, .. } = source {
            use sha2::Digest as _;
            let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
            if &actual != digest {
                return Err(load::LoadError::DigestMismatch { name, expected: digest.clone(), actual }.into());
            }
        }
        Ok((name, bytes))
    }

    /// Runs prepared code under the plan until it exits, traps or is stopped.
    pub async fn run(&self, prepared: &Prepared, plan: &RunPlan, interrupt: &Interrupt) -> Result<(Exit, Usage), RunError> {
        self.run_metered(prepared, plan, interrupt, Arc::new(Meter::default())).await
    }

    /// [`Runtime::run`], reporting memory and CPU use to `meter` as it goes.
    pub async fn run_metered(&self, prepared: &Prepared, plan: &RunPlan, interrupt: &Interrupt, meter: Arc<Meter>) -> Result<(Exit, Usage), RunError> {
        let mut wasi = wasi::builder(plan)?;
        let limiter = GuestLimiter::new(plan.limits.memory_bytes).with_meter(meter.clone());
        let deadline = plan.limits.timeout.map(|d| Instant::now() + d);
        let export = plan.entrypoint.export.as_deref();
        let name = &prepared.name;
        match &*prepared.loaded {
            Loaded::Module(module) => {
                let state = P1State { wasi: wasi.build_p1(), limiter };
                let mut store = self.store(state, plan, interrupt, deadline);
                let linker = self.p1_linker()?;
                let exit = {
                    let call = std::pin::pin!(cpu_metered(
                        async {
                            let instance = linker.instantiate_async(&mut store, module).await.map_err(|e| instantiate_error(name, e))?;
                            invoke::core_entry(&mut store, &instance, name, export, &plan.args).await
                        },
                        &meter
                    ));
                    supervise(call, interrupt, deadline).await?
                };
                Ok((exit, store.data_mut().limiter().usage()))
            }
            Loaded::Component(component) => {
                let state = P2State { ctx: wasi.build(), table: ResourceTable::new(), limiter };
                let mut store = self.store(state, plan, interrupt, deadline);
                let linker = self.p2_linker()?;
                let exit = {
                    let call = std::pin::pin!(cpu_metered(invoke::component_entry(&mut store, linker, component, name, export, &plan.args), &meter));
                    supervise(call, interrupt, deadline).await?
                };
                Ok((exit, store.data_mut().limiter().usage()))
            }
        }
    }

    /// A store for one guest, with its memory limiter and epoch guard.
    pub(super) fn store<T: GuestState>(&self, state: T, plan: &RunPlan, interrupt: &Interrupt, deadline: Option<Instant>) -> Store<T> {
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| s.limiter());
        guard_store(&mut store, plan, interrupt, deadline);
        store
    }

    fn p1_linker(&self) -> Result<&wasmtime::Linker<P1State>, RunError> {
        let linker = self.p1.get_or_init(|| {
            let mut l = wasmtime::Linker::new(&self.engine.engine);
            wasmtime_wasi::p1::add_to_linker_async(&mut l, |s: &mut P1State| &mut s.wasi).map_err(|e| format!("{e:#}"))?;
            Ok(l)
        });
        linker.as_ref().map_err(|reason| RunError::Instantiate { name: "WASI preview1 linker".into(), source: wasmtime::Error::msg(reason.clone()) })
    }

    fn p2_linker(&self) -> Result<&wasmtime::component::Linker<P2State>, RunError> {
        let linker = self.p2.get_or_init(|| {
            let mut l = wasmtime::component::Linker::new(&self.engine.engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut l).map_err(|e| format!("{e:#}"))?;
            Ok(l)
        });
        linker.as_ref().map_err(|reason| RunError::Instantiate { name: "WASI preview2 linker".into(), source: wasmtime::Error::msg(reason.clone()) })
    }
}

/// Installs the epoch callback: stop on interrupt or deadline, park when
/// the CPU quota is used up.
fn guard_store<T: Send + 'static>(store: &mut Store<T>, plan: &RunPlan, interrupt: &Interrupt, deadline: Option<Instant>) {
    let interrupt = interrupt.clone();
    let mut throttle = plan.limits.cpu.map(CpuThrottle::new);
    store.epoch_deadline_callback(move |_| {
        if let Some(r) = interrupt.reason() {
            return Err(wasmtime::Error::new(Stopped(r)));
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            interrupt.trigger(Reason::Timeout);
            return Err(wasmtime::Error::new(Stopped(Reason::Timeout)));
        }
        if let Some(park) = throttle.as_mut().and_then(|t| t.on_tick(now)) {
            return Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(park))));
        }
        // Yield to the executor each tick: guests sharing a shim take
        // turns on its threads, and CPU metering sees each slice.
        Ok(UpdateDeadline::Yield(1))
    });
    store.set_epoch_deadline(1);
}

/// Drives the guest's call, racing it against interrupts and the deadline
/// (for guests blocked in a host call, where no epoch check runs).
///
/// `call` is pinned where the caller keeps it: a guest's call holds
/// kilobytes of state for as long as the guest runs, and a future taken by
/// value would be held twice in this one.
async fn supervise(
    call: std::pin::Pin<&mut impl std::future::Future<Output = Result<wasmtime::Result<()>, RunError>>>,
    interrupt: &Interrupt,
    deadline: Option<Instant>,
) -> Result<Exit, RunError> {
    let timer = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(TokioInstant::from_std(d)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = call => {
            let r = r?;
            // No fiber stack was left for the call: not the guest's doing.
            match r {
                Err(e) if is_pool_full(&e) => Err(RunError::PoolFull(e)),
                r => Ok(classify(r)),
            }
        },
        reason = interrupt.triggered() => Ok(Exit::Stopped(reason)),
        () = timer => {
            interrupt.trigger(Reason::Timeout);
            Ok(Exit::Stopped(interrupt.reason().unwrap_or(Reason::Timeout)))
        }
    }
}

pin_project_lite::pin_project! {
    /// [`cpu_metered`]'s future: `fut` itself, held once (an `async fn`
    /// taking it would hold it twice, before and after its first poll).
    pub(super) struct CpuMetered<'m, F> {
        #[pin]
        fut: F,
        meter: &'m Meter,
    }
}

impl<F: std::future::Future> std::future::Future for CpuMetered<'_, F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        fn thread_cpu_ns() -> u64 {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
            t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
        }
        let this = self.project();
        let start = thread_cpu_ns();
        let r = this.fut.poll(cx);
        this.meter.add_cpu(thread_cpu_ns().saturating_sub(start));
        r
    }
}

/// Polls `fut`, adding the calling thread's CPU time of each poll to
/// `meter`: the guest's own running time, wherever the executor runs it.
pub(super) fn cpu_metered<F: std::future::Future>(fut: F, meter: &Meter) -> CpuMetered<'_, F> {
    CpuMetered { fut, meter }
}

fn classify(r: wasmtime::Result<()>) -> Exit {
    match r {
        Ok(()) => Exit::Code(0),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                Exit::Code(exit.0)
            } else if let Some(Stopped(reason)) = e.downcast_ref::<Stopped>() {
                Exit::Stopped(*reason)
            } else {
                Exit::Trap(describe_trap(&e))
            }
        }
    }
}

/// The trap and its wasm backtrace, one cause per line (no host backtrace).
fn describe_trap(e: &wasmtime::Error) -> String {
    // The backtrace is one of the chain's causes; it is shown with its
    // Rust function names demangled.
    let backtrace = e.downcast_ref::<wasmtime::WasmBacktrace>().map(|b| (b.to_string(), describe_backtrace(b)));
    let mut out = String::new();
    for (i, cause) in e.chain().enumerate() {
        if i > 0 {
            out.push_str("\ncaused by: ");
        }
        let text = cause.to_string();
        match &backtrace {
            Some((raw, shown)) if *raw == text => out.push_str(shown),
            _ => out.push_str(&text),
        }
    }
    out
}

/// A wasm backtrace as wasmtime writes it, with the names of Rust functions
/// demangled. (wasmtime's own demangling also reads C++ names, with a
/// demangler of 120 KB that berth's binary leaves out; they are shown as
/// the guest named them.)
fn describe_backtrace(b: &wasmtime::WasmBacktrace) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("error while executing at wasm backtrace:");
    for (i, frame) in b.frames().iter().enumerate() {
        let module = frame.module().name().unwrap_or("<unknown>");
        let _ = write!(out, "\n  {i:>3}: ");
        if let Some(offset) = frame.module_offset() {
            let _ = write!(out, "{offset:#8x} - ");
        }
        let _ = match frame.func_name() {
            Some(name) => match rustc_demangle::try_demangle(name) {
                Ok(demangled) => write!(out, "{module}!{demangled:#}"),
                Err(_) => write!(out, "{module}!{name}"),
            },
            None => write!(out, "{module}!<wasm function {}>", frame.func_index()),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trapping guest's backtrace names its Rust functions as the source
    /// does, not as the linker does.
    #[test]
    fn trap_backtraces_demangle_rust_names() {
        let wat = r#"(module $guest
            (func $_ZN5guest5inner17h0123456789abcdefE unreachable)
            (func $outer (export "run") call $_ZN5guest5inner17h0123456789abcdefE))"#;
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, wat).unwrap();
        let mut store = Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let run = instance.get_typed_func::<(), ()>(&mut store, "run").unwrap();
        let e = run.call(&mut store, ()).unwrap_err();
        let text = describe_trap(&e);
        assert!(text.contains("guest!guest::inner\n") && text.contains("guest!outer"), "{text}");
        assert!(text.contains("unreachable") && !text.contains("_ZN"), "{text}");
    }

    /// A guest's future lives as long as the guest, and an HTTP request's
    /// as long as the request: metering must not hold a second copy of it.
    #[test]
    fn metering_holds_the_future_once() {
        let call = async {
            let state = [7u8; 4096];
            tokio::task::yield_now().await;
            std::hint::black_box(&state);
        };
        let call_size = std::mem::size_of_val(&call);
        let meter = Meter::default();
        let metered = cpu_metered(call, &meter);
        let size = std::mem::size_of_val(&metered);
        assert!(size < call_size + 64, "the metering future is {size} bytes for a {call_size}-byte call");
    }
}
