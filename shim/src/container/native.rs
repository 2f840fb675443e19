//! The executor of a native container: a Linux namespace container made at
//! create by the single-threaded helper, whose init waits for Start; its
//! state lives under the shim's native state root.
use super::executor::{reaped, Executor};
use super::ExecutorError;
use berth_host::helper::Verb;
use berth_host::native::Usage;
use berth_host::wasm::Runtime;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

pub struct NativeProcess {
    id: String,
    pod: String,
    /// The container's init.
    pid: i32,
    /// The state root it lives under.
    root: PathBuf,
    /// Its exit, from the reaper; taken by whoever waits for it first (a
    /// start, or a kill of the created container).
    exit: Mutex<Option<oneshot::Receiver<i32>>>,
    terminal: Option<std::fs::File>,
}

impl NativeProcess {
    pub fn new(id: &str, pod: &str, pid: i32, root: PathBuf, exit: oneshot::Receiver<i32>, terminal: Option<std::fs::File>) -> Self {
        NativeProcess { id: id.to_string(), pod: pod.to_string(), pid, root, exit: Mutex::new(Some(exit)), terminal }
    }
}

#[async_trait::async_trait]
impl Executor for NativeProcess {
    async fn start(self: Arc<Self>, _runtime: Arc<Runtime>) -> Result<BoxFuture<'static, i32>, ExecutorError> {
        if self.exit.lock().unwrap().is_none() {
            return Err(ExecutorError::ExitTaken);
        }
        crate::helper::native(Verb::Start, &self.root, &self.id).await?;
        let exit = self.exit.lock().unwrap().take().expect("checked above; start and kill are serialized");
        Ok(reaped(&self.id, &self.pod, exit))
    }

    fn signal(&self, signal: u32, all: bool) -> Result<(), ExecutorError> {
        // Never once its process is reaped (its pid may be another's by
        // then); every process of its cgroup is fine to signal.
        let kill = || berth_host::native::kill(&self.root, &self.id, signal as i32, all).map_err(ExecutorError::from);
        match all {
            true => kill(),
            false => crate::reaper::unreaped(self.pid, kill).unwrap_or(Ok(())),
        }
    }

    async fn signal_created(&self, signal: u32, all: bool) -> Result<Option<i32>, ExecutorError> {
        // The init waits for Start with default signal actions: most
        // signals end it. Nobody waits for it yet, so wait here.
        self.signal(signal, all)?;
        let Some(rx) = self.exit.lock().unwrap().take() else { return Ok(None) };
        match tokio::time::timeout(std::time::Duration::from_secs(10), crate::reaper::status(rx)).await {
            Ok(status) => Ok(Some(status)),
            Err(_) => Err(ExecutorError::NoExit(signal)),
        }
    }

    fn pid(&self) -> u32 {
        self.pid as u32
    }

    fn pids(&self) -> Vec<u32> {
        match berth_host::native::pids(&self.root, &self.id) {
            Ok(p) => p.into_iter().map(|p| p as u32).collect(),
            Err(e) => {
                tracing::debug!(container_id = %self.id, error = %e, "listing processes");
                vec![self.pid()]
            }
        }
    }

    fn usage(&self) -> Usage {
        berth_host::native::usage(&self.root, &self.id).unwrap_or_else(|e| {
            tracing::debug!(container_id = %self.id, error = %e, "reading cgroup stats");
            Usage::default()
        })
    }

    fn exec_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn resize(&self, width: u32, height: u32) -> Result<(), ExecutorError> {
        match &self.terminal {
            Some(t) => crate::console::resize(t, width, height).map_err(ExecutorError::Resize),
            None => Err(ExecutorError::NoTerminal),
        }
    }

    async fn release(&self) {
        if let Err(e) = crate::helper::native(Verb::Delete, &self.root, &self.id).await {
            tracing::warn!(container_id = %self.id, error = %berth_host::error::chain(&e), "removing the native container");
        }
    }
}
