//! One container of the shim: a wasm guest run (or served) on the shim's
//! engine, a wasm guest of another user in a worker process, or a native
//! container; its state (created, running, stopped), its exit, and its
//! exec'd processes. Making one is [`create`]; running a wasm guest on the
//! shim's engine is [`guest`].
use crate::exec::Exec;
use crate::lifecycle::Lifecycle;
pub use crate::lifecycle::{Exited, Status};
use berth_host::helper::Verb;
use berth_host::native::Usage;
use berth_host::plan::RunPlan;
use berth_host::wasm::http::HttpService;
use berth_host::wasm::netns::NetNamespace;
use berth_host::wasm::{server, Interrupt, Meter, Prepared, Reason, Runtime};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

mod create;
mod guest;
pub use create::CreateRequest;

/// What a started container does.
enum Job {
    /// Runs its command (`_start` / `wasi:cli/run`) to an exit.
    Run { plan: Box<RunPlan>, prepared: Arc<Prepared> },
    /// Serves its `wasi:http/incoming-handler` until stopped: SIGTERM (any
    /// signal but SIGKILL) drains requests in flight and exits 0; SIGKILL
    /// ends it at once (137).
    Serve { service: Arc<HttpService>, limits: server::Limits, listener: Mutex<Option<std::net::TcpListener>>, stop: watch::Sender<u32> },
    /// A wasm container whose `process.user` is not root: run at Start by a
    /// worker process under that user ([`berth_host::wasm::worker`]), from
    /// the plan made here (`plan`: the file it was written to).
    Worker { pid: Mutex<Option<i32>>, plan: PathBuf },
    /// A Linux namespace container (libcontainer) whose process is `pid`;
    /// its state lives under `root`.
    Native { pid: i32, root: PathBuf, exit: Mutex<Option<tokio::sync::oneshot::Receiver<i32>>>, terminal: Option<std::fs::File> },
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub stdio: [String; 3],
    job: Job,
    interrupt: Interrupt,
    pub meter: Arc<Meter>,
    life: Lifecycle,
    /// Processes exec'd into a native container, by exec id.
    execs: Mutex<HashMap<String, Arc<Exec>>>,
    mounted: bool,
    /// Our own handle on the stderr FIFO, held until the guest has exited
    /// so that runtime messages (a trap) reach the reader before its EOF.
    stderr: Mutex<Option<std::fs::File>>,
    /// The pod (CRI sandbox id) the container belongs to, for logs.
    pub pod: String,
    /// The runtime of the network namespace a guest run here joins (its
    /// spec's, e.g. the pod's); `None`: the shim's own.
    netns: Option<Arc<NetNamespace>>,
    /// Set when the guest trapped after its memory limit refused it
    /// memory: it ran out of memory, as the kernel's OOM killer reports.
    oom: std::sync::atomic::AtomicBool,
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

    /// Starts the guest on the shim's executor (a native container's
    /// process in its namespaces). `on_exit` runs once when it ends, however
    /// it ends (exit, trap, kill, panic).
    pub async fn start(self: &Arc<Self>, runtime: Arc<Runtime>, on_exit: impl FnOnce(Exited) + Send + 'static) -> Result<(), String> {
        let _starting = self.starting.lock().await;
        if let Job::Native { root, exit, .. } = &self.job {
            // Running only once its process runs: until then State says
            // created, and a kill waits for this start to finish.
            match self.status() {
                Status::Created => {}
                Status::Running => return Err(format!("container {} was already started", self.id)),
                Status::Stopped => return Err(format!("container {} has already exited (it was killed before it started)", self.id)),
            }
            crate::helper::native(Verb::Start, root, &self.id).await?;
            if !self.life.begin() {
                return Err(format!("container {} was already started", self.id));
            }
            // None: the watch was taken by a Kill of the created
            // container, which saw its end; that exit stands.
            if let Some(rx) = exit.lock().unwrap().take() {
                self.wait_process(rx, on_exit);
            }
            return Ok(());
        }
        if !self.life.begin() {
            return Err(format!("container {} was already started", self.id));
        }
        if let Job::Worker { pid, plan } = &self.job {
            let spawned = crate::helper::command(Verb::Wasm).and_then(|mut cmd| {
                cmd.arg(&self.id).arg(plan).args(&self.stdio);
                cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
                crate::reaper::spawn_watched(&mut cmd).map_err(|e| format!("starting its worker: {e}"))
            });
            let (child, exit) = match spawned {
                Ok(c) => c,
                Err(e) => {
                    self.life.unbegin();
                    return Err(format!("container {}: {e}", self.id));
                }
            };
            *pid.lock().unwrap() = Some(child);
            self.wait_process(exit, on_exit);
            return Ok(());
        }
        let c = self.clone();
        let guest = async move {
            match &c.job {
                Job::Native { .. } | Job::Worker { .. } => unreachable!("started above"),
                Job::Run { plan, prepared } => c.run(runtime, plan, prepared).await,
                Job::Serve { service, limits, listener, stop } => {
                    let listener = listener.lock().unwrap().take();
                    c.serve(service.clone(), listener, *limits, stop).await
                }
            }
        };
        let (c, netns) = (self.clone(), self.netns.clone());
        tokio::spawn(async move {
            // A guest of a pod runs on its network namespace's runtime, so
            // that every socket it makes is the pod's.
            let status = match netns {
                Some(ns) => ns.handle().spawn(guest).await.unwrap_or_else(|e| {
                    tracing::error!(container_id = %c.id, pod_id = %c.pod, error = %e, "the guest's task failed");
                    134
                }),
                None => guest.await,
            };
            let e = c.finish(status as u32);
            on_exit(e);
        });
        Ok(())
    }

