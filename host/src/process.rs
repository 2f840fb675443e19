//! Child processes that berth's own code starts and waits for itself (the
//! native helper, the compiler process), in a process that may also reap
//! every other child it has.
//!
//! The shim is a child subreaper: processes of its containers are
//! reparented to it, and it must reap each one (a zombie left in a pod's
//! pid namespace keeps the pod's pause from ever exiting). It must not
//! reap a child that code here is about to wait for, or that wait fails.
//! So such children are started through [`output`], which records them as
//! owned while they run, and a reaper skips the owned ones while it holds
//! [`lock`]. A spawn takes the same lock, so a reaper never sees a child
//! before it is recorded.
use std::collections::BTreeSet;
use std::process::{Child, Command, Output};
use std::sync::{Mutex, MutexGuard};

static OWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Held while children are reaped (or spawned): the set of owned pids.
pub struct SpawnLock(MutexGuard<'static, BTreeSet<u32>>);

/// Takes the lock that spawns of owned children also take.
pub fn lock() -> SpawnLock {
    SpawnLock(OWNED.lock().unwrap_or_else(|e| e.into_inner()))
}

impl SpawnLock {
    /// Whether `pid` is a child that its starter waits for itself.
    pub fn is_owned(&self, pid: u32) -> bool {
        self.0.contains(&pid)
    }

    /// Spawns `cmd` while the lock is held: whoever holds it registers the
    /// child (with a reaper, say) before it can be reaped.
    pub fn spawn(&mut self, cmd: &mut Command) -> std::io::Result<Child> {
        cmd.spawn()
    }
}

/// A running owned child; it stops being owned when this is dropped,
/// after its starter waited for it.
struct Owned(u32);

impl Drop for Owned {
    fn drop(&mut self) {
        lock().0.remove(&self.0);
    }
}

/// Spawns `cmd` as an owned child.
fn spawn_owned(cmd: &mut Command) -> std::io::Result<(Child, Owned)> {
    let mut l = lock();
    let child = l.spawn(cmd)?;
    let pid = child.id();
    l.0.insert(pid);
    Ok((child, Owned(pid)))
}

/// [`Command::output`], safe beside a reaper of every child: stdout and
/// stderr captured, stdin empty.
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    use std::process::Stdio;
    spawn_piped(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))?.wait_with_output()
}

/// [`Child::wait_with_output`] for a child spawned with piped stdio by the
/// caller (who writes its stdin first), safe beside a reaper.
pub fn spawn_piped(cmd: &mut Command) -> std::io::Result<OwnedChild> {
    let (child, owned) = spawn_owned(cmd)?;
    Ok(OwnedChild { child, _owned: owned })
}

/// An owned child with its handle, for callers that feed its stdin.
pub struct OwnedChild {
    pub child: Child,
    _owned: Owned,
}

impl OwnedChild {
    /// Waits for it and collects its output (the ownership ends after).
    pub fn wait_with_output(self) -> std::io::Result<Output> {
        self.child.wait_with_output()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_children_are_known_while_they_run() {
        let (child, owned) = spawn_owned(Command::new("sleep").arg("5")).unwrap();
        let pid = child.id();
        assert!(lock().is_owned(pid));
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
        drop(owned);
        assert!(!lock().is_owned(pid));
        let out = output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!((out.status.code(), &out.stdout[..], &out.stderr[..]), (Some(3), &b"out\n"[..], &b"err\n"[..]));
    }
}
