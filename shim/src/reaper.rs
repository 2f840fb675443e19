//! The shim is a child subreaper: the processes of its native containers
//! (and whatever they leave behind: exec helpers, a failed exec's
//! half-made processes) are reparented to it. It reaps every child it has,
//! as containerd's own shims do: a zombie left in a pod's pid namespace
//! keeps the pod's pause from ever finishing its exit.
//!
//! Each status goes to whoever watches that pid. A status nobody watches
//! yet is kept a few seconds (a process may exit before its creator got to
//! watch it), then dropped. Children that berth's own code waits for
//! itself (`berth_host::process`) are left to it. A pid is signalled only
//! while it is watched and not yet reaped: once reaped, it may be someone
//! else's.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Default)]
struct Table {
    watched: HashMap<i32, oneshot::Sender<i32>>,
    /// Reaped before anyone watched them: status and when.
    unclaimed: HashMap<i32, (i32, Instant)>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

/// How long the status of an unwatched child is kept for a late watcher.
const UNCLAIMED_FOR: Duration = Duration::from_secs(5);
/// A sweep even without SIGCHLD: signals coalesce, and a child listed
/// while it was still being reparented may be missed by one scan.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

fn with_table<T>(f: impl FnOnce(&mut Table) -> T) -> T {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    f(t.get_or_insert_with(Table::default))
}

/// Becomes the subreaper and reaps on every SIGCHLD (and every few seconds).
pub fn start() -> std::io::Result<()> {
    berth_host::native::become_subreaper()?;
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                s = sigchld.recv() => if s.is_none() { return },
                _ = sweep.tick() => {}
            }
            reap();
        }
    });
    Ok(())
}

/// The wait status of `pid` once it exits (exit code or 128+signal).
pub fn watch(pid: i32) -> oneshot::Receiver<i32> {
    let (tx, rx) = oneshot::channel();
    with_table(|t| match t.unclaimed.remove(&pid) {
        Some((status, _)) => {
            let _ = tx.send(status);
        }
        None => {
            t.watched.insert(pid, tx);
        }
    });
    // It may have exited before it was watched.
    reap();
    rx
}

/// Spawns `cmd` and watches it before it can be reaped; its pid and status.
pub fn spawn_watched(cmd: &mut std::process::Command) -> std::io::Result<(i32, oneshot::Receiver<i32>)> {
    let mut lock = berth_host::process::lock();
    // The handle is dropped unwaited: the reaper waits for it.
    let pid = lock.spawn(cmd)?.id() as i32;
    let (tx, rx) = oneshot::channel();
    with_table(|t| t.watched.insert(pid, tx));
    Ok((pid, rx))
}

/// The status a watched process ended with; a process the shim lost
/// track of (its watch dropped) counts as killed.
pub async fn status(rx: oneshot::Receiver<i32>) -> i32 {
    rx.await.unwrap_or(128 + libc::SIGKILL)
}

/// Runs `f` (which signals `pid`) only while `pid` is watched and not yet
/// reaped: reaping waits for it, so the pid cannot change hands meanwhile.
/// `None`: the process is gone already.
pub fn unreaped<T>(pid: i32, f: impl FnOnce() -> T) -> Option<T> {
    with_table(|t| t.watched.contains_key(&pid).then(f))
}

/// Sends `signal` to a watched process that has not been reaped; one that
/// is gone already (reaped, or exiting) is fine.
pub fn signal(pid: i32, signal: i32) -> std::io::Result<()> {
    unreaped(pid, || {
        // SAFETY: kill(2) has no memory preconditions; the pid is a child
        // not yet reaped, so it is still ours.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
        Ok(())
    })
    .unwrap_or(Ok(()))
}

/// The pids of this process's children (of every thread).
fn children() -> Vec<i32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    pids
}

/// Reaps every child that has exited, except those their starter waits
/// for itself.
fn reap() {
    let owned = berth_host::process::lock();
    with_table(|t| {
        for pid in children() {
            if owned.is_owned(pid as u32) {
                continue;
            }
            let mut status = 0;
            // SAFETY: waitpid on one child with WNOHANG and a valid pointer.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
                continue;
            }
            let status = berth_host::native::exit_status(status);
            match t.watched.remove(&pid) {
                Some(tx) => {
                    tracing::debug!(pid, status, "process reaped");
                    let _ = tx.send(status);
                }
                None => {
                    tracing::debug!(pid, status, "reaped a process nobody watches");
                    t.unclaimed.insert(pid, (status, Instant::now()));
                }
            }
        }
        t.unclaimed.retain(|_, (_, at)| at.elapsed() < UNCLAIMED_FOR);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Waits until the reaper has reaped `pid` (it is no longer a child).
    fn reaped(pid: i32) {
        for _ in 0..200 {
            reap();
            if !children().contains(&pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{pid} was never reaped");
    }

    #[test]
    fn reaps_everything_hands_statuses_on_and_never_signals_a_reaped_pid() {
        // A watched child: its status goes to its watcher.
        let (pid, rx) = spawn_watched(Command::new("sh").args(["-c", "exit 7"])).unwrap();
        reaped(pid);
        assert_eq!(rx.blocking_recv().unwrap(), 7);
        // An unwatched child (as a failed exec's helper leaves one): reaped
        // all the same, its status kept for a late watcher.
        let orphan = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap().id() as i32;
        reaped(orphan);
        assert_eq!(watch(orphan).blocking_recv().unwrap(), 3);
        // A child its starter waits for itself is left to it.
        let out = berth_host::process::output(Command::new("sh").args(["-c", "sleep 0.2; exit 4"])).unwrap();
        assert_eq!(out.status.code(), Some(4));
        // Once reaped, a pid may be given to another process: signalling the
        // old one must not reach it. The kernel is asked for the same pid
        // again (ns_last_pid) until it hands it out.
        let (pid, rx) = spawn_watched(Command::new("sleep").arg("30")).unwrap();
        // SAFETY: our child, watched and not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        reaped(pid);
        assert_eq!(rx.blocking_recv().unwrap(), 128 + libc::SIGKILL);
        let mut other = None;
        for _ in 0..50 {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("writing ns_last_pid (the tests run as root)");
            let c = berth_host::process::spawn_piped(Command::new("sleep").arg("30")).unwrap();
            if c.child.id() as i32 == pid {
                other = Some(c);
                break;
            }
            let mut c = c;
            c.child.kill().unwrap();
            c.child.wait().unwrap();
        }
        let mut other = other.expect("the kernel never handed out the same pid again");
        signal(pid, libc::SIGKILL).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(other.child.try_wait().unwrap().is_none(), "a signal for a reaped pid killed the process that took it over");
        other.child.kill().unwrap();
        other.child.wait().unwrap();
    }
}
