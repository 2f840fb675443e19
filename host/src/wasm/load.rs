//! Bytes to a runnable module or component: detection (core module,
//! component, precompiled code, `.wat` text), size cap, precompile cache.
use super::cache::{Cache, CacheKey};
use super::code::{Kind, Loaded};
use super::engine::WasmEngine;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

/// berth's one cap on a module's size, checked before compiling: the shim,
/// its workers and `berth serve` use it, and `--max-module-size` (256MiB)
/// defaults to it.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {name}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} is {size} bytes, over the {max}-byte module size limit; raise it with --max-module-size")]
    TooLarge { name: String, size: u64, max: u64 },
    #[error("{name} is not WebAssembly: found {found}; give a .wasm module or component, or .wat text")]
    NotWasm { name: String, found: String },
    #[error("{name} is not valid WebAssembly: {reason}; rebuild it for wasm32-wasip1 or wasm32-wasip2")]
    Invalid { name: String, reason: String },
    #[error("{name}: content has digest {actual}, not the expected {expected}; the blob is corrupt, re-import the image")]
    DigestMismatch { name: String, expected: String, actual: String },
    #[error("{name} is precompiled machine code; pass --allow-precompiled if you trust its origin")]
    PrecompiledNotAllowed { name: String },
    #[error("{name} is precompiled code that this berth cannot load ({reason}); recompile it with `berth compile`")]
    PrecompiledIncompatible { name: String, reason: String },
}

/// How a load went, for logs and benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct LoadInfo {
    pub cache_hit: bool,
}

