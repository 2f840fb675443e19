//! Native containers: Linux namespace containers for native entrypoints
//! (a pod's pause, sidecars, ordinary images), built with youki's
//! `libcontainer` from the bundle's `config.json`: namespaces, pivot_root,
//! masked and read-only paths, capabilities, rlimits, no_new_privileges,
//! seccomp, hooks and cgroups (v1 and v2) as the spec says.
//!
//! Creating a container forks and runs Rust in the children, which is only
//! sound in a single-threaded process. [`create`] and [`exec`] must
//! therefore run in one: the `berth` command before it starts any thread,
//! or the helper ([`crate::helper`]). [`start`] and [`delete`] run the
//! spec's hooks and wait for them: the shim runs them in the helper too.
//! Every other operation here only signals or reads state, and is safe
//! from any thread.
//!
//! The container's processes outlive the process that created them: its
//! creator must be a child subreaper ([`become_subreaper`]) to wait for them.
use crate::helper::Verb;
use libcgroups::common::{CgroupConfig, CgroupManager};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

mod preflight;
pub mod usage;
pub use usage::Usage;

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("native container {id}: {what}: {reason}")]
    Op { id: String, what: &'static str, reason: String },
    #[error("native container {id}: opening {path} for its stdio: {reason}")]
    Stdio { id: String, path: String, reason: String },
}

fn op<'a>(id: &'a str, what: &'static str) -> impl Fn(libcontainer::error::LibcontainerError) -> NativeError + 'a {
    move |e| NativeError::Op { id: id.to_string(), what, reason: crate::error::chain(&e) }
}

/// Where native containers' state lives (libcontainer's root).
pub fn default_state_root() -> PathBuf {
    PathBuf::from("/run/berth/native")
}

/// Where a containerd's shims keep the native containers of `namespace`:
/// keyed by the containerd (its socket address) as well, since two
/// containerds on one machine may use the same namespace and container ids.
pub fn state_root_for(containerd: &str, namespace: &str) -> PathBuf {
    let digest = crate::oci::image::digest::of_bytes(containerd.as_bytes());
    default_state_root().join(&digest.trim_start_matches("sha256:")[..16]).join(namespace)
}

/// Makes this process the reaper of its orphaned descendants, so that it
/// can wait for the containers it creates.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A wait status as a shell would report it: the exit code, or 128+signal.
pub fn exit_status(status: i32) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// What a new container's process reads and writes.
#[derive(Default)]
pub struct StdioFds {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

pub struct CreateRequest<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub state_root: &'a Path,
    pub stdio: StdioFds,
    /// A Unix socket to send the container's terminal (pty master) to.
    pub console_socket: Option<PathBuf>,
}

/// Creates the container; its process waits for [`start`]. Returns the
/// process's pid (in berth's pid namespace).
///
/// Must be called from a single-threaded process (see the module docs).
pub fn create(req: CreateRequest<'_>) -> Result<i32, NativeError> {
    let id = req.id;
    std::fs::create_dir_all(req.state_root).map_err(|e| NativeError::Op {
        id: id.into(),
        what: "creating its state directory",
        reason: format!("{}: {e}", req.state_root.display()),
    })?;
    preflight::check(id, req.bundle)?;
    let b = builder(id, req.state_root, req.stdio, req.console_socket)?;
    let c =
        b.validate_id().map_err(op(id, "checking its id"))?.as_init(req.bundle).with_systemd(false).with_detach(true).build().map_err(op(id, "creating it"))?;
    c.pid().map(|p| p.as_raw()).ok_or_else(|| NativeError::Op { id: id.into(), what: "creating it", reason: "no process was left running".into() })
}

/// A builder for container `id` with its state under `state_root` and the
/// given stdio and console socket.
fn builder(id: &str, state_root: &Path, stdio: StdioFds, console_socket: Option<PathBuf>) -> Result<ContainerBuilder, NativeError> {
    let mut b = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(state_root)
        .map_err(op(id, "setting up its state"))?
        .with_console_socket(console_socket.as_deref());
    let StdioFds { stdin, stdout, stderr } = stdio;
    if let Some(f) = stdin {
        b = b.with_stdin(f);
    }
    if let Some(f) = stdout {
        b = b.with_stdout(f);
    }
    if let Some(f) = stderr {
        b = b.with_stderr(f);
    }
    Ok(b)
}

