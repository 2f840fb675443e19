//! The shim is the child subreaper of its native containers: their
//! processes are reparented to it when the helper that created them exits.
//! This reaps exactly the pids it was asked to watch (so it never steals a
//! status another waiter expects) and hands each its wait status.
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

static WATCHED: Mutex<Option<HashMap<i32, oneshot::Sender<i32>>>> = Mutex::new(None);

/// Becomes the subreaper and reaps watched pids on every SIGCHLD.
pub fn start() -> std::io::Result<()> {
    berth_host::native::become_subreaper()?;
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            reap_watched();
        }
    });
    Ok(())
}

/// The wait status of `pid` once it exits (exit code or 128+signal).
pub fn watch(pid: i32) -> oneshot::Receiver<i32> {
    let (tx, rx) = oneshot::channel();
    WATCHED.lock().unwrap().get_or_insert_with(HashMap::new).insert(pid, tx);
    // It may have exited before it was watched.
    reap_watched();
    rx
}

/// The status a watched process ended with; a process the shim lost
/// track of (its watch dropped) counts as killed.
pub async fn status(rx: oneshot::Receiver<i32>) -> i32 {
    rx.await.unwrap_or(128 + libc::SIGKILL)
}

/// Sends `signal` to a process this shim started and reaps (its pid cannot
/// be reused before it is reaped); one that is already gone is fine.
pub fn signal(pid: i32, signal: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory preconditions; see above for the pid.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

fn reap_watched() {
    let mut w = WATCHED.lock().unwrap();
    let Some(map) = w.as_mut() else { return };
    let done: Vec<(i32, i32)> = map
        .keys()
        .filter_map(|&pid| {
            let mut status = 0;
            // SAFETY: waitpid on one pid with WNOHANG and a valid pointer.
            // A pid not (yet) our child gives ECHILD and stays watched.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            (r == pid).then(|| (pid, berth_host::native::exit_status(status)))
        })
        .collect();
    for (pid, status) in done {
        if let Some(tx) = map.remove(&pid) {
            tracing::debug!(pid, status, "process reaped");
            let _ = tx.send(status);
        }
    }
}