/// Reads at most `max` bytes of `file`, refusing larger files up front.
pub fn read_capped(mut file: std::fs::File, name: &str, max: u64) -> Result<Vec<u8>, LoadError> {
    let read_err = |source| LoadError::Read { name: name.to_string(), source };
    let size = file.metadata().map_err(read_err)?.len();
    if size > max {
        return Err(LoadError::TooLarge { name: name.to_string(), size, max });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // `take` guards against a file that grows while we read it.
    (&mut file).take(max + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > max {
        return Err(LoadError::TooLarge { name: name.to_string(), size: bytes.len() as u64, max });
    }
    Ok(bytes)
}

/// Classifies binary wasm by its header.
pub fn classify(bytes: &[u8]) -> Option<Kind> {
    match bytes.get(..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(Kind::Module),
        [0, b'a', b's', b'm', _, _, 1, 0] => Some(Kind::Component),
        _ => None,
    }
}

/// Whether the bytes look like WebAssembly text: UTF-8 whose first token
/// (after whitespace and comments) is `(`.
fn looks_like_wat(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(&bytes[..bytes.len().min(4096)]).or_else(|e| std::str::from_utf8(&bytes[..e.valid_up_to()])) else {
        return false;
    };
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(";;") {
            rest = r.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if let Some(r) = rest.strip_prefix("(;") {
            rest = r.split_once(";)").map(|(_, r)| r).unwrap_or("");
        } else {
            return rest.starts_with('(');
        }
    }
}

fn describe(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "an empty file".into();
    }
    if Engine::detect_precompiled(bytes).is_some() {
        return "precompiled wasmtime code (already compiled; run it with --allow-precompiled)".into();
    }
    if bytes.starts_with(b"\x7fELF") {
        return "a native ELF executable".into();
    }
    if bytes.starts_with(b"#!") {
        return "a script (#!)".into();
    }
    if bytes.starts_with(b"\0asm") {
        return format!("a wasm header with unknown version {:02x?}", &bytes[4..bytes.len().min(8)]);
    }
    format!("bytes {:02x?}", &bytes[..bytes.len().min(8)])
}

/// Loads code for `name` from `bytes`, through the cache when it is wasm.
pub fn load(
    engine: &WasmEngine,
    cache: &Cache,
    name: &str,
    bytes: Vec<u8>,
    allow_precompiled: bool,
    known_sha256: Option<&str>,
) -> Result<(Arc<Loaded>, LoadInfo), LoadError> {
    let e = &engine.engine;
    if let Some(pre) = Engine::detect_precompiled(&bytes) {
        if !allow_precompiled {
            return Err(LoadError::PrecompiledNotAllowed { name: name.to_string() });
        }
        let incompatible = |err: wasmtime::Error| LoadError::PrecompiledIncompatible { name: name.to_string(), reason: err.to_string() };
        let kind = match pre {
            wasmtime::Precompiled::Module => Kind::Module,
            wasmtime::Precompiled::Component => Kind::Component,
        };
        // SAFETY: the user vouched for this precompiled code with
        // --allow-precompiled; wasmtime still checks its header, version
        // and engine compatibility.
        let loaded = unsafe { deserialize(e, kind, Trusted::Bytes(&bytes)) }.map_err(incompatible)?;
        return Ok((Arc::new(loaded), LoadInfo { cache_hit: false }));
    }
    let binary_input = classify(&bytes).is_some();
    let (kind, wasm) = to_wasm(name, bytes)?;
    let key = match known_sha256 {
        // The hash of the input is the hash of the wasm only when no text
        // was assembled.
        Some(hex) if binary_input => CacheKey::from_sha256(hex, engine.compatibility_key()),
        _ => CacheKey::new(&wasm, engine.compatibility_key()),
    };
    if let Some(loaded) = cache.live(&key) {
        tracing::debug!(module = name, "code shared with a guest already running");
        return Ok((loaded, LoadInfo { cache_hit: true }));
    }
    if let Some(path) = cache.lookup(&key) {
        let t = Instant::now();
        // SAFETY: cache entries are written only by berth into its own
        // 0700 directory and verified against their checksum above.
        let loaded = unsafe { deserialize(e, kind, Trusted::File(&path)) };
        match loaded {
            Ok(l) => {
                tracing::debug!(module = name, entry = %path.display(), micros = t.elapsed().as_micros() as u64, "loaded precompiled code from cache");
                return Ok((cache.keep(&key, l), LoadInfo { cache_hit: true }));
            }
            Err(err) => tracing::warn!(module = name, error = %err, "unusable cache entry; recompiling"),
        }
    }
    let t = Instant::now();
    let (compiled, in_child) = match engine.compile_in_child.then(|| compile_in_child(engine, kind, &wasm)) {
        Some(Ok(Ok(compiled))) => (compiled, true),
        Some(Ok(Err(reason))) => return Err(LoadError::Invalid { name: name.to_string(), reason }),
        Some(Err(err)) => {
            tracing::warn!(module = name, error = %err, "the compiler process failed; compiling here");
            (compile(engine, name, kind, &wasm)?, false)
        }
        None => (compile(engine, name, kind, &wasm)?, false),
    };
    tracing::info!(module = name, kind = ?kind, millis = t.elapsed().as_millis() as u64, in_child, "compiled (precompile cache miss)");
    // SAFETY: `compiled` was produced a moment ago by this engine, or by
    // its twin in a process of this same executable; wasmtime checks its
    // header and engine compatibility.
    let loaded =
        unsafe { deserialize(e, kind, Trusted::Bytes(&compiled)) }.map_err(|err| LoadError::Invalid { name: name.to_string(), reason: err.to_string() })?;
    cache.store(&key, &compiled);
    Ok((cache.keep(&key, loaded), LoadInfo { cache_hit: false }))
}

/// Compiles `wasm` in a child process ([`compile_main`]) with an engine
/// made like `engine`. `Ok(Err(reason))`: the code is invalid; `Err`: the
/// process itself failed.
fn compile_in_child(engine: &WasmEngine, kind: Kind, wasm: &[u8]) -> std::io::Result<Result<Vec<u8>, String>> {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = crate::helper::command(crate::helper::Verb::Compile)?;
    let kind = match kind {
        Kind::Module => "module",
        Kind::Component => "component",
    };
    cmd.args([kind, &engine.options.pool_instances.to_string(), &engine.options.max_memory_bytes.to_string()]);
    let mut child = crate::process::spawn_piped(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    // The child reads all of its input before it writes anything.
    let written = child.child.stdin.take().expect("piped stdin").write_all(wasm);
    let out = child.wait_with_output()?;
    written?;
    match out.status.code() {
        Some(0) => Ok(Ok(out.stdout)),
        Some(2) => Ok(Err(String::from_utf8_lossy(&out.stderr).trim().to_string())),
        _ => Err(std::io::Error::other(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))),
    }
}

/// The compiler process: `compile module|component POOL_INSTANCES
/// MAX_MEMORY_BYTES`, wasm on stdin, precompiled code on stdout. Exit
/// status 2 (reason on stderr): the wasm is invalid; 1: anything else.
pub fn compile_main(args: &[String]) -> i32 {
    use std::io::{Read as _, Write as _};
    let result = (|| -> Result<Result<Vec<u8>, String>, String> {
        let [kind, instances, memory] = args else { return Err(format!("usage: compile module|component POOL_INSTANCES MAX_MEMORY_BYTES (got {args:?})")) };
        let kind = match kind.as_str() {
            "module" => Kind::Module,
            "component" => Kind::Component,
            other => return Err(format!("unknown kind {other:?}")),
        };
        let opts = super::EngineOptions {
            pool_instances: instances.parse().map_err(|e| format!("pool instances {instances:?}: {e}"))?,
            max_memory_bytes: memory.parse().map_err(|e| format!("max memory {memory:?}: {e}"))?,
        };
        let engine = WasmEngine::new(&opts).map_err(|e| e.to_string())?;
        let mut wasm = Vec::new();
        std::io::stdin().read_to_end(&mut wasm).map_err(|e| format!("reading the wasm: {e}"))?;
        Ok(compile(&engine, "", kind, &wasm).map_err(|e| match e {
            LoadError::Invalid { reason, .. } => reason,
            other => other.to_string(),
        }))
    })();
    match result {
        Ok(Ok(code)) => match std::io::stdout().lock().write_all(&code) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("writing the compiled code: {e}");
                1
            }
        },
        Ok(Err(reason)) => {
            eprintln!("{reason}");
            2
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Precompiled code that berth trusts: its own output, or the user's
/// explicitly allowed input.
enum Trusted<'a> {
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

/// Loads precompiled code.
///
/// # Safety
///
/// The code must come from a Wasmtime compiler: wasmtime checks its
/// header and compatibility but runs its machine code as is.
unsafe fn deserialize(e: &Engine, kind: Kind, code: Trusted<'_>) -> wasmtime::Result<Loaded> {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        Ok(match (kind, code) {
            (Kind::Module, Trusted::Bytes(b)) => Loaded::Module(Module::deserialize(e, b)?),
            (Kind::Module, Trusted::File(p)) => Loaded::Module(Module::deserialize_file(e, p)?),
            (Kind::Component, Trusted::Bytes(b)) => Loaded::Component(Component::deserialize(e, b)?),
            (Kind::Component, Trusted::File(p)) => Loaded::Component(Component::deserialize_file(e, p)?),
        })
    }
}