    /// Records the exit of the container's process (native or worker) when
    /// the reaper sees it, then runs `on_exit`.
    fn wait_process(self: &Arc<Self>, rx: tokio::sync::oneshot::Receiver<i32>, on_exit: impl FnOnce(Exited) + Send + 'static) {
        let c = self.clone();
        tokio::spawn(async move {
            let status = crate::reaper::status(rx).await;
            tracing::info!(container_id = %c.id, pod_id = %c.pod, exit_status = status, "container process exited");
            on_exit(c.finish(status as u32));
        });
    }

    /// The pid containerd sees for the container: a native container's
    /// process, else the shim's own (wasm guests run inside it).
    pub fn pid(&self) -> u32 {
        match &self.job {
            Job::Native { pid, .. } => *pid as u32,
            Job::Worker { pid, .. } => pid.lock().unwrap().map(|p| p as u32).unwrap_or_else(std::process::id),
            _ => std::process::id(),
        }
    }

    /// Every process of the container.
    pub fn pids(&self) -> Vec<u32> {
        match &self.job {
            Job::Native { root, .. } => match berth_host::native::pids(root, &self.id) {
                Ok(p) => p.into_iter().map(|p| p as u32).collect(),
                Err(e) => {
                    tracing::debug!(container_id = %self.id, error = %e, "listing processes");
                    vec![self.pid()]
                }
            },
            _ => vec![self.pid()],
        }
    }

    /// Memory in use (bytes) and CPU time used (ns): a wasm guest's linear
    /// memories and tables and its thread CPU time; a native container's
    /// cgroup figures.
    pub fn usage(&self) -> Usage {
        match &self.job {
            Job::Native { root, .. } => berth_host::native::usage(root, &self.id).unwrap_or_else(|e| {
                tracing::debug!(container_id = %self.id, error = %e, "reading cgroup stats");
                Usage::default()
            }),
            Job::Worker { pid, .. } => pid.lock().unwrap().map(Usage::of_process).unwrap_or_default(),
            _ => {
                let cpu = self.meter.cpu_ns();
                // Guests run on the shim's threads, in user mode.
                Usage { memory: self.meter.memory_bytes(), cpu_ns: cpu, cpu_user_ns: cpu, ..Default::default() }
            }
        }
    }

