//! The shim's commands: `start` (group containers into one shim process),
//! `delete` (clean up after a dead shim), and serving the task API.
//!
//! containerd 1.6 and 1.7 speak task API v2; 2.x speaks v3. The messages
//! are the same on the wire, so one task service is registered under both
//! names. What `start` is told, and how it answers, is `bootstrap`'s.
use crate::bootstrap::Protocol;
use crate::grouping::{gathers_many, group_of, socket_path};
use crate::task::TaskService;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Flags;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::create_task;
use containerd_shim_protos::ttrpc::r#async::Server;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    #[error("the shim server exited as it started (status {0})")]
    ServerExited(i32),
    #[error("the shim server panicked: {0}")]
    Panicked(String),
    #[error("TTRPC_ADDRESS is not set")]
    NoTtrpcAddress,
    #[error("{what}")]
    Ttrpc {
        what: String,
        #[source]
        source: containerd_shim_protos::ttrpc::Error,
    },
    #[error("connecting to containerd at {address}")]
    Publisher {
        address: String,
        #[source]
        source: containerd_shim::Error,
    },
}

/// An io error's context, for `map_err`.
fn io(what: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> ServiceError {
    move |source| ServiceError::Io { what: what(), source }
}

/// `start`: finds the group's shim server, or starts it, and replies with
/// its address in the protocol containerd spoke (see `bootstrap`).
/// Nothing else is printed: containerd reads the combined stdout and
/// stderr as the reply. Returns the exit status.
///
/// Must be called while the process is single-threaded: a new server is
/// this process forked (one exec less than re-running the binary on every
/// start), and the child builds its own runtime.
pub fn start(mut flags: Flags) -> i32 {
    let id = flags.id.clone();
    let result = (|| -> Result<(Protocol, String), ServiceError> {
        let cwd = std::env::current_dir().map_err(io(|| "the bundle directory".into()))?;
        let request = crate::bootstrap::read(&flags)?;
        let group = group_of(request.config.grouping, &cwd, &flags.id);
        let address = request.socket_address(&group)?;
        // Starts of one group may run at once (a pod's containers): one
        // at a time looks for its server and makes it if missing, so that
        // only one is made.
        let lock = lock_starts(Path::new(socket_path(&address)))?;
        // When the group's server answers, it takes the container.
        if std::os::unix::net::UnixStream::connect(socket_path(&address)).is_err() {
            flags.action.clear();
            flags.socket = address.clone();
            flags.debug = request.opts.debug;
            fork_server(flags, gathers_many(&group), &request.opts.ttrpc_address, &lock)?;
        }
        drop(lock);
        std::fs::write(cwd.join("address"), &address).map_err(io(|| "writing the address file".into()))?;
        Ok((request.protocol, address))
    })();
    match result {
        Ok((protocol, address)) => {
            let mut out = std::io::stdout();
            let _ = out.write_all(&crate::bootstrap::reply(protocol, &address)).and_then(|()| out.flush());
            0
        }
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: starting the shim for {id}: {}", berth_host::error::chain(&e));
            1
        }
    }
}

/// An exclusive lock over the starts of every group whose socket is in
/// `socket`'s directory (containerd's shim socket directory), released
/// when the returned file and every copy of it are closed. The directory
/// is made (0750, as containerd's own shims make it) on a node where no
/// shim has run yet.
fn lock_starts(socket: &Path) -> Result<std::fs::File, ServiceError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = socket.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o750).create(dir).map_err(io(|| format!("making the socket directory {}", dir.display())))?;
    let f = std::fs::File::open(dir).map_err(io(|| format!("opening the socket directory {}", dir.display())))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| io(|| format!("locking the socket directory {}", dir.display()))(e.into()))?;
    Ok(f)
}

/// Forks the server for `flags.socket` (of a group that `many` says may
/// gather any number of containers), which publishes its events to
/// containerd at `ttrpc_address`, and returns once it serves (or fails
/// with its exit status). The child lets go of `lock`, which this process
/// holds until it has an answer.
fn fork_server(flags: Flags, many: bool, ttrpc_address: &str, lock: &std::fs::File) -> Result<(), ServiceError> {
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| io(|| "making a pipe".into())(e.into()))?;
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").map_err(io(|| "opening /dev/null".into()))?;
    // SAFETY: the process is single-threaded here (no runtime, no logging
    // thread has started; see `start`), so the child may go on running Rust.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io(|| "fork".into())(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // The server: its own session (containerd's signals to the start
        // command's group are not for it); stdout is the readiness pipe,
        // closed by `signal_started`.
        drop(ready_r);
        // SAFETY: closes this child's copy of the start lock's descriptor,
        // which nothing else in the child uses.
        unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(lock)) };
        // SAFETY: setsid and dup2 on descriptors this process owns.
        unsafe {
            libc::setsid();
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), libc::STDIN_FILENO);
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&ready_w), libc::STDOUT_FILENO);
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), libc::STDERR_FILENO);
        }
        drop((ready_w, null));
        // The server reads containerd's address where the legacy
        // protocol puts it (containerd 2.3 puts it there too, but the
        // message is what counts). The child is single-threaded still.
        std::env::set_var("TTRPC_ADDRESS", ttrpc_address);
        std::process::exit(run_server(flags, many));
    }
    drop(ready_w);
    let mut ready = std::fs::File::from(ready_r);
    let _ = std::io::Read::read_to_end(&mut ready, &mut Vec::new());
    let mut status = 0;
    // SAFETY: waitpid on our own child, without blocking.
    if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
        return Err(ServiceError::ServerExited(berth_host::native::exit_status(status)));
    }
    // As containerd's shims do: the server is killed before containerd on
    // memory pressure. (`start` has no log; a failure leaves the score as is.)
    let _ = containerd_shim::cgroup::set_cgroup_and_oom_score(pid as u32, "");
    Ok(())
}

