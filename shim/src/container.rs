//! One container of the shim: a wasm guest run (or served) on the shim's
//! engine, a wasm guest of another user in a worker process, or a native
//! container; its state (created, running, stopped), its exit, and its
//! exec'd processes.
use crate::exec::Exec;
use crate::lifecycle::Lifecycle;
pub use crate::lifecycle::{Exited, Status};
use berth_host::containerd;
use berth_host::helper::Verb;
use berth_host::native::Usage;
use berth_host::oci::annotations::DEFAULT_HTTP_ADDR;
use berth_host::oci::entry::EntryError;
use berth_host::oci::image::{build, store::Store};
use berth_host::oci::{bundle, detect};
use berth_host::plan::{ModuleSource, RunPlan, Stdio};
use berth_host::wasm::http::{self, HttpService};
use berth_host::wasm::netns::NetNamespace;
use berth_host::wasm::worker;
use berth_host::wasm::{server, Interrupt, Meter, Prepared, Reason, Runtime};
use containerd_shim_protos::api::Mount;
use futures::FutureExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("container {id}: terminals (-t) are not supported for wasm containers; run without a tty")]
    Terminal { id: String },
    #[error("container {id}: mounting its rootfs ({fs_type} from {source_path}) at {target}: {reason}")]
    Mount { id: String, fs_type: String, source_path: String, target: String, reason: String },
    #[error("container {id}: {source}")]
    Bundle {
        id: String,
        #[source]
        source: bundle::BundleError,
    },
    #[error("container {id}: process.user is {uid}:{gid}, but wasi:http components are served inside the shim, which cannot hold them to another user's file access; serve it as 0:0 (the guest still sees only its rootfs and mounts)")]
    User { id: String, uid: u32, gid: u32 },
    #[error(
        "container {id}: serving wasi:http on {addr}: {reason}; choose another address with the BERTH_HTTP_ADDR env or the berth.dev/http-listen annotation"
    )]
    Listen { id: String, addr: std::net::SocketAddr, reason: String },
    #[error("container {id}: {missing}; berth could not read its image from containerd as a wasm artifact: {reason}")]
    Artifact { id: String, missing: String, reason: String },
    #[error("{0}")]
    Native(String),
    #[error("container {id}: {source}")]
    Netns {
        id: String,
        #[source]
        source: berth_host::wasm::netns::NetnsError,
    },
    #[error("container {id}: writing its worker's plan {path}")]
    WorkerPlan {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id}: {source}")]
    Load {
        id: String,
        #[source]
        source: berth_host::wasm::RunError,
    },
}

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

/// Requests one served component handles at once unless its
/// `berth.dev/http-max-concurrency` says otherwise: a quarter of the shim's
/// default pool, so that one busy component leaves room for the other
/// guests of its group.
const HTTP_SLOTS: usize = 64;

/// Whether a bundle error says `args[0]` is not in the rootfs.
fn entry_missing(e: &bundle::BundleError) -> bool {
    matches!(e, bundle::BundleError::Entry(EntryError::NotFound { .. }))
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
}

pub struct CreateRequest<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a [Mount],
    pub terminal: bool,
    pub stdio: [String; 3],
    /// Where native containers' state is kept
    /// ([`berth_host::native::state_root_for`]).
    pub native_root: PathBuf,
    /// containerd's gRPC socket and the container's namespace there.
    pub containerd: &'a Path,
    pub namespace: &'a str,
}

