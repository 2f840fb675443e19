//! `berth run --bundle` of a native bundle: the same fallback the shim
//! makes, as a Linux namespace container (libcontainer), in the foreground.
use crate::helper::{self, Verb};
use crate::native;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// The container's process, for the signal handler to forward to.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; pid is the container process.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs the bundle as a native container until its process exits; returns
/// its exit status (128+signal if a signal ended it). Must run before berth
/// starts any thread.
pub fn run(bundle: &Path, reason: &str) -> Result<i32> {
    let bundle = bundle.canonicalize().with_context(|| format!("bundle {}", bundle.display()))?;
    let id = format!("berth-run-{}", std::process::id());
    let root = native::default_state_root();
    tracing::info!(container_id = %id, bundle = %bundle.display(), reason, "native container");
    native::become_subreaper().context("becoming the reaper of the container's processes")?;
    // The helper (berth re-executed, from a read-only mount) creates it;
    // the container's stdio is berth's own, reopened through /proc.
    let mut cmd = helper::command(Verb::Create).context("preparing the native helper")?;
    let me = std::process::id();
    cmd.arg(&id).arg(&bundle).arg(&root).args((0..3).map(|fd| format!("/proc/{me}/fd/{fd}")));
    let pid = match cmd.run_for_pid() {
        Ok(pid) => pid,
        Err(e) => {
            // Whatever the helper left half made goes with the failure.
            let _ = native::delete(&root, &id);
            anyhow::bail!(e);
        }
    };
    let cleanup = |what: Result<i32>| {
        if let Err(e) = native::delete(&root, &id) {
            tracing::warn!(container_id = %id, error = %e, "cleaning up");
        }
        what
    };
    CHILD.store(pid, Ordering::SeqCst);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: `forward` only calls kill(2), which is async-signal-safe.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    if let Err(e) = native::start(&root, &id) {
        // SAFETY: kill of the created container process we own.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = wait(pid);
        return cleanup(Err(e.into()));
    }
    cleanup(wait(pid))
}

/// Waits for `pid` (our child, or an orphan we reap); its exit status.
fn wait(pid: i32) -> Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(native::exit_status(status));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e).context("waiting for the container's process");
        }
    }
}
