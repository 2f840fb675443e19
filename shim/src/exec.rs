//! Processes exec'd into native containers (`ctr task exec`), and the
//! single-threaded helper (this binary re-executed) that creates native
//! containers and exec processes: creating them forks and runs Rust in the
//! children, which the multi-threaded shim must never do itself.
use crate::lifecycle::{Exited, Lifecycle, Status};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// The helper command for `verb` (`create` or `exec`): this binary again,
/// from a read-only bind mount of itself.
pub fn helper(verb: &str) -> Result<Command, String> {
    berth_host::native::helper_command(verb).map_err(|e| format!("preparing the native helper: {e}"))
}

/// Runs the helper off the async threads; the pid it made, or its error.
pub async fn run_helper(cmd: Command) -> Result<i32, String> {
    tokio::task::spawn_blocking(move || berth_host::native::run_helper(cmd)).await.expect("helper task")
}

/// One exec'd process.
pub struct Exec {
    pub id: String,
    pub stdio: [String; 3],
    /// Its OCI process (JSON from containerd), as a file for libcontainer.
    process: PathBuf,
    pid: Mutex<Option<i32>>,
    pub life: Lifecycle,
}

impl Exec {
    /// Records the process containerd asked for; it runs at [`Exec::start`].
    pub fn new(bundle: &Path, exec_id: &str, stdio: [String; 3], process_json: &[u8]) -> Result<Exec, String> {
        // The exec id names a file: keep it to a plain name.
        if exec_id.is_empty() || exec_id.len() > 128 || !exec_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || exec_id.starts_with('.') {
            return Err(format!("exec id {exec_id:?} must be 1-128 characters of letters, digits, '-', '_' or '.'"));
        }
        serde_json::from_slice::<oci_spec::runtime::Process>(process_json).map_err(|e| format!("exec {exec_id}: the process spec is not a valid OCI process: {e}"))?;
        let process = bundle.join(format!("berth-exec-{exec_id}.json"));
        std::fs::write(&process, process_json).map_err(|e| format!("exec {exec_id}: writing {}: {e}", process.display()))?;
        Ok(Exec { id: exec_id.to_string(), stdio, process, pid: Mutex::new(None), life: Lifecycle::default() })
    }

    pub fn pid(&self) -> u32 {
        self.pid.lock().unwrap().unwrap_or(0) as u32
    }

    /// Runs the process in container `container` (state under `root`).
    pub async fn start(self: &Arc<Self>, container: &str, root: &Path, on_exit: impl FnOnce(Exited) + Send + 'static) -> Result<u32, String> {
        if !self.life.begin() {
            return Err(format!("exec {} was already started", self.id));
        }
        let mut cmd = match helper("exec") {
            Ok(c) => c,
            Err(e) => {
                self.life.unbegin();
                return Err(e);
            }
        };
        cmd.arg(container).arg(&self.process).arg(root).args(&self.stdio);
        let pid = match run_helper(cmd).await {
            Ok(p) => p,
            Err(e) => {
                self.life.unbegin();
                return Err(format!("exec {} in container {container}: {e}", self.id));
            }
        };
        *self.pid.lock().unwrap() = Some(pid);
        let rx = crate::reaper::watch(pid);
        let me = self.clone();
        tokio::spawn(async move {
            let status = rx.await.unwrap_or(128 + libc::SIGKILL);
            tracing::info!(exec_id = %me.id, pid, exit_status = status, "exec process exited");
            on_exit(me.life.finish(status as u32));
        });
        Ok(pid as u32)
    }

    /// Signals the process, if it runs.
    pub fn kill(&self, signal: u32) -> Result<(), String> {
        let pid = *self.pid.lock().unwrap();
        match (self.life.status(), pid) {
            (Status::Running, Some(pid)) => {
                // SAFETY: kill(2) of the exec process this shim reaps (it
                // cannot be reused before we have waited for it).
                if unsafe { libc::kill(pid, signal as i32) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        return Err(format!("exec {}: signal {signal}: {e}", self.id));
                    }
                }
                Ok(())
            }
            (Status::Created, _) => {
                self.life.finish(128 + signal);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.process);
    }
}