fn load(state_root: &Path, id: &str) -> Result<Container, NativeError> {
    Container::load(state_root.join(id)).map_err(op(id, "loading its state"))
}

/// Lets a created container's process run its program.
pub fn start(state_root: &Path, id: &str) -> Result<(), NativeError> {
    load(state_root, id)?.start().map_err(op(id, "starting it"))
}

/// Sends `signal` to the container's process, or to all its processes.
/// A container that has already stopped is left alone.
pub fn kill(state_root: &Path, id: &str, signal: i32, all: bool) -> Result<(), NativeError> {
    let mut c = load(state_root, id)?;
    let sig =
        libcontainer::signal::Signal::try_from(signal).map_err(|e| NativeError::Op { id: id.into(), what: "reading the signal", reason: e.to_string() })?;
    c.refresh_status().map_err(op(id, "reading its status"))?;
    if c.status() == ContainerStatus::Stopped && !all {
        return Ok(());
    }
    c.kill(sig, all).map_err(op(id, "signalling it"))
}

/// Removes the container's cgroup and state (after running its poststop
/// hooks); its processes are killed first if any remain.
pub fn delete(state_root: &Path, id: &str) -> Result<(), NativeError> {
    match Container::load(state_root.join(id)) {
        Ok(mut c) => c.delete(true).map_err(op(id, "deleting it")),
        // Never created (or already deleted): nothing to undo.
        Err(_) if !state_root.join(id).exists() => Ok(()),
        // Half made: its maker died before its state was whole (a shim
        // killed mid-create; `helper::kill_orphans` ended what it had
        // started). Its directory goes.
        Err(e) => {
            tracing::warn!(container_id = id, error = %e, "removing the state of a container that was never wholly made");
            std::fs::remove_dir_all(state_root.join(id)).map_err(|_| op(id, "loading its state")(e))
        }
    }
}

fn cgroup(state_root: &Path, id: &str) -> Result<libcgroups::common::AnyCgroupManager, NativeError> {
    let c = load(state_root, id)?;
    let cfg = c.spec().map_err(op(id, "reading its config"))?;
    cgroup_at(Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT), &cfg.cgroup_path, id)
}

/// The manager of cgroup `path` under the hierarchy mounted at `root`:
/// cgroup v1 (legacy or hybrid hosts) or v2 (unified), as the mount says.
fn cgroup_at(root: &Path, path: &Path, id: &str) -> Result<libcgroups::common::AnyCgroupManager, NativeError> {
    libcgroups::common::create_cgroup_manager_with_root(
        Some(root),
        CgroupConfig { cgroup_path: path.to_path_buf(), systemd_cgroup: false, container_name: id.to_string() },
    )
    .map_err(|e| NativeError::Op { id: id.into(), what: "opening its cgroup", reason: e.to_string() })
}

/// Every process in the container's cgroup.
pub fn pids(state_root: &Path, id: &str) -> Result<Vec<i32>, NativeError> {
    let m = cgroup(state_root, id)?;
    let pids = m.get_all_pids().map_err(|e| NativeError::Op { id: id.into(), what: "listing its processes", reason: e.to_string() })?;
    Ok(pids.into_iter().map(|p| p.as_raw()).collect())
}

/// What the container used, from its cgroup.
pub fn usage(state_root: &Path, id: &str) -> Result<Usage, NativeError> {
    use libcgroups::common::AnyCgroupManager;
    let m = cgroup(state_root, id)?;
    let units = match &m {
        AnyCgroupManager::V1(_) => usage::CpuUnits::V1 { ticks_per_second: usage::ticks_per_second() },
        AnyCgroupManager::V2(_) | AnyCgroupManager::Systemd(_) => usage::CpuUnits::V2,
    };
    let s = m.stats().map_err(|e| NativeError::Op { id: id.into(), what: "reading its cgroup stats", reason: e.to_string() })?;
    Ok(Usage::from_cgroup(&s, units))
}