impl Container {
    /// Mounts the rootfs, builds the plan from `config.json` and compiles
    /// (or loads from cache) the guest, so errors surface at create time.
    pub async fn create(runtime: &Arc<Runtime>, req: CreateRequest<'_>) -> Result<Container, CreateError> {
        let id = req.id.to_string();
        let rootfs = req.bundle.join("rootfs");
        let mut mounted = false;
        for m in req.rootfs {
            containerd_shim::asynchronous::util::mount_rootfs(m, &rootfs).await.map_err(|e| CreateError::Mount {
                id: id.clone(),
                fs_type: m.type_.clone(),
                source_path: m.source.clone(),
                target: rootfs.display().to_string(),
                reason: e.to_string(),
            })?;
            mounted = true;
        }
        let undo = |e| {
            if mounted {
                crate::rootfs::unmount(&rootfs);
            }
            e
        };
        let spec = bundle::load_spec(req.bundle).map_err(|source| undo(CreateError::Bundle { id: id.clone(), source }))?;
        let pod = spec.annotations().as_ref().and_then(|a| a.get(crate::grouping::SANDBOX_ID)).cloned().unwrap_or_default();
        let (kind, module) = match detect::detect(req.bundle, &spec) {
            Err(e) if entry_missing(&e) => {
                let (image, module) = Self::artifact(&req, e).await.map_err(undo)?;
                let reason =
                    format!("args[0] is not in the rootfs and image {image} is a wasm artifact: its module is the {} layer", build::WASM_LAYER_MEDIA_TYPE);
                (detect::Detection { kind: detect::Kind::Wasm, reason }, Some(module))
            }
            r => (r.map_err(|source| undo(CreateError::Bundle { id: id.clone(), source }))?, None),
        };
        tracing::info!(container_id = %id, pod_id = %pod, runtime = ?kind.kind, reason = %kind.reason, "runtime chosen");
        let meter = Arc::new(Meter::default());
        let (job, netns) = match kind.kind {
            detect::Kind::Native => (Self::create_native(&req).await.map_err(undo)?, None),
            detect::Kind::Wasm => Self::create_wasm(runtime, &req, &spec, &pod, module, &meter).await.map_err(undo)?,
        };
        // Guests run here report traps on their stderr; workers and native
        // containers write their own.
        let stderr = match job {
            Job::Run { .. } | Job::Serve { .. } => fifo(&req.stdio[2]).and_then(|p| berth_host::stdio::open(&p, true).ok()),
            Job::Native { .. } | Job::Worker { .. } => None,
        };
        Ok(Container {
            id,
            bundle: req.bundle.to_path_buf(),
            stdio: req.stdio,
            job,
            interrupt: Interrupt::new(),
            meter,
            life: Lifecycle::default(),
            execs: Mutex::default(),
            mounted,
            stderr: Mutex::new(stderr),
            pod,
            netns,
            oom: Default::default(),
        })
    }

    /// A native container, made by the single-threaded helper (this binary
    /// re-executed): its process waits for Start.
    async fn create_native(req: &CreateRequest<'_>) -> Result<Job, CreateError> {
        let id = req.id.to_string();
        let fail = |e: String| CreateError::Native(format!("container {id}: {e}"));
        let console = match req.terminal {
            true => Some(crate::console::ConsoleSocket::new().map_err(|e| fail(format!("making its console socket: {e}")))?),
            false => None,
        };
        let mut cmd = crate::helper::command(Verb::Create).map_err(fail)?;
        cmd.arg(&id).arg(req.bundle).arg(&req.native_root).args(&req.stdio);
        if let Some(c) = &console {
            cmd.arg(c.path());
        }
        let pid = match crate::helper::run_for_pid(Verb::Create, cmd).await {
            Ok(pid) => pid,
            Err(e) => {
                // Whatever the helper left half made (an init waiting for
                // Start, a cgroup, state) goes with the failed create.
                if let Err(d) = crate::helper::native(Verb::Delete, &req.native_root, &id).await {
                    tracing::warn!(container_id = %id, error = %d, "removing a container whose create failed");
                }
                return Err(fail(e));
            }
        };
        let terminal = match console {
            None => None,
            Some(c) => Some(crate::console::attach(c, &req.stdio[0], &req.stdio[1]).await.map_err(fail)?),
        };
        let exit = crate::reaper::watch(pid);
        tracing::info!(container_id = %id, pid, "native container created");
        Ok(Job::Native { pid, root: req.native_root.clone(), exit: Mutex::new(Some(exit)), terminal })
    }

    /// A wasm container: the plan from `config.json`, the guest compiled
    /// (or loaded from cache), and for wasi:http components the listener.
    /// The module of a container whose `args[0]` is not in its rootfs
    /// (`missing` says so): its image's wasm layer, when containerd holds
    /// that image as a CNCF wasm artifact. Otherwise `missing` is the error.
    async fn artifact(req: &CreateRequest<'_>, missing: bundle::BundleError) -> Result<(String, ModuleSource), CreateError> {
        let id = req.id.to_string();
        let fail = |reason: String| CreateError::Artifact { id: id.clone(), missing: missing.to_string(), reason };
        let store = Store::open(Store::default_dir()).map_err(|e| fail(berth_host::error::chain(&e)))?;
        let mut client = containerd::Client::connect(req.containerd, req.namespace).await.map_err(|e| fail(berth_host::error::chain(&e)))?;
        match containerd::artifact_module(&mut client, &store, &id).await {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(CreateError::Bundle { id, source: missing }),
            Err(e) => Err(fail(berth_host::error::chain(&e))),
        }
    }