/// Sets how many worker threads a shim server runs its tasks and wasm
/// guests on.
pub const WORKERS_ENV: &str = "BERTH_SHIM_WORKERS";
/// The most workers the shim of a pod (or of one container) starts, unless
/// [`WORKERS_ENV`] says otherwise.
const POD_WORKERS: u32 = 2;

/// Worker threads for a server: a worker for every CPU of `cpus` where the
/// group may gather any number of containers (`many`: the node's, a
/// `berth.dev/group`), else at most [`POD_WORKERS`]: one guest computes
/// while another, or containerd's calls, are served.
///
/// tokio starts every worker at once, and each keeps its stack's pages,
/// its run queue and a kernel task: 16 KiB of a pod's PSS for a worker
/// that idles, about 40 KiB for one that ran the pod's calls
/// (`bench/pod_workers.py`). A pod's shim on a 64-CPU node held 64.
fn default_workers(many: bool, cpus: u32) -> u32 {
    if many {
        cpus
    } else {
        cpus.min(POD_WORKERS)
    }
}

/// Runs the task server (`flags.socket`, of a group that `many` says may
/// gather any number of containers) to its end; the exit status.
pub fn run_server(flags: Flags, many: bool) -> i32 {
    one_malloc_arena();
    crate::logging::init(flags.debug, &flags.namespace, &flags.id);
    let workers = crate::options::env_count(WORKERS_ENV, default_workers(many, cpus()), 1024);
    // A worker going idle gives back what its deep calls (a container's
    // create) left of its stack.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers as usize)
        .on_thread_park(|| {
            crate::stack::trim();
        })
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: starting the async runtime: {e}");
            return 1;
        }
    };
    // The server runs on the runtime's workers; this thread, which would
    // only wait for it, advances the wasm engine's epoch meanwhile (a
    // thread less in every shim).
    let server = berth_host::wasm::engine::tick_epochs_here(|ticking| {
        let server = rt.spawn(async move {
            let _ticking = ticking;
            serve(flags).await
        });
        // What `start` touched before the fork.
        crate::stack::trim();
        server
    });
    let served = rt.block_on(server).unwrap_or_else(|e| Err(ServiceError::Panicked(e.to_string())));
    match served {
        Ok(()) => 0,
        Err(e) => {
            let e = berth_host::error::chain(&e);
            tracing::error!(error = %e, "shim failed");
            eprintln!("containerd-shim-berth-v1: {e}");
            1
        }
    }
}

/// Makes every thread of this process allocate from one malloc arena.
/// Must run before the process starts a thread.
///
/// glibc gives each thread that allocates an arena of its own (up to
/// eight per CPU), each with its own free chunks and slack: in an idle
/// shim holding one guest, three arenas beside the main heap kept about
/// 110 KiB more than one does, in every pod's shim. A thread's small
/// allocations come from its own cache (glibc's tcache) without taking
/// the arena's lock, so the threads contend for it rarely.
fn one_malloc_arena() {
    // SAFETY: mallopt sets one of malloc's tunables; it is called before
    // any other thread of this process exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The CPUs this process may run on. (The standard library's
/// `available_parallelism`, which tokio would ask, also parses cgroup
/// files: milliseconds on every shim start.)
fn cpus() -> u32 {
    rustix::thread::sched_getaffinity(None).map(|set| set.count()).unwrap_or(1).max(1)
}

/// `delete`: the shim serving this container is gone; undo its rootfs
/// mount and report the container killed.
pub fn delete(flags: &Flags) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_default();
    // A native container outlives its shim: kill what is left and remove
    // it, after the helpers that may still be making it (a shim killed
    // mid-create). (Nothing is printed: stdout is the reply.)
    let native_root = berth_host::native::state_root_for(&flags.address, &flags.namespace);
    berth_host::helper::kill_orphans(&flags.id, &native_root);
    let _ = berth_host::native::delete(&native_root, &flags.id);
    crate::rootfs::unmount(&cwd.join("rootfs"));
    let mut resp = DeleteResponse::new();
    resp.exit_status = 128 + libc::SIGKILL as u32;
    resp.exited_at = Some(crate::lifecycle::timestamp(std::time::SystemTime::now())).into();
    let bytes = resp.write_to_bytes().unwrap_or_default();
    let mut out = std::io::stdout();
    match out.write_all(&bytes).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: delete of {}: {e}", flags.id);
            1
        }
    }
}

