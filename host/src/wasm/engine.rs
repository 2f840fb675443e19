//! The shared Wasmtime engine: pooling allocator, epoch interruption driven
//! by a ticker thread, component model on.
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. Interrupts, timeouts and CPU quotas act at
/// this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Deep recursion traps once the guest's stack passes this size.
pub const MAX_WASM_STACK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("creating the wasm engine")]
pub struct EngineError(#[source] wasmtime::Error);

/// Sizing of the engine's instance pool.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Concurrent component instances the pool holds (core instances,
    /// memories and tables scale from it).
    pub pool_instances: u32,
    /// Largest linear memory one guest may have.
    pub max_memory_bytes: usize,
}

impl EngineOptions {
    /// One container per process (the `berth` command).
    pub fn single() -> Self {
        EngineOptions { pool_instances: 8, max_memory_bytes: 4 << 30 }
    }
}

/// The process-wide engine. Cheap to clone.
#[derive(Clone)]
pub struct WasmEngine {
    pub(crate) engine: Engine,
    /// See [`WasmEngine::compatibility_key`]; fixed for the engine's life.
    compat_key: String,
    /// What the engine was made with (a compiler process makes its twin).
    pub(crate) options: EngineOptions,
    /// Compile in a child process ([`WasmEngine::compile_in_child`]).
    pub(crate) compile_in_child: bool,
    /// Whether instances come from a pool (else they are allocated on
    /// demand: no pool fitted the address space).
    pooled: bool,
}

fn base_config() -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true)
        .wasm_component_model(true)
        .max_wasm_stack(MAX_WASM_STACK)
        // Source lines from a guest's DWARF would need wasmtime's addr2line
        // feature (200 KB of berth's binary); a trap's backtrace names
        // functions, as `wasmtime run` does by default.
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    c
}

/// The smallest pool worth making; below it the on-demand allocator serves.
const MIN_POOL_INSTANCES: u32 = 8;

/// Memory and table slots the pool holds for each guest it holds (see
/// [`WasmEngine::guests_fitting`] for guests that need more).
const MEMORIES_PER_GUEST: u32 = 2;
const TABLES_PER_GUEST: u32 = 4;

fn pooled_config(instances: u32, max_memory_bytes: usize) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    // The pool keeps bookkeeping for every memory and table slot from the
    // start (about 110 and 60 bytes each), whether used or not. A
    // component from a guest toolchain (Rust, JS, Python, Go) defines one
    // memory and one or two tables; a core module one of each. Twice and
    // four times that (wasmtime's defaults are once) leave room for more
    // without paying for eight tables a guest: a pool that runs out of
    // them refuses the next guest as a full pool does. Core instance slots
    // cost nothing until used.
    pool.total_component_instances(instances)
        .total_core_instances(instances * 8)
        .total_memories(instances * MEMORIES_PER_GUEST)
        .total_tables(instances * TABLES_PER_GUEST)
        .total_stacks(instances)
        // A store has at most one GC heap; wasmtime's default (1000) would
        // hold bookkeeping for more than the pool can run.
        .total_gc_heaps(instances)
        .max_memory_size(max_memory_bytes);
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

impl WasmEngine {
    /// Creates the engine and starts its epoch ticker.
    ///
    /// The pool reserves address space up front (a few GiB per memory
    /// slot). Where that does not fit, as on boards whose kernels give a
    /// process 39 bits of address space or under a low `ulimit -v`, the
    /// pool shrinks by a quarter at a time until it does (down to
    /// [`MIN_POOL_INSTANCES`]), logged at info with the size made; below
    /// that the on-demand allocator serves, with a warning. [`WasmEngine::pool_instances`] tells what was made.
    pub fn new(opts: &EngineOptions) -> Result<Self, EngineError> {
        let asked = opts.pool_instances.max(1);
        let mut n = asked;
        let (engine, made, pooled) = loop {
            match Engine::new(&pooled_config(n, opts.max_memory_bytes)) {
                Ok(e) => break (e, n, true),
                Err(_) if n > MIN_POOL_INSTANCES => n = (n * 3 / 4).max(MIN_POOL_INSTANCES),
                Err(err) => {
                    tracing::warn!(error = %err, pool_instances = n, "no instance pool fits this process's address space; using on-demand allocation");
                    break (Engine::new(&base_config()).map_err(EngineError)?, asked, false);
                }
            }
        };
        if made < asked {
            // Expected on such a machine at every start: not a warning.
            tracing::info!(
                asked,
                pool_instances = made,
                "the instance pool asked for does not fit this process's address space; made a smaller one, which bounds how many guests run at once"
            );
        }
        start_ticker(&engine);
        let compat_key = compatibility_key(&engine);
        let options = EngineOptions { pool_instances: made, ..opts.clone() };
        Ok(WasmEngine { engine, compat_key, options, compile_in_child: false, pooled })
    }

    /// The Wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether instances come from a pool: false where none fitted the
    /// address space (see [`WasmEngine::new`]).
    pub fn pooled(&self) -> bool {
        self.pooled
    }