/// Binary wasm from `bytes`: binary input as is, `.wat` text assembled.
pub fn to_wasm(name: &str, bytes: Vec<u8>) -> Result<(Kind, Vec<u8>), LoadError> {
    if let Some(kind) = classify(&bytes) {
        return Ok((kind, bytes));
    }
    if !looks_like_wat(&bytes) {
        return Err(LoadError::NotWasm { name: name.to_string(), found: describe(&bytes) });
    }
    let invalid = |reason: String| LoadError::Invalid { name: name.to_string(), reason };
    let wasm = wat::parse_bytes(&bytes).map_err(|err| invalid(err.to_string()))?.into_owned();
    let kind = classify(&wasm).ok_or_else(|| invalid("text did not produce a module or component".into()))?;
    Ok((kind, wasm))
}

/// Compiles binary wasm of `kind` to precompiled code for this engine.
fn compile(engine: &WasmEngine, name: &str, kind: Kind, wasm: &[u8]) -> Result<Vec<u8>, LoadError> {
    match kind {
        Kind::Module => engine.engine.precompile_module(wasm),
        Kind::Component => engine.engine.precompile_component(wasm),
    }
    .map_err(|err| LoadError::Invalid { name: name.to_string(), reason: format!("{err:#}") })
}

/// Compiles `bytes` (binary wasm or `.wat`) to precompiled code for this
/// engine (for `berth compile -o`).
pub fn precompile(engine: &WasmEngine, name: &str, bytes: Vec<u8>) -> Result<Vec<u8>, LoadError> {
    let (kind, wasm) = to_wasm(name, bytes)?;
    compile(engine, name, kind, &wasm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kinds() {
        assert_eq!(classify(b"\0asm\x01\0\0\0"), Some(Kind::Module));
        assert_eq!(classify(b"\0asm\x0d\0\x01\0"), Some(Kind::Component));
        assert_eq!(classify(b"\x7fELF\x02\x01\x01\0"), None);
        assert!(looks_like_wat(b"  ;; comment\n (; block ;) (module)"));
        assert!(!looks_like_wat(b"hello"));
        assert!(!looks_like_wat(b"\xff\xfe("));
        assert!(describe(b"\x7fELF....").contains("ELF"));
        assert!(describe(b"#!/bin/sh").contains("script"));
        assert_eq!(describe(b""), "an empty file");
    }

    #[test]
    fn size_cap_is_checked_before_reading() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.wasm");
        std::fs::write(&p, vec![0u8; 2048]).unwrap();
        let e = read_capped(std::fs::File::open(&p).unwrap(), "big.wasm", 1024).unwrap_err();
        assert!(matches!(e, LoadError::TooLarge { size: 2048, max: 1024, .. }), "{e}");
        assert_eq!(read_capped(std::fs::File::open(&p).unwrap(), "big.wasm", 4096).unwrap().len(), 2048);
    }
}
