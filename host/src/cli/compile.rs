//! `berth compile`: fill the precompile cache, or write a `.cwasm`.
use super::size::parse_size;
use crate::plan::{Entrypoint, ModuleSource, RunPlan};
use crate::wasm::{cache::Cache, load, EngineOptions, Runtime, WasmEngine};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// Write precompiled code here instead of the cache (one input only).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Refuse modules larger than this.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    max_module_size: String,
    /// Modules or components (.wasm or .wat).
    #[arg(required = true, value_name = "MODULE")]
    modules: Vec<PathBuf>,
}

pub fn compile(args: CompileArgs) -> Result<i32> {
    let max = parse_size(&args.max_module_size).context("--max-module-size")?;
    let engine = WasmEngine::new(&EngineOptions::single())?;
    let cache_dir = crate::paths::cache_dir();
    let runtime = Runtime::new(engine, Cache::new(cache_dir.clone()), max);
    if let Some(out) = &args.output {
        let [input] = args.modules.as_slice() else {
            bail!("-o takes exactly one module; {} given", args.modules.len());
        };
        let (name, bytes) = runtime.read_source(&ModuleSource::File(input.clone()))?;
        let code = load::precompile(runtime.engine(), &name, bytes)?;
        std::fs::write(out, code).with_context(|| format!("writing {}", out.display()))?;
        println!("{} -> {}", name, out.display());
        return Ok(0);
    }
    for m in &args.modules {
        let plan = RunPlan { entrypoint: Entrypoint { source: ModuleSource::File(m.clone()), export: None }, ..Default::default() };
        let prepared = runtime.prepare(&plan)?;
        let state = if prepared.info.cache_hit { "already cached" } else { "compiled" };
        println!("{}: {state} ({:?}) in {}", m.display(), prepared.kind(), cache_dir.display());
    }
    Ok(0)
}