    /// How many guests that each define `memories` memories and `tables`
    /// tables run at once: [`WasmEngine::pool_instances`], or fewer where
    /// such guests would use up the pool's memory or table slots first.
    pub fn guests_fitting(&self, memories: u32, tables: u32) -> u32 {
        let instances = self.pool_instances();
        if !self.pooled {
            return instances;
        }
        let by = |slots_per_guest: u32, each: u32| (instances * slots_per_guest).checked_div(each).unwrap_or(u32::MAX);
        instances.min(by(MEMORIES_PER_GUEST, memories)).min(by(TABLES_PER_GUEST, tables))
    }

    /// How many instances run at once: the pool made (which may be smaller
    /// than asked, see [`WasmEngine::new`]), or what was asked for when
    /// instances are allocated on demand.
    pub fn pool_instances(&self) -> u32 {
        self.options.pool_instances
    }

    /// Compiles modules (on a cache miss) in a short-lived child process,
    /// this executable re-run as `__berth-native compile`, instead of in
    /// this one: a long-lived process (the shim) then never holds the
    /// compiler's code pages or the heap a compilation churns through.
    pub fn compile_in_child(mut self) -> Self {
        self.compile_in_child = true;
        self
    }

    /// A hex digest of everything that makes precompiled code compatible
    /// with this engine (wasmtime version, compiler flags, config).
    pub fn compatibility_key(&self) -> &str {
        &self.compat_key
    }
}

fn compatibility_key(engine: &Engine) -> String {
    use sha2::Digest;
    use std::hash::Hash;
    let mut h = Sha256Hasher(sha2::Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..8])
}

/// Feeds `Hash` output into SHA-256 so the key is stable across processes.
struct Sha256Hasher(sha2::Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only finalized through the digest")
    }
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
}

/// Engines whose epoch a thread of the process advances (see
/// [`tick_epochs_here`]), and whether one does.
struct Ticked {
    here: bool,
    stop: bool,
    engines: Vec<wasmtime::EngineWeak>,
}

static TICKED: std::sync::Mutex<Ticked> = std::sync::Mutex::new(Ticked { here: false, stop: false, engines: Vec::new() });
static TICKED_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

fn ticked() -> std::sync::MutexGuard<'static, Ticked> {
    TICKED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the calling thread advance the epoch of every engine made from
/// now on, every [`EPOCH_TICK`], instead of a thread of each engine's own.
/// `start` gets the guard that ends it: this returns once the guard is
/// dropped (from any thread). The thread sleeps while no engine exists.
///
/// A thread that would otherwise only wait (the shim server's main
/// thread) saves the process a thread: its stack's pages (~20 KiB) and
/// the kernel's task, in every pod's shim.
pub fn tick_epochs_here<T>(start: impl FnOnce(TickerStop) -> T) -> T {
    ticked().here = true;
    let started = start(TickerStop(()));
    let mut t = ticked();
    while !t.stop {
        if t.engines.is_empty() {
            t = TICKED_CHANGED.wait(t).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        drop(t);
        std::thread::sleep(EPOCH_TICK);
        t = ticked();
        t.engines.retain(|weak| weak.upgrade().map(|e| e.increment_epoch()).is_some());
    }
    // Engines made from now on tick themselves; those made before are
    // ticked no more (the process is ending).
    t.here = false;
    t.stop = false;
    started
}

/// Ends [`tick_epochs_here`] when dropped.
pub struct TickerStop(());

impl Drop for TickerStop {
    fn drop(&mut self) {
        ticked().stop = true;
        TICKED_CHANGED.notify_all();
    }
}

/// Bumps the epoch every [`EPOCH_TICK`] until the engine is dropped: on a
/// thread of the engine's own, or on the thread [`tick_epochs_here`] made
/// the ticker.
fn start_ticker(engine: &Engine) {
    {
        let mut t = ticked();
        if t.here {
            t.engines.push(engine.weak());
            TICKED_CHANGED.notify_all();
            return;
        }
    }
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("berth-epoch".into()).spawn(move || loop {
        std::thread::sleep(EPOCH_TICK);
        match weak.upgrade() {
            Some(e) => e.increment_epoch(),
            None => break,
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the epoch ticker; timeouts and signals will not stop busy guests");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guests that need more memories or tables than the pool holds a
    /// guest fit fewer at once; `berth serve` sizes its request slots by it.
    #[test]
    fn guests_needing_more_slots_fit_fewer() {
        let engine = WasmEngine::new(&EngineOptions::single()).unwrap();
        assert!(engine.pooled());
        let n = engine.pool_instances();
        assert_eq!(engine.guests_fitting(0, 0), n);
        assert_eq!(engine.guests_fitting(MEMORIES_PER_GUEST, TABLES_PER_GUEST), n);
        assert_eq!(engine.guests_fitting(MEMORIES_PER_GUEST + 1, 1), n * MEMORIES_PER_GUEST / (MEMORIES_PER_GUEST + 1));
        assert_eq!(engine.guests_fitting(1, TABLES_PER_GUEST * 2), n / 2);
    }
}
