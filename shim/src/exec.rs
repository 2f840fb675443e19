//! Processes exec'd into native containers (`ctr task exec`), made by the
//! helper ([`crate::helper`]).
use crate::console::ConsoleError;
use crate::helper::HelperError;
use crate::lifecycle::{Exited, Lifecycle, Status};
use berth_host::helper::Verb;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("exec id {0:?} must be 1-128 characters of letters, digits, '-', '_' or '.'")]
    Id(String),
    #[error("exec {id}: the process spec is not a valid OCI process")]
    Spec {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("exec {id}: writing {}", .path.display())]
    Write {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("exec {id} was already started")]
    Started { id: String },
    #[error("exec {id} in container {container}")]
    Helper {
        id: String,
        container: String,
        #[source]
        source: HelperError,
    },
    #[error("exec {id} in container {container}")]
    Console {
        id: String,
        container: String,
        #[source]
        source: ConsoleError,
    },
    #[error("exec {id}: signal {signal}")]
    Signal {
        id: String,
        signal: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("exec {id}: resizing its terminal")]
    Resize {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exec {id} has no terminal")]
    NoTerminal { id: String },
}

/// One exec'd process.
pub struct Exec {
    pub id: String,
    pub stdio: [String; 3],
    /// Its OCI process (JSON from containerd), as a file for libcontainer.
    process: PathBuf,
    pid: Mutex<Option<i32>>,
    pub life: Lifecycle,
    /// Whether it asked for a terminal, and then the terminal's master.
    terminal: bool,
    master: Mutex<Option<std::fs::File>>,
}

impl Exec {
    /// Records the process containerd asked for; it runs at [`Exec::start`].
    pub fn new(bundle: &Path, exec_id: &str, stdio: [String; 3], terminal: bool, process_json: &[u8]) -> Result<Exec, ExecError> {
        // The exec id names a file: keep it to a plain name.
        if exec_id.is_empty() || exec_id.len() > 128 || !exec_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || exec_id.starts_with('.') {
            return Err(ExecError::Id(exec_id.to_string()));
        }
        let id = exec_id.to_string();
        serde_json::from_slice::<oci_spec::runtime::Process>(process_json).map_err(|source| ExecError::Spec { id: id.clone(), source })?;
        let process = bundle.join(format!("berth-exec-{exec_id}.json"));
        std::fs::write(&process, process_json).map_err(|source| ExecError::Write { id: id.clone(), path: process.clone(), source })?;
        Ok(Exec { id: exec_id.to_string(), stdio, process, pid: Mutex::new(None), life: Lifecycle::default(), terminal, master: Mutex::new(None) })
    }

    pub fn pid(&self) -> u32 {
        self.pid.lock().unwrap().unwrap_or(0) as u32
    }

    /// Runs the process in container `container` (state under `root`).
    pub async fn start(self: &Arc<Self>, container: &str, root: &Path, on_exit: impl FnOnce(Exited) + Send + 'static) -> Result<u32, ExecError> {
        if !self.life.begin() {
            return Err(ExecError::Started { id: self.id.clone() });
        }
        let helper_failed = |source| {
            self.life.unbegin();
            ExecError::Helper { id: self.id.clone(), container: container.to_string(), source }
        };
        let console_failed = |source| ExecError::Console { id: self.id.clone(), container: container.to_string(), source };
        let mut cmd = crate::helper::command(Verb::Exec).map_err(helper_failed)?;
        cmd.arg(container).arg(&self.process).arg(root).args(&self.stdio);
        let console = match self.terminal {
            true => Some(crate::console::ConsoleSocket::new().map_err(|e| {
                self.life.unbegin();
                console_failed(e)
            })?),
            false => None,
        };
        if let Some(c) = &console {
            cmd.arg(c.path());
        }
        let pid = crate::helper::run_for_pid(cmd).await.map_err(helper_failed)?;
        *self.pid.lock().unwrap() = Some(pid);
        let rx = crate::reaper::watch(pid);
        let me = self.clone();
        tokio::spawn(async move {
            let status = crate::reaper::status(rx).await;
            tracing::info!(exec_id = %me.id, pid, exit_status = status, "exec process exited");
            on_exit(me.life.finish(status as u32));
        });
        if let Some(c) = console {
            match crate::console::attach(c, &self.stdio[0], &self.stdio[1]).await {
                Ok(master) => *self.master.lock().unwrap() = Some(master),
                Err(e) => {
                    // Not reachable by its client: end it (the waiter reports it).
                    let _ = self.kill(libc::SIGKILL as u32);
                    return Err(console_failed(e));
                }
            }
        }
        Ok(pid as u32)
    }

    /// Signals the process, if it runs.
    pub fn kill(&self, signal: u32) -> Result<(), ExecError> {
        let pid = *self.pid.lock().unwrap();
        match (self.life.status(), pid) {
            (Status::Running, Some(pid)) => {
                crate::reaper::signal(pid, signal as i32).map_err(|source| ExecError::Signal { id: self.id.clone(), signal, source })
            }
            (Status::Created, _) => {
                self.life.finish(128 + signal);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Sets the window size of its terminal.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), ExecError> {
        match self.master.lock().unwrap().as_ref() {
            Some(m) => crate::console::resize(m, width, height).map_err(|source| ExecError::Resize { id: self.id.clone(), source }),
            None => Err(ExecError::NoTerminal { id: self.id.clone() }),
        }
    }

    pub fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.process);
    }
}
