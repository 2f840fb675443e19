//! A wasm container in a process of its own, under its OCI `process.user`.
//!
//! The shim runs guests inside its own (root) process, where the kernel
//! cannot hold one guest to one user's file access. A container whose
//! `process.user` is not root therefore runs in a worker instead: the shim's
//! binary re-executed, which takes on the user's uid, gid and groups (as the
//! `berth` command does) before it opens any granted directory, so the
//! kernel checks every file access of the guest. SIGTERM and SIGINT stop the
//! guest (143 / 130); its exit status is the worker's.
use super::limits::Usage;
use super::{cache::Cache, EngineOptions, Exit, Interrupt, Prepared, Reason, RunError, Runtime, WasmEngine};
use crate::plan::{RunPlan, Stdio};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ForegroundError {
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// How a worker fails before its guest's own exit.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("opening the guest's stdio {path}")]
    Stdio {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading its plan {}", .path.display())]
    ReadPlan {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading its plan {}", .path.display())]
    ParsePlan {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Netns(#[from] super::netns::NetnsError),
    #[error(transparent)]
    Engine(#[from] super::EngineError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Identity(#[from] crate::caps::identity::IdentityError),
    #[error(transparent)]
    Foreground(#[from] ForegroundError),
}

/// Runs a prepared guest to its end on an async runtime of its own (with
/// `threads` worker threads), SIGINT and SIGTERM stopping it (130 / 143):
/// a process that hosts one guest (`berth run`, a worker).
pub fn run_foreground(runtime: &Runtime, prepared: &Prepared, plan: &RunPlan, threads: usize) -> Result<(Exit, Usage), ForegroundError> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().map_err(ForegroundError::Runtime)?;
    let interrupt = Interrupt::new();
    let result = rt.block_on(async {
        forward_signals(&interrupt).map_err(ForegroundError::Signals)?;
        Ok(runtime.run(prepared, plan, &interrupt).await?)
    });
    // A blocking task (e.g. a stdin read of a stopped guest) must not keep
    // the process from exiting.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

/// SIGINT and SIGTERM stop the guest behind `interrupt` (exit 130 / 143).
/// Must be called inside a tokio runtime.
fn forward_signals(interrupt: &Interrupt) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, num) in [(SignalKind::interrupt(), libc::SIGINT), (SignalKind::terminate(), libc::SIGTERM)] {
        let mut s = signal(kind)?;
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            if s.recv().await.is_some() {
                interrupt.trigger(Reason::Signal(num));
            }
        });
    }
    Ok(())
}

/// Where the shim leaves a worker's plan: in the container's bundle
/// directory (containerd's, closed to other users), readable by root only.
pub const PLAN_FILE: &str = "berth-worker-plan.json";

/// Writes the plan a worker runs ([`run_plan`]) to `path`, mode 0600: the
/// shim planned (and compiled) the container already; the worker reads no
/// `config.json` and no image store of its own.
pub fn write_plan(plan: &RunPlan, path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let json = serde_json::to_vec(plan).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(&json)
}

/// Runs wasm container `id` from the plan the shim wrote at `plan_path`
/// ([`write_plan`]) with the given stdio paths (empty: none) under the
/// plan's user; its exit status. Errors and traps are reported on the
/// container's stderr.
pub fn run_plan(id: &str, plan_path: &Path, stdio: [&str; 3]) -> i32 {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    // The stdio FIFOs are opened first, as root (containerd keeps them in a
    // directory closed to other users), and become this process's own
    // stdio, which the guest inherits and every report below goes to.
    if let Err(e) = take_stdio(stdio) {
        eprintln!("berth: {id}: {}", crate::error::chain(&e));
        return 125;
    }
    let result = (|| -> Result<i32, WorkerError> {
        let json = std::fs::read(plan_path).map_err(|source| WorkerError::ReadPlan { path: plan_path.to_path_buf(), source })?;
        let mut plan: RunPlan = serde_json::from_slice(&json).map_err(|source| WorkerError::ParsePlan { path: plan_path.to_path_buf(), source })?;
        plan.name = id.to_string();
        plan.stdio = Stdio::Inherit;
        // The guest's sockets live in the spec's network namespace (a
        // pod's). This process has one thread yet: all later ones inherit it.
        if let Some(ns) = &plan.net_namespace {
            super::netns::join_process(ns)?;
        }
        let engine = WasmEngine::new(&EngineOptions::single())?;
        let runtime = Runtime::new(engine, Cache::new(crate::paths::cache_dir()), crate::wasm::load::DEFAULT_MAX_MODULE_BYTES);
        let prepared = runtime.prepare(&plan)?;
        // The granted directories are reached as root (containerd's bundle
        // directories are closed to other users, as they are for runc, whose
        // process enters its root before dropping privileges); everything
        // beneath them is then opened as the user.
        let _held = hold_preopens(&mut plan)?;
        if let Some(user) = &plan.user {
            crate::caps::identity::assume(user)?;
            // A credential change makes the process non-dumpable, which
            // closes its own /proc/self/fd to it.
            // SAFETY: prctl(PR_SET_DUMPABLE) only sets a flag on this process.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        }
        // The worker ends with the shim that started it (a killed shim's
        // containers must not run on unseen). The credential change above
        // cleared any earlier setting, so it is made here, then checked
        // against a parent that died already.
        // SAFETY: getppid and prctl(PR_SET_PDEATHSIG) have no preconditions.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                return Ok(128 + libc::SIGKILL);
            }
        }
        let (exit, _) = run_foreground(&runtime, &prepared, &plan, 1)?;
        if let Some(report) = exit.trap_report(id) {
            eprint!("{report}");
        }
        Ok(exit.status())
    })();
    result.unwrap_or_else(|e| {
        eprintln!("berth: {id}: {}", crate::error::chain(&e));
        125
    })
}

/// Opens the container's stdio paths (empty: /dev/null) onto this
/// process's descriptors 0, 1 and 2.
fn take_stdio(stdio: [&str; 3]) -> Result<(), WorkerError> {
    use std::os::fd::AsRawFd;
    for (fd, p) in stdio.iter().enumerate() {
        let failed = |source| WorkerError::Stdio { path: p.to_string(), source };
        let f = crate::stdio::open_or_null(p, fd != 0).map_err(failed)?;
        // SAFETY: dup2 onto this process's standard descriptors, from a
        // descriptor that is open; nothing else uses them here.
        if unsafe { libc::dup2(f.as_raw_fd(), fd as i32) } < 0 {
            return Err(failed(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Opens each granted directory (O_PATH) and points the plan at it through
/// `/proc/self/fd`, so that it is reopened, by the user, past any parent
/// the user may not traverse. The returned descriptors must stay open.
fn hold_preopens(plan: &mut crate::plan::RunPlan) -> Result<Vec<std::fs::File>, WorkerError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut held = Vec::new();
    for p in &mut plan.preopens {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&p.host)
            .map_err(|e| RunError::Preopen { host: p.host.display().to_string(), guest: p.guest.clone(), source: e.into() })?;
        p.host = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        held.push(f);
    }
    Ok(held)
}
