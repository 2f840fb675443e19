//! Native containers: Linux namespace containers for native entrypoints
//! (a pod's pause, sidecars, ordinary images), built with youki's
//! `libcontainer` from the bundle's `config.json`: namespaces, pivot_root,
//! masked and read-only paths, capabilities, rlimits, no_new_privileges,
//! seccomp, hooks and cgroups (v1 and v2) as the spec says.
//!
//! Creating a container forks and runs Rust in the children, which is only
//! sound in a single-threaded process. [`create`] and [`exec`] must
//! therefore run in one: the `berth` command before it starts any thread,
//! or the helper the shim re-executes itself as ([`helper_main`]). Every
//! other operation here only signals, reads state or removes files, and is
//! safe from any thread.
//!
//! The container's processes outlive the process that created them: its
//! creator must be a child subreaper ([`become_subreaper`]) to wait for them.
use libcgroups::common::{CgroupConfig, CgroupManager};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

mod preflight;
pub mod usage;
pub use usage::Usage;

/// The argv[1] that makes berth's binaries (the shim, `berth`) the native
/// helper.
pub const HELPER_ARG: &str = "__berth-native";

/// The helper for `verb` (`create` or `exec`): this executable again, its
/// arguments following (see [`helper_main`]).
///
/// The helper (and so every container's init, and each exec'd process
/// while it is set up inside the container) runs from a read-only bind
/// mount of this binary in a mount namespace of its own: a process in the
/// container that catches `/proc/PID/exe` of one of them and reopens it to
/// write (the class of CVE-2019-5736) gets EROFS, and the binary on disk
/// is never exposed. Nothing is copied, and nothing outlives the helper's
/// namespace.
pub fn helper_command(verb: &str) -> std::io::Result<std::process::Command> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::process::CommandExt;
    let exe = std::fs::read_link("/proc/self/exe")?;
    if exe.as_os_str().as_bytes().ends_with(b" (deleted)") {
        return Err(std::io::Error::other(format!("this binary ({}) was replaced on disk; restart it", exe.display())));
    }
    let path = std::ffi::CString::new(exe.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mount = std::ffi::CString::new(mount_point_of(&exe)?.into_os_string().into_vec()).map_err(std::io::Error::other)?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg(HELPER_ARG).arg(verb);
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || read_only_self(&path, &mount));
    }
    Ok(cmd)
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
/// otherwise; see [`preflight`].)
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

/// Runs a helper command; the pid it made, or its one-line error.
pub fn run_helper(mut cmd: std::process::Command) -> Result<i32, String> {
    let out = crate::process::output(&mut cmd).map_err(|e| format!("running the native helper: {e}"))?;
    match (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().parse::<i32>()) {
        (true, Ok(pid)) if pid > 0 => Ok(pid),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err.lines().last().unwrap_or("the native helper failed").to_string())
        }
    }
}

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
        Err(e) => Err(op(id, "loading its state")(e)),
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

/// The helper the shim re-executes itself as (`argv[1]` = [`HELPER_ARG`]),
/// single-threaded, to create containers and exec processes:
///
/// `create ID BUNDLE STATE_ROOT STDIN STDOUT STDERR [CONSOLE_SOCKET]`
/// `exec ID PROCESS_JSON STATE_ROOT STDIN STDOUT STDERR [CONSOLE_SOCKET]`
/// `wasm ID BUNDLE MODULE|- STDIN STDOUT STDERR`: runs a wasm container to
/// its end under its `process.user` ([`crate::wasm::worker`]); exits with
/// its status.
/// `compile ...`: compiles wasm for the caller ([`crate::wasm::load::compile_main`]).
///
/// Stdio paths may be empty (`/dev/null`). Prints the new process's pid on
/// stdout; on failure, one line on stderr and exit status 1.
pub fn helper_main(args: &[String]) -> i32 {
    if args.first().map(String::as_str) == Some(crate::wasm::load::COMPILE_VERB) {
        return crate::wasm::load::compile_main(&args[1..]);
    }
    // libcontainer reports why a container could not be set up through
    // tracing: its errors go to stderr, which the caller reads.
    let filter = std::env::var("BERTH_LOG").unwrap_or_else(|_| "error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .try_init();
    let result = (|| -> Result<i32, NativeError> {
        let [verb, id, path, root, i, o, e, rest @ ..] = args else {
            return Err(NativeError::Op { id: String::new(), what: "parsing the helper's arguments", reason: format!("{args:?}") });
        };
        if verb == "wasm" {
            // A wasm container under its own user: runs to its end here
            // (and opens its own stdio). `root` is its artifact module's
            // digest, or `-`.
            let module = Some(root.as_str()).filter(|m| *m != "-");
            std::process::exit(crate::wasm::worker::run_bundle(id, Path::new(path), module, [i, o, e]));
        }
        let open = |p: &String, write: bool| -> Result<Option<OwnedFd>, NativeError> {
            crate::wasm::open_stdio_or_null(p, write).map(|f| Some(f.into())).map_err(|err| NativeError::Stdio {
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
        match verb.as_str() {
            "create" => create(CreateRequest { id, bundle: Path::new(path), state_root: Path::new(root), stdio, console_socket: console }),
            "exec" => exec(Path::new(root), id, Path::new(path), stdio, console),
            other => Err(NativeError::Op { id: id.clone(), what: "parsing the helper's arguments", reason: format!("unknown verb {other:?}") }),
        }
    })();
    match result {
        Ok(pid) => {
            println!("{pid}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
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
