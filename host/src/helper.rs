//! The helper: berth's binaries (the shim, `berth`) re-executed for work
//! that must not run in the caller's process.
//!
//! - Native containers are made (`create`, `exec`) by forking and running
//!   Rust in the children, which is only sound in a single-threaded
//!   process; their lifecycle hooks run where they are started and
//!   deleted (`start`, `delete`), and a hook is a child its runner waits
//!   for, which a subreaper that reaps every child (the shim) must not
//!   take from it. A slow hook then blocks only its helper.
//! - Untrusted wasm is compiled in a child (`compile`), and a wasm
//!   container with a `process.user` runs in one under that user (`wasm`).
//!
//! This module starts helpers and reads their answer; the helper's own
//! entry point, which dispatches to the runtimes, is
//! [`crate::helper_main`].
use std::path::{Path, PathBuf};

/// The argv[1] that makes berth's binaries the helper.
pub const ARG: &str = "__berth-native";

/// What a helper is started for, its argv[2]. The arguments that follow
/// are the verb's own (see [`crate::helper_main::main`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Creates a native container; prints its init's pid.
    Create,
    /// Runs a process in a native container; prints its pid.
    Exec,
    /// Starts a created native container (and its poststart hooks).
    Start,
    /// Deletes a native container (its poststop hooks, cgroup and state).
    Delete,
    /// Compiles wasm: bytes on stdin, precompiled code on stdout.
    Compile,
    /// Runs a wasm container to its end under its own user.
    Wasm,
}

impl Verb {
    const ALL: [Verb; 6] = [Verb::Create, Verb::Exec, Verb::Start, Verb::Delete, Verb::Compile, Verb::Wasm];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Exec => "exec",
            Verb::Start => "start",
            Verb::Delete => "delete",
            Verb::Compile => "compile",
            Verb::Wasm => "wasm",
        }
    }

    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("running the {verb} helper")]
    Spawn {
        verb: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The helper's own one-line reason (its last line on stderr).
    #[error("{0}")]
    Failed(String),
}

/// A helper ready to run: the command (which the verb's arguments are
/// added to, as to any [`std::process::Command`]) and the verb it was made
/// for, which its errors name.
pub struct HelperCommand {
    verb: Verb,
    cmd: std::process::Command,
}

impl std::ops::Deref for HelperCommand {
    type Target = std::process::Command;
    fn deref(&self) -> &std::process::Command {
        &self.cmd
    }
}

impl std::ops::DerefMut for HelperCommand {
    fn deref_mut(&mut self) -> &mut std::process::Command {
        &mut self.cmd
    }
}

/// The helper for `verb`: this executable again, the verb's arguments to
/// follow.
///
/// The helper (and so every container's init, and each exec'd process
/// while it is set up inside the container) runs from a read-only bind
/// mount of this binary in a mount namespace of its own: a process in the
/// container that catches `/proc/PID/exe` of one of them and reopens it to
/// write (the class of CVE-2019-5736) gets EROFS, and the binary on disk
/// is never exposed. Nothing is copied, and nothing outlives the helper's
/// namespace.
pub fn command(verb: Verb) -> std::io::Result<HelperCommand> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::process::CommandExt;
    let exe = std::fs::read_link("/proc/self/exe")?;
    if exe.as_os_str().as_bytes().ends_with(b" (deleted)") {
        return Err(std::io::Error::other(format!("this binary ({}) was replaced on disk; restart it", exe.display())));
    }
    let path = std::ffi::CString::new(exe.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mount = std::ffi::CString::new(mount_point_of(&exe)?.into_os_string().into_vec()).map_err(std::io::Error::other)?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg(ARG).arg(verb.as_str());
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || read_only_self(&path, &mount));
    }
    Ok(HelperCommand { verb, cmd })
}

