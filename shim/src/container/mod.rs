//! One container of the shim: its state (created, running, stopped), its
//! exit, its rootfs and its exec'd processes, and the executor its own
//! process runs on ([`executor`]): a wasm guest on the shim's engine
//! ([`engine`]), a wasm guest of another user in a worker process
//! ([`worker`]), or a native container ([`native`]). Making one is
//! [`create`].
use crate::exec::Exec;
use crate::lifecycle::Lifecycle;
pub use crate::lifecycle::{Exited, Status};
use berth_host::native::Usage;
use berth_host::wasm::Runtime;
use executor::Executor;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

mod create;
mod engine;
mod error;
mod executor;
mod native;
mod worker;
pub use create::CreateRequest;
pub use error::{ContainerError, ExecutorError};

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: [String; 3],
    executor: Arc<dyn Executor>,
    life: Lifecycle,
    /// Processes exec'd into a native container, by exec id.
    execs: Mutex<HashMap<String, Arc<Exec>>>,
    mounted: bool,
    /// The pod (CRI sandbox id) the container belongs to, for logs.
    pub pod: String,
    /// Held through a start and a kill of the container's own process, so
    /// that a kill sent while it starts acts on the started process (as
    /// runc's shim orders them), never on one half started.
    starting: tokio::sync::Mutex<()>,
}

impl Container {
    pub fn status(&self) -> Status {
        self.life.status()
    }

    pub fn exited(&self) -> Option<Exited> {
        self.life.exited()
    }

    /// Starts the container's process on its executor. It is running once
    /// its start is done: until then State says created, and a kill waits
    /// for the start to finish. `on_exit` runs once when it ends, however it
    /// ends (exit, trap, kill, panic).
    pub async fn start(self: &Arc<Self>, runtime: Arc<Runtime>, on_exit: impl FnOnce(Exited) + Send + 'static) -> Result<(), ContainerError> {
        let _starting = self.starting.lock().await;
        match self.status() {
            Status::Created => {}
            Status::Running => return Err(ContainerError::Started { id: self.id.clone() }),
            Status::Stopped => return Err(ContainerError::Exited { id: self.id.clone() }),
        }
        let exit = self.executor.clone().start(runtime).await.map_err(|source| ContainerError::Executor { id: self.id.clone(), source })?;
        // Nothing else moves a created container on while `starting` is held.
        assert!(self.life.begin(), "container {} left created during its start", self.id);
        let c = self.clone();
        tokio::spawn(async move {
            let status = exit.await;
            on_exit(c.life.finish(status as u32));
        });
        Ok(())
    }

    /// The pid containerd sees for the container: a native container's
    /// process, else the shim's own (wasm guests run inside it).
    pub fn pid(&self) -> u32 {
        self.executor.pid()
    }

    /// Every process of the container.
    pub fn pids(&self) -> Vec<u32> {
        self.executor.pids()
    }

    /// Memory in use (bytes) and CPU time used (ns): a wasm guest's linear
    /// memories and tables and its thread CPU time; a native container's
    /// cgroup figures.
    pub fn usage(&self) -> Usage {
        self.executor.usage()
    }

    /// Whether the guest ran out of memory: it trapped after its memory
    /// limit refused it memory.
    pub fn oom_killed(&self) -> bool {
        self.executor.oom_killed()
    }

    /// Delivers a signal. Wasm guests have no handlers: any signal but 0
    /// stops a running guest with status 128+signal; a created one ends
    /// without running. A native container's process (or all its
    /// processes, with `all`) gets the signal. Returns the exit when it
    /// is known here (a created container that ended).
    pub async fn kill(&self, signal: u32, all: bool) -> Result<Option<Exited>, ContainerError> {
        let _starting = self.starting.lock().await;
        let fail = |source| ContainerError::Executor { id: self.id.clone(), source };
        match self.status() {
            Status::Stopped => Ok(None),
            // The exit comes through `start`'s waiter.
            Status::Running => self.executor.signal(signal, all).map(|()| None).map_err(fail),
            Status::Created => Ok(self.executor.signal_created(signal, all).await.map_err(fail)?.map(|status| self.life.finish(status as u32))),
        }
    }

    /// Waits until the container has exited.
    pub async fn wait(&self) -> Exited {
        self.life.wait().await
    }

    /// Sets the window size of the container's terminal.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), ContainerError> {
        self.executor.resize(width, height).map_err(|source| ContainerError::Executor { id: self.id.clone(), source })
    }

    /// Adds an exec process (from containerd's Exec): native containers only.
    pub fn add_exec(&self, exec_id: &str, stdio: [String; 3], terminal: bool, process_json: &[u8]) -> Result<(), ContainerError> {
        if self.executor.exec_root().is_none() {
            return Err(ContainerError::ExecWasm { id: self.id.clone() });
        }
        if self.status() != Status::Running {
            return Err(ContainerError::NotRunning { id: self.id.clone() });
        }
        let mut execs = self.execs.lock().unwrap();
        if execs.contains_key(exec_id) {
            return Err(ContainerError::ExecExists { id: self.id.clone(), exec_id: exec_id.to_string() });
        }
        let e = Exec::new(&self.bundle, exec_id, stdio, terminal, process_json)?;
        execs.insert(exec_id.to_string(), Arc::new(e));
        Ok(())
    }

    pub fn exec(&self, exec_id: &str) -> Option<Arc<Exec>> {
        self.execs.lock().unwrap().get(exec_id).cloned()
    }

    /// Forgets an exec process (its Delete).
    pub fn remove_exec(&self, exec_id: &str) -> Option<Arc<Exec>> {
        let e = self.execs.lock().unwrap().remove(exec_id);
        if let Some(e) = &e {
            e.remove_files();
        }
        e
    }

    /// Runs a created exec process in the container; `on_exit` runs when
    /// it ends. Returns its pid.
    pub async fn start_exec(&self, exec: &Arc<Exec>, on_exit: impl FnOnce(Exited) + Send + 'static) -> Result<u32, ContainerError> {
        let Some(root) = self.executor.exec_root() else { return Err(ContainerError::ExecWasm { id: self.id.clone() }) };
        Ok(exec.start(&self.id, root, on_exit).await?)
    }

    /// Releases what the container holds on the host: a native container's
    /// cgroup and state (after its poststop hooks), its rootfs mount.
    pub async fn release(&self) {
        self.executor.release().await;
        if self.mounted {
            crate::rootfs::unmount(&self.bundle.join("rootfs"));
        }
    }
}