    async fn create_wasm(
        runtime: &Arc<Runtime>,
        req: &CreateRequest<'_>,
        spec: &oci_spec::runtime::Spec,
        pod: &str,
        module: Option<ModuleSource>,
        meter: &Arc<Meter>,
    ) -> Result<(Job, Option<Arc<NetNamespace>>), CreateError> {
        let id = req.id.to_string();
        if req.terminal {
            return Err(CreateError::Terminal { id });
        }
        // Detection by annotation does not look for args[0]: the plan may
        // find it missing too.
        let plan = match bundle::plan_with_module(req.bundle, spec, module.clone()) {
            Err(e) if module.is_none() && entry_missing(&e) => {
                let (_, module) = Self::artifact(req, e).await?;
                bundle::plan_with_module(req.bundle, spec, Some(module))
            }
            r => r,
        };
        let mut plan = plan.map_err(|source| CreateError::Bundle { id: id.clone(), source })?;
        plan.name = id.clone();
        // A guest must never get more file access than its user would: the
        // shim cannot switch identity per guest (it serves many), so a guest
        // of another user runs in a worker process under that user.
        // (Root's supplementary groups, which containerd's default spec
        // lists, add nothing to root's access.)
        let other_user = plan.user.as_ref().filter(|u| u.uid != 0 || u.gid != 0).cloned();
        plan.stdio = Stdio::Paths { stdin: fifo(&req.stdio[0]), stdout: fifo(&req.stdio[1]), stderr: fifo(&req.stdio[2]) };
        let (rt, p) = (runtime.clone(), plan.clone());
        let prepared =
            tokio::task::spawn_blocking(move || rt.prepare(&p)).await.expect("compile task").map_err(|source| CreateError::Load { id: id.clone(), source })?;
        let serves_http = http::is_http_handler(&prepared);
        // Guests run here make their sockets in the spec's network
        // namespace (a worker joins it itself).
        let netns = match (&plan.net_namespace, &other_user) {
            (Some(path), None) => Some(NetNamespace::get(path).map_err(|source| CreateError::Netns { id: id.clone(), source })?),
            _ => None,
        };
        let job = if let Some(u) = other_user {
            if serves_http {
                return Err(CreateError::User { id: id.clone(), uid: u.uid, gid: u.gid });
            }
            tracing::info!(container_id = %id, pod_id = %pod, uid = u.uid, gid = u.gid, "wasm container of another user: it runs in a worker process under that user");
            let path = req.bundle.join(worker::PLAN_FILE);
            worker::write_plan(&plan, &path).map_err(|source| CreateError::WorkerPlan { id: id.clone(), path: path.clone(), source })?;
            Job::Worker { pid: Mutex::new(None), plan: path }
        } else if serves_http {
            let service =
                HttpService::metered(runtime.clone(), &prepared, &plan, meter.clone()).map_err(|source| CreateError::Load { id: id.clone(), source })?;
            let addr = plan.http_listen.unwrap_or_else(|| DEFAULT_HTTP_ADDR.parse().expect("default address"));
            let listener =
                server::bind(addr, plan.net_namespace.as_deref()).map_err(|e| CreateError::Listen { id: id.clone(), addr, reason: e.to_string() })?;
            tracing::info!(container_id = %id, pod_id = %pod, address = %addr, net_namespace = ?plan.net_namespace, "wasi:http component: served, an instance per request");
            let default = server::Limits::default();
            let limits = server::Limits {
                slots: plan.http_max_concurrency.unwrap_or(HTTP_SLOTS),
                max_body: plan.http_max_body.unwrap_or(default.max_body),
                max_connections: plan.http_max_connections.unwrap_or(default.max_connections),
                header_timeout: plan.http_header_timeout.unwrap_or(default.header_timeout),
                ..default
            };
            Job::Serve { service: Arc::new(service), limits, listener: Mutex::new(Some(listener)), stop: watch::channel(0).0 }
        } else {
            let cache_hit = prepared.info.cache_hit;
            tracing::info!(container_id = %id, pod_id = %pod, module = %plan.entrypoint.source, cache_hit, "wasm container created");
            Job::Run { plan: Box::new(plan), prepared: Arc::new(prepared) }
        };
        Ok((job, netns))
    }

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
        if !self.life.begin() {
            return Err(format!("container {} was already started", self.id));
        }
        if let Job::Native { root, exit, .. } = &self.job {
            if let Err(e) = crate::helper::native(Verb::Start, root, &self.id).await {
                self.life.unbegin();
                return Err(e);
            }
            // None: the watch was taken by a Kill of the created
            // container, which saw its end; that exit stands.
            if let Some(rx) = exit.lock().unwrap().take() {
                self.wait_process(rx, on_exit);
            }
            return Ok(());
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

    /// Serves HTTP until a signal; the exit status.
    async fn serve(&self, service: Arc<HttpService>, listener: Option<std::net::TcpListener>, limits: server::Limits, stop: &watch::Sender<u32>) -> i32 {
        let Some(listener) = listener else { return 125 };
        let (mut drain, mut hard) = (stop.subscribe(), stop.subscribe());
        let drain = async move {
            let _ = drain.wait_for(|s| *s != 0).await;
        };
        let serve = server::serve(service, listener, limits, drain, None);
        tokio::select! {
            biased;
            _ = hard.wait_for(|s| *s == libc::SIGKILL as u32) => {
                tracing::info!(container_id = %self.id, pod_id = %self.pod, "killed; requests in flight are cut off");
                128 + libc::SIGKILL
            }
            r = std::panic::AssertUnwindSafe(serve).catch_unwind() => match r {
                Ok(Ok(())) => {
                    tracing::info!(container_id = %self.id, pod_id = %self.pod, "stopped serving; requests in flight finished");
                    0
                }
                Ok(Err(e)) => {
                    self.tell_stderr(&format!("berth: {}: serving failed: {e}\n", self.id));
                    125
                }
                Err(_) => {
                    tracing::error!(container_id = %self.id, pod_id = %self.pod, "the HTTP server's host code panicked; the other containers are unaffected");
                    134
                }
            },
        }
    }

    /// Runs the command to its exit; the exit status.
    async fn run(&self, runtime: Arc<Runtime>, plan: &RunPlan, prepared: &Prepared) -> i32 {
        let run = runtime.run_metered(prepared, plan, &self.interrupt, self.meter.clone());
        match std::panic::AssertUnwindSafe(run).catch_unwind().await {
            Ok(Ok((exit, usage))) => {
                if let Some(report) = exit.trap_report(&self.id) {
                    self.tell_stderr(&report);
                }
                tracing::info!(container_id = %self.id, pod_id = %self.pod, exit = ?exit, memory_bytes = usage.memory_bytes, cpu_ns = self.meter.cpu_ns(), "container exited");
                // Rust and most language runtimes abort (trap) when an
                // allocation fails: after a refusal that is an OOM kill,
                // reported as the kernel's would be (SIGKILL, an OOM event).
                if matches!(exit, berth_host::wasm::Exit::Trap(_)) && usage.refused > 0 {
                    self.oom.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.tell_stderr(&format!(
                        "berth: {}: out of memory: the memory limit ({} bytes, linux.resources.memory.limit) refused {} growth request(s) before the trap\n",
                        self.id,
                        plan.limits.memory_bytes.unwrap_or(0),
                        usage.refused
                    ));
                    tracing::info!(container_id = %self.id, pod_id = %self.pod, limit = plan.limits.memory_bytes, "container ran out of memory");
                    return 128 + libc::SIGKILL;
                }
                exit.status()
            }
            Ok(Err(e)) => {
                self.tell_stderr(&format!("berth: {}: {e}\n", self.id));
                tracing::warn!(container_id = %self.id, pod_id = %self.pod, error = %e, "container failed to run");
                125
            }
            Err(_) => {
                tracing::error!(container_id = %self.id, pod_id = %self.pod, "the guest's host code panicked; the other containers are unaffected");
                self.tell_stderr(&format!("berth: {}: internal error while running the guest\n", self.id));
                134
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

/// A stdio path from containerd; empty means none.
fn fifo(path: &str) -> Option<PathBuf> {
    (!path.is_empty()).then(|| PathBuf::from(path))
}
