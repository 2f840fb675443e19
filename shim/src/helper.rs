//! The helper (this binary re-executed, [`berth_host::helper`]) as the
//! shim runs it: off the async threads, so that a container whose hooks
//! take their time blocks only its own request.
use berth_host::helper::{self, HelperCommand, Verb};

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("preparing the {verb} helper")]
    Prepare {
        verb: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] helper::HelperError),
}

/// The helper command for `verb`: this binary again, from a read-only bind
/// mount of itself. The verb's arguments follow.
pub fn command(verb: Verb) -> Result<HelperCommand, HelperError> {
    helper::command(verb).map_err(|source| HelperError::Prepare { verb: verb.as_str(), source })
}

/// Runs the helper to its end; what it printed, or its error.
pub async fn run(cmd: HelperCommand) -> Result<String, HelperError> {
    off_async(move || cmd.run()).await
}

/// [`run`] of a helper that makes a process; its pid.
pub async fn run_for_pid(cmd: HelperCommand) -> Result<i32, HelperError> {
    off_async(move || cmd.run_for_pid()).await
}

/// Runs a blocking helper call on tokio's blocking pool.
async fn off_async<T: Send + 'static>(f: impl FnOnce() -> Result<T, helper::HelperError> + Send + 'static) -> Result<T, HelperError> {
    Ok(tokio::task::spawn_blocking(f).await.expect("helper task")?)
}

/// Runs `verb` (`start` or `delete`) for native container `id` whose state
/// is under `root`.
pub async fn native(verb: Verb, root: &std::path::Path, id: &str) -> Result<(), HelperError> {
    let mut cmd = command(verb)?;
    cmd.arg(id).arg(root);
    run(cmd).await.map(drop)
}