/// Kills the `create` and `exec` helpers still at work on container `id`
/// of the native state root `state_root`, and what they forked that has
/// not exec'd yet (a container's init runs its helper's command line until
/// it execs the container's process), then waits (5 s at most) until they
/// are gone. Returns how many it killed.
///
/// For the clean-up after a shim died mid-create: its helper and the init
/// it made outlive it, reparented away, and would otherwise finish making
/// the container after the clean-up ran, leaving an init that waits for a
/// start forever. Each process is pinned by a pidfd and its command line
/// read again before the signal, so a pid reused meanwhile is never hit.
pub fn kill_orphans(id: &str, state_root: &Path) -> usize {
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags};
    use std::os::unix::ffi::OsStrExt;
    let root = state_root.as_os_str().as_bytes();
    let works_on = |pid: i32| {
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
        let argv: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        argv.len() > 5
            && argv[1] == ARG.as_bytes()
            && [Verb::Create.as_str().as_bytes(), Verb::Exec.as_str().as_bytes()].contains(&argv[2])
            && argv[3] == id.as_bytes()
            && argv[5] == root
    };
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|&p| works_on(p)).collect())
        .unwrap_or_default();
    let mut killed = Vec::new();
    for pid in pids {
        let Some(fd) = Pid::from_raw(pid).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok()) else { continue };
        if works_on(pid) && pidfd_send_signal(&fd, rustix::process::Signal::KILL).is_ok() {
            tracing::info!(container_id = id, pid, "killed a helper (or an init that never started) left by a shim that died");
            killed.push(pid);
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let gone = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')));
    while !killed.iter().all(|&p| gone(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    killed.len()
}

/// The mount point of the mount that holds `path` (the topmost of the
/// longest mount points above it).
fn mount_point_of(path: &Path) -> std::io::Result<PathBuf> {
    let infos =
        procfs::process::Process::myself().and_then(|p| p.mountinfo()).map_err(|e| std::io::Error::other(format!("reading /proc/self/mountinfo: {e}")))?;
    let mut best: Option<PathBuf> = None;
    for m in infos.iter().filter(|m| path.starts_with(&m.mount_point)) {
        if best.as_ref().is_none_or(|b| m.mount_point.components().count() >= b.components().count()) {
            best = Some(m.mount_point.clone());
        }
    }
    Ok(best.unwrap_or_else(|| PathBuf::from("/")))
}

/// In the forked child: a mount namespace of its own where `exe` is a
/// read-only bind mount of itself. Only the mount that holds `exe`
/// (`mount`) becomes a slave, so that the bind never reaches the host;
/// every other mount keeps its propagation, so that a container's shared
/// (Bidirectional) volumes stay the host's peers, as with runc.
/// (Container mounts are made in the container's own mount namespace,
/// whose root is a slave unless the spec's rootfsPropagation says
/// otherwise; see `native::preflight`.)
fn read_only_self(exe: &std::ffi::CStr, mount: &std::ffi::CStr) -> std::io::Result<()> {
    let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    // SAFETY: plain system calls with valid, NUL-terminated paths; they
    // change only this (child) process's mount namespace.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(std::ptr::null(), mount.as_ptr(), std::ptr::null(), libc::MS_SLAVE, std::ptr::null()))?;
        check(libc::mount(exe.as_ptr(), exe.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()))?;
        check(libc::mount(std::ptr::null(), exe.as_ptr(), std::ptr::null(), libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY, std::ptr::null()))
    }
}

impl HelperCommand {
    /// Runs the helper to its end (its stdin closed) and returns what it
    /// printed on stdout, trimmed; on failure its one-line reason.
    pub fn run(mut self) -> Result<String, HelperError> {
        let verb = self.verb.as_str();
        let out = crate::process::output(&mut self.cmd).map_err(|source| HelperError::Spawn { verb, source })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(HelperError::Failed(err.lines().last().map(str::to_string).unwrap_or_else(|| format!("the {verb} helper failed ({})", out.status))))
    }

    /// [`HelperCommand::run`] of a helper that prints the pid of the
    /// process it made.
    pub fn run_for_pid(self) -> Result<i32, HelperError> {
        let verb = self.verb.as_str();
        let out = self.run()?;
        match out.parse::<i32>() {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(HelperError::Failed(format!("the {verb} helper printed {out:?} where a pid was expected"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_round_trip_and_unknown_ones_are_refused() {
        for v in Verb::ALL {
            assert_eq!(Verb::parse(v.as_str()), Some(v));
        }
        assert_eq!(Verb::parse("run"), None);
    }
}