/// Serves the task API on `flags.socket` until the last container is
/// deleted. When another shim of the group already serves that socket,
/// returns at once: that shim takes the container.
pub async fn serve(flags: Flags) -> Result<(), ServiceError> {
    let flags = &flags;
    let path = socket_path(&flags.socket);
    if Path::new(path).exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            tracing::debug!(socket = path, "the group's shim is already serving");
            signal_started();
            return Ok(());
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(io(|| format!("creating {}", dir.display())))?;
    }
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| ServiceError::NoTtrpcAddress)?;
    let publisher = RemotePublisher::new(&ttrpc_address).await.map_err(|source| ServiceError::Publisher { address: ttrpc_address.clone(), source })?;
    crate::reaper::start().map_err(io(|| "becoming the reaper of native containers".into()))?;
    let exit = Arc::new(ExitSignal::default());
    let task = Arc::new(TaskService::new(flags.namespace.clone(), flags.address.clone(), publisher, exit.clone()));
    task.warm_up();
    let v3 = create_task(task.clone());
    let v2 = create_task(task).into_iter().map(|(name, s)| (name.replace("containerd.task.v3.", "containerd.task.v2."), s)).collect();
    let ttrpc = |what: String| move |source| ServiceError::Ttrpc { what, source };
    let mut server = Server::new().bind(&flags.socket).map_err(ttrpc(format!("listening on {}", flags.socket)))?.register_service(v3).register_service(v2);
    server.start().await.map_err(ttrpc(format!("serving {}", flags.socket)))?;
    signal_started();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(socket = path, shim_pid = std::process::id(), workers, "berth shim serving");
    exit.wait().await;
    tracing::info!("berth shim exiting");
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Tells the `start` command (which reads our stdout until it closes)
/// that the server is up, by pointing stdout at stderr.
fn signal_started() {
    // SAFETY: dup2 on the process's own standard descriptors; both are
    // open for the life of the process.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arenas glibc's malloc has made in this process, from the report
    /// `malloc_info` writes (a `<heap>` element for each).
    #[cfg(target_env = "gnu")]
    fn malloc_arenas() -> usize {
        let mut buf: *mut libc::c_char = std::ptr::null_mut();
        let mut len = 0;
        // SAFETY: open_memstream writes the buffer's address and length to
        // the two locals; malloc_info writes to the stream it made, which
        // fclose flushes and closes. The buffer is then read once within
        // the length written and freed as open_memstream documents.
        let report = unsafe {
            let stream = libc::open_memstream(&mut buf, &mut len);
            assert!(!stream.is_null(), "open_memstream: {}", std::io::Error::last_os_error());
            assert_eq!(libc::malloc_info(0, stream), 0, "malloc_info");
            assert_eq!(libc::fclose(stream), 0, "fclose");
            let report = String::from_utf8_lossy(std::slice::from_raw_parts(buf.cast::<u8>(), len)).into_owned();
            libc::free(buf.cast());
            report
        };
        report.matches("<heap nr=").count()
    }

    #[test]
    fn a_pods_shim_starts_two_workers_however_many_cpus_the_node_has() {
        assert_eq!(default_workers(false, 64), 2);
        assert_eq!(default_workers(false, 2), 2);
        assert_eq!(default_workers(false, 1), 1);
        // The node's shim, or a berth.dev/group's, may gather busy guests.
        assert_eq!(default_workers(true, 64), 64);
        assert_eq!(default_workers(true, 1), 1);
    }

    #[cfg(target_env = "gnu")]
    #[test]
    fn threads_the_server_starts_share_one_malloc_arena() {
        if !crate::alone::in_own_process("service::tests::threads_the_server_starts_share_one_malloc_arena") {
            return;
        }
        let before = malloc_arenas();
        one_malloc_arena();
        // Eight threads, all alive at once, each holding what it allocated:
        // glibc would otherwise give each an arena of its own.
        let barrier = Arc::new(std::sync::Barrier::new(9));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let held: Vec<Box<[u8; 64]>> = (0..100).map(|i| Box::new([i; 64])).collect();
                    barrier.wait();
                    barrier.wait();
                    held.iter().map(|b| b[63] as usize).sum::<usize>()
                })
            })
            .collect();
        barrier.wait();
        let during = malloc_arenas();
        barrier.wait();
        for t in threads {
            assert_eq!(t.join().unwrap(), (0..100).sum::<usize>());
        }
        assert!(before >= 1, "malloc_info reported no arena");
        assert_eq!(during, before, "threads started after one_malloc_arena made arenas of their own");
    }

    #[test]
    fn starts_make_the_socket_directory_on_a_fresh_node() {
        // containerd's shim socket directory (/run/containerd/s) does not
        // exist until some shim makes it.
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("run/containerd/s/0123abcd");
        let lock = lock_starts(&socket).unwrap();
        let dir = socket.parent().unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o750, "{}", dir.display());
        drop(lock);
        // A second start takes the same lock again.
        lock_starts(&socket).unwrap();
    }
}