    /// Whether the guest ran out of memory: it trapped after its memory
    /// limit refused it memory.
    pub fn oom_killed(&self) -> bool {
        self.oom.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the exit once; later calls return the first one.
    fn finish(&self, status: u32) -> Exited {
        let e = self.life.finish(status);
        self.stderr.lock().unwrap().take();
        e
    }

    /// A message on the container's stderr (as a runtime error would be).
    fn tell_stderr(&self, msg: &str) {
        use std::io::Write;
        if let Some(f) = self.stderr.lock().unwrap().as_mut() {
            let _ = f.write_all(msg.as_bytes());
        }
    }

    /// Delivers a signal. Wasm guests have no handlers: any signal but 0
    /// stops a running guest with status 128+signal; a created one ends
    /// without running. A native container's process (or all its
    /// processes, with `all`) gets the signal. Returns the exit when it
    /// is known here (a created container that ended).
    pub async fn kill(&self, signal: u32, all: bool) -> Result<Option<Exited>, String> {
        let _starting = self.starting.lock().await;
        if let Job::Native { root, exit, pid, .. } = &self.job {
            if self.status() == Status::Stopped {
                return Ok(None);
            }
            // Never once its process is reaped (its pid may be another's by
            // then); every process of its cgroup is fine to signal.
            let kill = || berth_host::native::kill(root, &self.id, signal as i32, all).map_err(|e| e.to_string());
            match all {
                true => kill()?,
                false => crate::reaper::unreaped(*pid, kill).unwrap_or(Ok(()))?,
            }
            // Running: the exit comes through `start`'s waiter. Created:
            // nobody waits yet, so wait here (the process waits for Start
            // with default signal actions: most signals end it).
            let rx = if self.status() == Status::Created { exit.lock().unwrap().take() } else { None };
            let Some(rx) = rx else { return Ok(None) };
            return match tokio::time::timeout(std::time::Duration::from_secs(10), crate::reaper::status(rx)).await {
                Ok(status) => Ok(Some(self.finish(status as u32))),
                Err(_) => Err(format!("container {}: its process did not exit after signal {signal}", self.id)),
            };
        }
        if let Job::Worker { pid, .. } = &self.job {
            if let (Status::Running, Some(p)) = (self.status(), *pid.lock().unwrap()) {
                crate::reaper::signal(p, signal as i32).map_err(|e| format!("container {}: signal {signal}: {e}", self.id))?;
                return Ok(None);
            }
        }
        Ok(self.kill_wasm(signal))
    }

    fn kill_wasm(&self, signal: u32) -> Option<Exited> {
        if signal == 0 {
            return None;
        }
        let created = self.life.with_status(|s| match *s {
            Status::Running => {
                match &self.job {
                    Job::Run { .. } => self.interrupt.trigger(Reason::Signal(signal as i32)),
                    Job::Serve { stop, .. } => {
                        stop.send_modify(|s| {
                            if *s == 0 || signal == libc::SIGKILL as u32 {
                                *s = signal
                            }
                        });
                    }
                    Job::Native { .. } | Job::Worker { .. } => unreachable!("handled in kill"),
                }
                false
            }
            Status::Created => {
                *s = Status::Stopped;
                true
            }
            Status::Stopped => false,
        });
        created.then(|| self.finish(128 + signal))
    }

    /// Waits until the container has exited.
    pub async fn wait(&self) -> Exited {
        self.life.wait().await
    }

    /// Sets the window size of the container's terminal.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), String> {
        match &self.job {
            Job::Native { terminal: Some(t), .. } => {
                crate::console::resize(t, width, height).map_err(|e| format!("container {}: resizing its terminal: {e}", self.id))
            }
            _ => Err(format!("container {} has no terminal", self.id)),
        }
    }

    /// Adds an exec process (from containerd's Exec): native containers only.
    pub fn add_exec(&self, exec_id: &str, stdio: [String; 3], terminal: bool, process_json: &[u8]) -> Result<(), String> {
        if !matches!(self.job, Job::Native { .. }) {
            return Err(format!("container {}: exec is not supported for wasm containers (a wasm guest has no processes to join)", self.id));
        }
        if self.status() != Status::Running {
            return Err(format!("container {} is not running; exec needs a running container", self.id));
        }
        let mut execs = self.execs.lock().unwrap();
        if execs.contains_key(exec_id) {
            return Err(format!("exec {exec_id} already exists in container {}", self.id));
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
    pub async fn start_exec(&self, exec: &Arc<Exec>, on_exit: impl FnOnce(Exited) + Send + 'static) -> Result<u32, String> {
        let Job::Native { root, .. } = &self.job else { return Err(format!("container {}: exec is not supported for wasm containers", self.id)) };
        exec.start(&self.id, root, on_exit).await
    }

    /// Releases what the container holds on the host: a native container's
    /// cgroup and state (after its poststop hooks), its rootfs mount.
    pub async fn release(&self) {
        if let Job::Native { root, .. } = &self.job {
            if let Err(e) = crate::helper::native(Verb::Delete, root, &self.id).await {
                tracing::warn!(container_id = %self.id, error = %e, "removing the native container");
            }
        }
        if self.mounted {
            crate::rootfs::unmount(&self.bundle.join("rootfs"));
        }
    }
}
