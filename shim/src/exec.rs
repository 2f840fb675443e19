//! Processes exec'd into native containers (`ctr task exec`), made by the
//! helper ([`crate::helper`]).
use crate::lifecycle::{Exited, Lifecycle, Status};
use berth_host::helper::Verb;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    pub fn new(bundle: &Path, exec_id: &str, stdio: [String; 3], terminal: bool, process_json: &[u8]) -> Result<Exec, String> {
        // The exec id names a file: keep it to a plain name.
        if exec_id.is_empty() || exec_id.len() > 128 || !exec_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || exec_id.starts_with('.') {
            return Err(format!("exec id {exec_id:?} must be 1-128 characters of letters, digits, '-', '_' or '.'"));
        }
        serde_json::from_slice::<oci_spec::runtime::Process>(process_json)
            .map_err(|e| format!("exec {exec_id}: the process spec is not a valid OCI process: {e}"))?;
        let process = bundle.join(format!("berth-exec-{exec_id}.json"));
        std::fs::write(&process, process_json).map_err(|e| format!("exec {exec_id}: writing {}: {e}", process.display()))?;
        Ok(Exec { id: exec_id.to_string(), stdio, process, pid: Mutex::new(None), life: Lifecycle::default(), terminal, master: Mutex::new(None) })
    }

    pub fn pid(&self) -> u32 {
        self.pid.lock().unwrap().unwrap_or(0) as u32
    }

    /// Runs the process in container `container` (state under `root`).
    pub async fn start(self: &Arc<Self>, container: &str, root: &Path, on_exit: impl FnOnce(Exited) + Send + 'static) -> Result<u32, String> {
        if !self.life.begin() {
            return Err(format!("exec {} was already started", self.id));
        }
        let fail = |e: String| {
            self.life.unbegin();
            format!("exec {} in container {container}: {e}", self.id)
        };
        let mut cmd = crate::helper::command(Verb::Exec).map_err(fail)?;
        cmd.arg(container).arg(&self.process).arg(root).args(&self.stdio);
        let console = match self.terminal {
            true => Some(crate::console::ConsoleSocket::new().map_err(|e| fail(format!("making its console socket: {e}")))?),
            false => None,
        };
        if let Some(c) = &console {
            cmd.arg(c.path());
        }
        let pid = crate::helper::run_for_pid(cmd).await.map_err(fail)?;
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
                    return Err(format!("exec {} in container {container}: {e}", self.id));
                }
            }
        }
        Ok(pid as u32)
    }

    /// Signals the process, if it runs.
    pub fn kill(&self, signal: u32) -> Result<(), String> {
        let pid = *self.pid.lock().unwrap();
        match (self.life.status(), pid) {
            (Status::Running, Some(pid)) => crate::reaper::signal(pid, signal as i32).map_err(|e| format!("exec {}: signal {signal}: {e}", self.id)),
            (Status::Created, _) => {
                self.life.finish(128 + signal);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Sets the window size of its terminal.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), String> {
        match self.master.lock().unwrap().as_ref() {
            Some(m) => crate::console::resize(m, width, height).map_err(|e| format!("exec {}: resizing its terminal: {e}", self.id)),
            None => Err(format!("exec {} has no terminal", self.id)),
        }
    }

    pub fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.process);
    }
}
