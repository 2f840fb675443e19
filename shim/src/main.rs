//! `containerd-shim-berth-v1`: containerd's shim v2 for berth
//! (`io.containerd.berth.v1`). One shim process serves a group of
//! containers (a pod, a `berth.dev/group`, or one container) and runs their
//! wasm guests in-process on one shared engine.
//!
//! It is also berth's one multi-call binary: run under any other name (the
//! release ships it as `berth`, with `containerd-shim-berth-v1` a link to
//! it), it is the `berth` command. The CLI, the shim and their helpers
//! then share one file's code pages, and a node installs one binary.
mod any;
mod bootstrap;
mod console;
mod container;
mod events;
mod exec;
mod grouping;
mod helper;
mod info;
mod lifecycle;
mod logging;
mod options;
mod reaper;
mod rootfs;
mod service;
mod stack;
mod task;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Re-executed as the helper (berth_host::helper): nothing else (no
    // async runtime, no threads) may start.
    if args.get(1).and_then(|a| a.to_str()) == Some(berth_host::helper::ARG) {
        let rest: Vec<String> = args[2..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        std::process::exit(berth_host::helper_main::main(&rest));
    }
    if !invoked_as_shim(args.first()) {
        std::process::exit(berth_host::cli::main());
    }
    let mut flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: {e}");
            std::process::exit(1);
        }
    };
    if flags.info {
        std::process::exit(info::print());
    }
    let action = std::mem::take(&mut flags.action);
    let code = match action.as_str() {
        "start" => service::start(flags),
        "delete" => service::delete(&flags),
        // Not run by containerd: a server for any number of containers.
        "" => service::run_server(flags, true),
        other => {
            eprintln!("containerd-shim-berth-v1: unknown action {other:?}; containerd calls start, delete, or no action");
            1
        }
    };
    std::process::exit(code);
}

/// Whether argv[0] names the shim: containerd runs it by its runtime's
/// binary name, `containerd-shim-berth-v1`.
fn invoked_as_shim(argv0: Option<&std::ffi::OsString>) -> bool {
    let name = argv0.map(std::path::Path::new).and_then(std::path::Path::file_name);
    name.is_some_and(|n| n.as_encoded_bytes().starts_with(b"containerd-shim-"))
}

#[cfg(test)]
mod tests {
    use super::invoked_as_shim;

    #[test]
    fn the_shim_is_known_by_its_name_and_any_other_name_is_berth() {
        let shim = |s: &str| invoked_as_shim(Some(&s.into()));
        assert!(shim("containerd-shim-berth-v1"));
        assert!(shim("/usr/local/bin/containerd-shim-berth-v1"));
        assert!(!shim("berth"));
        assert!(!shim("/usr/local/bin/berth"));
        assert!(!shim("/opt/containerd-shim-berth-v1/berth"));
        assert!(!invoked_as_shim(None));
    }
}

/// Runs a test again in a process of its own, for tests that measure the
/// whole process (its open descriptors, what it has loaded), which other
/// tests running beside them in the same process would disturb.
#[cfg(test)]
mod alone {
    const CHILD: &str = "BERTH_TEST_ALONE";

    /// In the test process: runs the test `name` (its path in this crate)
    /// in a process of its own, asserts that it passed there, and returns
    /// false. In that process: returns true; the test's body runs there.
    pub fn in_own_process(name: &str) -> bool {
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, name)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "{name}, run in a process of its own:\n{text}");
        false
    }
}

/// Counts this thread's heap allocations and the bytes they hold, for
/// tests that check what an operation allocates.
#[cfg(test)]
mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
        static LIVE: Cell<i64> = const { Cell::new(0) };
    }

    struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged; the
    // counters are const-initialized thread-local `Cell`s without a
    // destructor, whose use neither allocates nor can fail.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            COUNT.with(|c| c.set(c.get() + 1));
            LIVE.with(|c| c.set(c.get() + layout.size() as i64));
            // SAFETY: the caller's contract for `alloc` is passed on.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.with(|c| c.set(c.get() - layout.size() as i64));
            // SAFETY: the caller's contract for `dealloc` is passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// Allocations made by this thread so far.
    pub fn allocations() -> u64 {
        COUNT.with(|c| c.get())
    }

    /// Bytes allocated by this thread so far, less those it freed.
    pub fn live_bytes() -> i64 {
        LIVE.with(|c| c.get())
    }
}
