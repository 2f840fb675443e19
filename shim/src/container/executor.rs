//! The executor interface: where a container's own process runs. A
//! [`Container`](super::Container) keeps what every container has (its
//! state, its one exit, its rootfs, its exec'd processes) and drives its
//! executor through these few calls, whichever it is:
//! - [`super::engine::EngineGuest`]: a wasm guest on the shim's own engine,
//!   as a task of the shim;
//! - [`super::worker::WorkerGuest`]: a wasm guest of another user, in a
//!   worker process under that user, from the plan made at create;
//! - [`super::native::NativeProcess`]: a Linux namespace container.
//!
//! A wasm executor runs a [`RunPlan`](berth_host::plan::RunPlan) made at
//! create and never reads the bundle again, so a guest can move into a
//! confined process without the container changing.
use super::ExecutorError;
use berth_host::native::Usage;
use berth_host::wasm::Runtime;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::oneshot;

#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// Starts the process. Once this returns it runs (or is about to, for a
    /// guest of the shim's engine, when the future is polled); the future
    /// ends with its exit status.
    async fn start(self: Arc<Self>, runtime: Arc<Runtime>) -> Result<BoxFuture<'static, i32>, ExecutorError>;

    /// Delivers `signal` to the running process (every process of the
    /// container with `all`, where it has several). A wasm guest has no
    /// handlers: any signal but 0 ends it with 128+signal.
    fn signal(&self, signal: u32, all: bool) -> Result<(), ExecutorError>;

    /// Delivers `signal` to a process that was created and never started
    /// (as [`Executor::signal`] does). Returns its exit status when that
    /// ends it.
    async fn signal_created(&self, signal: u32, all: bool) -> Result<Option<i32>, ExecutorError>;

    /// The pid containerd sees for the container: its process, or the
    /// shim's own for a guest run inside the shim.
    fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Every process of the container.
    fn pids(&self) -> Vec<u32> {
        vec![self.pid()]
    }

    /// Memory in use and CPU time used.
    fn usage(&self) -> Usage;

    /// Whether the process ran out of memory.
    fn oom_killed(&self) -> bool {
        false
    }

    /// The state root exec'd processes are made under; `None` where there
    /// are no processes to join (a wasm guest).
    fn exec_root(&self) -> Option<&Path> {
        None
    }

    /// Sets the window size of the process's terminal.
    fn resize(&self, _width: u32, _height: u32) -> Result<(), ExecutorError> {
        Err(ExecutorError::NoTerminal)
    }

    /// Releases what the executor holds on the host, once the process has
    /// ended or will never start.
    async fn release(&self) {}
}

/// The exit status of a wasm guest that gets `signal` before it ran: it
/// ends without running, with 128+signal; signal 0 changes nothing.
pub fn never_ran(signal: u32) -> Option<i32> {
    (signal != 0).then_some(128 + signal as i32)
}

/// The exit of a container's process that the reaper watches (`exit`),
/// logged when it comes.
pub fn reaped(id: &str, pod: &str, exit: oneshot::Receiver<i32>) -> BoxFuture<'static, i32> {
    let (id, pod) = (id.to_string(), pod.to_string());
    async move {
        let status = crate::reaper::status(exit).await;
        tracing::info!(container_id = %id, pod_id = %pod, exit_status = status, "container process exited");
        status
    }
    .boxed()
}
