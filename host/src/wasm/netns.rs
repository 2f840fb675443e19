//! Guests whose sockets live in another network namespace (a pod's).
//!
//! A socket belongs to the network namespace of the thread that makes it,
//! and WASI makes a guest's sockets (TCP, UDP, name lookups, outbound
//! wasi:http connections) on whichever thread runs the guest or its
//! blocking work. So the guests of one namespace run on an async runtime
//! of their own whose every thread, workers and blocking pool alike, joins
//! that namespace as it starts. One shim can then host pods with different
//! namespaces side by side, and `127.0.0.1` in a pod is the pod's loopback.
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("joining network namespace {path}: {source}")]
    Join { path: PathBuf, source: std::io::Error },
    #[error("starting the runtime of network namespace {path}: {source}")]
    Runtime { path: PathBuf, source: std::io::Error },
}

/// Worker threads of one namespace's runtime.
const WORKERS: usize = 2;
/// Threads for its blocking work (name lookups, file I/O).
const BLOCKING: usize = 16;

/// An async runtime whose threads all live in one network namespace. It
/// stops when the last holder drops it.
pub struct NetNamespace {
    path: PathBuf,
    rt: Option<tokio::runtime::Runtime>,
}

static LIVE: Mutex<Option<HashMap<PathBuf, Weak<NetNamespace>>>> = Mutex::new(None);

/// Moves the calling thread into the network namespace `ns` refers to.
fn join(ns: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: setns on an open namespace descriptor changes only the
    // calling thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn open(path: &Path) -> Result<std::fs::File, NetnsError> {
    std::fs::File::open(path).map_err(|source| NetnsError::Open { path: path.to_path_buf(), source })
}

/// Runs `f` on a short-lived thread inside the namespace at `path` (to
/// make one socket there, say), and returns what it returned.
pub fn within<T: Send>(path: &Path, f: impl FnOnce() -> std::io::Result<T> + Send) -> std::io::Result<T> {
    let ns = open(path).map_err(|e| std::io::Error::other(e.to_string()))?;
    on_thread_in(&ns, f).map_err(|e| std::io::Error::new(e.kind(), format!("joining network namespace {}: {e}", path.display())))?
}

/// Runs `f` on a short-lived thread that joined the namespace `ns`; the
/// outer error: the thread could not join it.
fn on_thread_in<T: Send>(ns: &std::fs::File, f: impl FnOnce() -> std::io::Result<T> + Send) -> std::io::Result<std::io::Result<T>> {
    std::thread::scope(|s| s.spawn(|| join(ns).map(|()| f())).join().map_err(|_| std::io::Error::other("the namespace thread panicked"))?)
}

/// Moves this whole process into the namespace at `path`. Only sound
/// while the process has a single thread (threads made later inherit it).
pub fn join_process(path: &Path) -> Result<(), NetnsError> {
    join(&open(path)?).map_err(|source| NetnsError::Join { path: path.to_path_buf(), source })
}

impl NetNamespace {
    /// The runtime of the namespace at `path`, shared with every guest
    /// already running there.
    pub fn get(path: &Path) -> Result<Arc<NetNamespace>, NetnsError> {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        let live = live.get_or_insert_with(HashMap::new);
        live.retain(|_, w| w.strong_count() > 0);
        if let Some(ns) = live.get(path).and_then(Weak::upgrade) {
            return Ok(ns);
        }
        let ns = Arc::new(Self::start(path)?);
        live.insert(path.to_path_buf(), Arc::downgrade(&ns));
        Ok(ns)
    }

    fn start(path: &Path) -> Result<NetNamespace, NetnsError> {
        let file = open(path)?;
        // Proven joinable once; the descriptor keeps the namespace alive.
        on_thread_in(&file, || Ok(())).and_then(|r| r).map_err(|source| NetnsError::Join { path: path.to_path_buf(), source })?;
        let file = Arc::new(file);
        let shown = path.display().to_string();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .max_blocking_threads(BLOCKING)
            .thread_name("berth-netns")
            .on_thread_start(move || {
                if let Err(e) = join(&file) {
                    // A guest on this thread would make its sockets in the
                    // shim's namespace: that must never happen.
                    tracing::error!(net_namespace = %shown, error = %e, "a guest thread cannot join its network namespace; stopping");
                    std::process::abort();
                }
            })
            .enable_all()
            .build()
            .map_err(|source| NetnsError::Runtime { path: path.to_path_buf(), source })?;
        tracing::info!(net_namespace = %path.display(), "guests of this network namespace get a runtime of their own");
        Ok(NetNamespace { path: path.to_path_buf(), rt: Some(rt) })
    }

    /// Where to spawn the namespace's guests.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.as_ref().expect("running until dropped").handle()
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        // Dropped from async code, where a blocking shutdown would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        tracing::debug!(net_namespace = %self.path.display(), "network namespace runtime stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's network namespace, as the kernel names it.
    fn current() -> String {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap().display().to_string()
    }

    #[test]
    fn every_thread_of_a_namespaces_runtime_lives_in_it() {
        let name = format!("berth-unit-{}", std::process::id());
        assert!(std::process::Command::new("ip").args(["netns", "add", &name]).status().expect("ip (iproute2)").success());
        let path = PathBuf::from(format!("/var/run/netns/{name}"));
        let want = within(&path, || Ok(current())).unwrap();
        assert_ne!(want, current());
        let ns = NetNamespace::get(&path).unwrap();
        assert!(Arc::ptr_eq(&ns, &NetNamespace::get(&path).unwrap()), "one runtime per namespace");
        // Spawned onto its workers (block_on alone would run on this thread).
        let task = ns.handle().spawn(async { (current(), tokio::task::spawn_blocking(current).await.unwrap()) });
        let (worker, blocking) = ns.handle().block_on(task).unwrap();
        assert_eq!((worker.as_str(), blocking.as_str()), (want.as_str(), want.as_str()));
        drop(ns);
        let e = NetNamespace::get(Path::new("/var/run/netns/no-such-namespace")).err().unwrap().to_string();
        assert!(e.contains("no-such-namespace"), "{e}");
        let _ = std::process::Command::new("ip").args(["netns", "del", &name]).status();
    }
}
