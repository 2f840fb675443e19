//! The helper (this binary re-executed, [`berth_host::helper`]) as the
//! shim runs it: off the async threads, so that a container whose hooks
//! take their time blocks only its own request.
use berth_host::helper::{self, HelperCommand, Verb};

/// The helper command for `verb`: this binary again, from a read-only bind
/// mount of itself. The verb's arguments follow.
pub fn command(verb: Verb) -> Result<HelperCommand, String> {
    helper::command(verb).map_err(|e| format!("preparing the {} helper: {e}", verb.as_str()))
}

/// Runs the helper to its end; what it printed, or its error.
pub async fn run(cmd: HelperCommand) -> Result<String, String> {
    off_async(move || cmd.run()).await
}

/// [`run`] of a helper that makes a process; its pid.
pub async fn run_for_pid(cmd: HelperCommand) -> Result<i32, String> {
    off_async(move || cmd.run_for_pid()).await
}

/// Runs a blocking helper call on tokio's blocking pool; its error as one
/// line with its causes.
async fn off_async<T: Send + 'static>(f: impl FnOnce() -> Result<T, helper::HelperError> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.expect("helper task").map_err(|e| berth_host::error::chain(&e))
}

/// Runs `verb` (`start` or `delete`) for native container `id` whose state
/// is under `root`.
pub async fn native(verb: Verb, root: &std::path::Path, id: &str) -> Result<(), String> {
    let mut cmd = command(verb)?;
    cmd.arg(id).arg(root);
    run(cmd).await.map(drop)
}
