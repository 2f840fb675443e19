//! The executor of a wasm guest of another user: a worker process under
//! that user ([`berth_host::wasm::worker`]) runs the plan written at
//! create, so the guest never gets more file access than its user has.
use super::executor::{never_ran, reaped, Executor};
use super::ExecutorError;
use berth_host::helper::Verb;
use berth_host::native::Usage;
use berth_host::wasm::Runtime;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct WorkerGuest {
    id: String,
    pod: String,
    stdio: [String; 3],
    /// The file the plan was written to.
    plan: PathBuf,
    /// The worker's pid, once started.
    pid: Mutex<Option<i32>>,
}

impl WorkerGuest {
    pub fn new(id: &str, pod: &str, stdio: [String; 3], plan: PathBuf) -> Self {
        WorkerGuest { id: id.to_string(), pod: pod.to_string(), stdio, plan, pid: Mutex::new(None) }
    }
}

#[async_trait::async_trait]
impl Executor for WorkerGuest {
    async fn start(self: Arc<Self>, _runtime: Arc<Runtime>) -> Result<BoxFuture<'static, i32>, ExecutorError> {
        let mut cmd = crate::helper::command(Verb::Wasm)?;
        cmd.arg(&self.id).arg(&self.plan).args(&self.stdio);
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let (child, exit) = crate::reaper::spawn_watched(&mut cmd).map_err(ExecutorError::Worker)?;
        *self.pid.lock().unwrap() = Some(child);
        Ok(reaped(&self.id, &self.pod, exit))
    }

    fn signal(&self, signal: u32, _all: bool) -> Result<(), ExecutorError> {
        match *self.pid.lock().unwrap() {
            Some(p) => crate::reaper::signal(p, signal as i32).map_err(|source| ExecutorError::Signal { signal, source }),
            None => Ok(()),
        }
    }

    async fn signal_created(&self, signal: u32, _all: bool) -> Result<Option<i32>, ExecutorError> {
        Ok(never_ran(signal))
    }

    fn pid(&self) -> u32 {
        self.pid.lock().unwrap().map(|p| p as u32).unwrap_or_else(std::process::id)
    }

    fn usage(&self) -> Usage {
        self.pid.lock().unwrap().map(Usage::of_process).unwrap_or_default()
    }
}
