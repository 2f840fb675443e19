//! How running a guest fails, before or instead of an exit of its own.

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] crate::rooted::SourceError),
    #[error(transparent)]
    Load(#[from] super::load::LoadError),
    #[error("granting {host} as {guest}: {reason}")]
    Preopen { host: String, guest: String, reason: String },
    #[error("opening the guest's stdio {path}: {reason}")]
    Stdio { path: String, reason: String },
    #[error("cannot instantiate {name}: {reason}")]
    Instantiate { name: String, reason: String },
    #[error("{name} has no export {export:?}; {hint}")]
    NoExport { name: String, export: String, hint: String },
    #[error("calling {export} in {name}: {reason}")]
    Invoke { name: String, export: String, reason: String },
    #[error("{reason}: this process already runs as many guests as its engine's pool holds; for the shim, raise BERTH_SHIM_MAX_GUESTS in containerd's environment or spread the containers over more groups")]
    PoolFull { reason: String },
}

/// The pool limit `e` ran into, if it is one.
pub(super) fn pool_full(e: &wasmtime::Error) -> Option<RunError> {
    let limit = e.chain().find_map(|c| c.downcast_ref::<wasmtime::PoolConcurrencyLimitError>())?;
    Some(RunError::PoolFull { reason: limit.to_string() })
}

/// Instantiating guest `name` failed: the pool ran out, or the guest's
/// imports or start function.
pub(super) fn instantiate_error(name: &str, e: wasmtime::Error) -> RunError {
    pool_full(&e).unwrap_or_else(|| RunError::Instantiate { name: name.to_string(), reason: format!("{e:#}") })
}