/// Runs another process (an OCI process JSON at `process`) in a running
/// container, detached; returns its pid.
///
/// Must be called from a single-threaded process (see the module docs).
pub fn exec(state_root: &Path, id: &str, process: &Path, stdio: StdioFds, console_socket: Option<PathBuf>) -> Result<i32, NativeError> {
    let b = builder(id, state_root, stdio, console_socket)?;
    let pid = b.as_tenant().with_process(Some(process)).with_detach(true).build().map_err(op(id, "running a process in it"))?;
    Ok(pid.as_raw())
}

/// A helper verb for native containers (see [`crate::helper_main`]):
///
/// `create ID BUNDLE STATE_ROOT STDIN STDOUT STDERR [CONSOLE_SOCKET]`
/// `exec ID PROCESS_JSON STATE_ROOT STDIN STDOUT STDERR [CONSOLE_SOCKET]`
/// `start ID STATE_ROOT`, `delete ID STATE_ROOT`
///
/// Stdio paths may be empty (`/dev/null`). `create` and `exec` return the
/// new process's pid.
pub fn helper_verb(verb: Verb, args: &[String]) -> Result<Option<i32>, NativeError> {
    let usage = || NativeError::Op { id: String::new(), what: "parsing the helper's arguments", reason: format!("{} {args:?}", verb.as_str()) };
    match verb {
        Verb::Start | Verb::Delete => {
            let [id, root] = args else { return Err(usage()) };
            let f = if verb == Verb::Start { start } else { delete };
            f(Path::new(root), id).map(|()| None)
        }
        Verb::Create | Verb::Exec => {
            let [id, path, root, i, o, e, rest @ ..] = args else { return Err(usage()) };
            let open = |p: &String, write: bool| -> Result<Option<OwnedFd>, NativeError> {
                crate::stdio::open_or_null(p, write).map(|f| Some(f.into())).map_err(|err| NativeError::Stdio {
                    id: id.clone(),
                    path: p.to_string(),
                    reason: err.to_string(),
                })
            };
            let console = rest.first().filter(|s| !s.is_empty()).map(PathBuf::from);
            // With a terminal, the container's stdio is the pty's other end.
            let stdio = match console {
                Some(_) => StdioFds::default(),
                None => StdioFds { stdin: open(i, false)?, stdout: open(o, true)?, stderr: open(e, true)? },
            };
            let pid = match verb {
                Verb::Create => create(CreateRequest { id, bundle: Path::new(path), state_root: Path::new(root), stdio, console_socket: console })?,
                _ => exec(Path::new(root), id, Path::new(path), stdio, console)?,
            };
            Ok(Some(pid))
        }
        Verb::Compile | Verb::Wasm => Err(usage()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cgroup v2 path, on this host's cgroup2 mount (a hybrid host
    /// mounts one beside the v1 hierarchies; a unified host has it at
    /// /sys/fs/cgroup): a process is placed, listed, counted and the cgroup
    /// removed. Needs root.
    #[test]
    fn cgroup_v2_places_lists_and_removes() {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| rustix::fs::statfs(*p).map(|s| s.f_type == libc::CGROUP2_SUPER_MAGIC).unwrap_or(false))
            .expect("a cgroup2 mount (/sys/fs/cgroup/unified or /sys/fs/cgroup)");
        let path = PathBuf::from(format!("/berth-unit-{}", std::process::id()));
        let m = cgroup_at(root, &path, "v2-test").unwrap();
        assert!(matches!(m, libcgroups::common::AnyCgroupManager::V2(_)), "a cgroup2 mount gets the v2 manager");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = nix_pid(child.id());
        m.add_task(pid).unwrap();
        assert!(root.join(path.strip_prefix("/").unwrap()).is_dir());
        assert_eq!(m.get_all_pids().unwrap(), vec![pid]);
        let _ = child.kill();
        let _ = child.wait();
        m.remove().unwrap();
        assert!(!root.join(path.strip_prefix("/").unwrap()).exists());
    }

    fn nix_pid(pid: u32) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(pid as i32)
    }
}
