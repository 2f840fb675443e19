//! In-process micro-benchmark: instantiate-and-run of a loaded module on
//! the shared engine (what every container start pays once the code is
//! cached). Usage: `cargo bench -p berth-host --bench instantiate -- [MODULE]`
//! (default: a no-op module). Guest stdout is not captured; results go to
//! stderr.
use berth_host::plan::{Entrypoint, ModuleSource, RunPlan};
use berth_host::wasm::{cache::Cache, EngineOptions, Interrupt, Runtime, WasmEngine};
use std::time::{Duration, Instant};

const NOOP: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let module = match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let p = dir.path().join("noop.wat");
            std::fs::write(&p, NOOP).unwrap();
            p
        }
    };
    let runtime = Runtime::new(WasmEngine::new(&EngineOptions::single()).unwrap(), Cache::disabled(), 256 << 20);
    let plan = RunPlan {
        name: "bench".into(),
        entrypoint: Entrypoint { source: ModuleSource::File(module.clone()), export: None },
        args: vec!["bench".into()],
        ..Default::default()
    };
    let prepared = runtime.prepare(&plan).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let interrupt = Interrupt::new();
    let mut samples: Vec<Duration> = Vec::new();
    rt.block_on(async {
        for i in 0..2200 {
            let t = Instant::now();
            let (exit, _) = runtime.run(&prepared, &plan, &interrupt).await.unwrap();
            let d = t.elapsed();
            assert_eq!(exit.status(), 0);
            if i >= 200 {
                samples.push(d);
            }
        }
    });
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    eprintln!("instantiate+run {}: n={} median={:.1}us p10={:.1}us p90={:.1}us", module.display(), samples.len(), pct(0.5), pct(0.1), pct(0.9));
}
