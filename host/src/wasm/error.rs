//! How running a guest fails, before or instead of an exit of its own.

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] crate::rooted::SourceError),
    #[error(transparent)]
    Load(#[from] super::load::LoadError),
    #[error("granting {host} as {guest}")]
    Preopen {
        host: String,
        guest: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error("opening the guest's stdio {path}")]
    Stdio {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot instantiate {name}")]
    Instantiate {
        name: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error("cannot serve {name}: a core module cannot serve HTTP; build a component that exports wasi:http/incoming-handler (wasm32-wasip2)")]
    CoreModuleHttp { name: String },
    #[error("cannot serve {name}: it does not export wasi:http/incoming-handler")]
    NoHttpHandler {
        name: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error("{name} has no export {export:?}; {hint}")]
    NoExport { name: String, export: String, hint: String },
    #[error("calling {export} in {name}: {reason}")]
    Invoke { name: String, export: String, reason: String },
    #[error("the engine's pool has no free slot for another guest (an instance, or the memories, tables or stack it needs); for the shim, raise BERTH_SHIM_MAX_GUESTS in containerd's environment or spread the containers over more groups")]
    PoolFull(#[source] wasmtime::Error),
}

/// Whether `e` is the pool's concurrency limit.
pub(super) fn is_pool_full(e: &wasmtime::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some())
}

/// Instantiating guest `name` failed: the pool ran out, or the guest's
/// imports or start function.
pub(super) fn instantiate_error(name: &str, e: wasmtime::Error) -> RunError {
    match is_pool_full(&e) {
        true => RunError::PoolFull(e),
        false => RunError::Instantiate { name: name.to_string(), source: e },
    }
}
