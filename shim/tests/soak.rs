//! A shim soak: 2,000 create/start/kill/delete cycles through one group
//! shim at parallelism 8 (wasm modules, native busybox containers, killed
//! guests and served wasi:http components), with faults between and around
//! them: containerd restarted, shims SIGKILLed mid-create, kills during
//! create, deletes during start. Every cycle's container reports its true
//! exit status, and afterwards the shim's descriptors, threads, memory and
//! children are back at their baseline, with no mount, state or zombie
//! left. Bounded: a fixed number of cycles, each with deadlines.
mod common;

use berth_tests::guests;
use common::ctr::*;
use common::*;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const GROUP: &str = "berth.dev/group=soak";
const CYCLES: usize = 2000;
const PARALLEL: usize = 8;

/// What the kernel says of one process.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    fds: usize,
    threads: usize,
    rss_kb: u64,
    children: usize,
}

fn footprint(pid: u32) -> Footprint {
    let count = |d: &str| std::fs::read_dir(format!("/proc/{pid}/{d}")).map(|d| d.count()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    Footprint { fds: count("fd"), threads: count("task"), rss_kb, children: children_of(&[pid]).len() }
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).replace('\0', " ").contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Waits (10 s at most) until no process runs `needle`.
fn wait_gone(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(needle).is_empty() {
        assert!(Instant::now() < deadline, "a container process outlived its container: {needle:?} {:?}", processes_with(needle));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes what is left of container `id`, whatever state it is in; the
/// container record must go.
fn remove(env: &Env, id: &str) {
    let o = env.ctr(&["task", "rm", "-f", id]);
    assert!(o.status.success() || text(&o).contains("not found"), "task rm {id}: {}", text(&o));
    let o = env.ctr(&["container", "rm", id]);
    assert!(o.status.success(), "container rm {id}: {}", text(&o));
}

/// One cycle of kind `i % 8`: its container's exit status must be the true one.
fn cycle(env: &Env, i: usize) {
    let id = format!("c{i}");
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--null-io", "--runtime", RUNTIME, "--annotation", GROUP];
        all.extend_from_slice(args);
        env.ctr(&all)
    };
    match i % 8 {
        0..=2 => {
            let o = run(&["berth.test/hello:1", &id]);
            assert_eq!(code(&o), Some(0), "wasm cycle {id}: {}", text(&o));
        }
        3 | 4 => {
            let o = run(&["berth.test/busybox:1", &id, "/bin/sh", "-c", "exit 3"]);
            assert_eq!(code(&o), Some(3), "native cycle {id}: {}", text(&o));
        }
        5 | 6 => {
            // A guest (wasm, then native) killed while it runs.
            let (image, args): (&str, &[&str]) = if i % 8 == 5 { ("berth.test/sleep:1", &[]) } else { ("berth.test/busybox:1", &["/bin/sleep", "600"]) };
            let mut all = vec!["--rm", "--null-io", "--runtime", RUNTIME, "--annotation", GROUP, image, &id];
            all.extend_from_slice(args);
            let child = env.spawn_run(&all);
            env.wait_status(&id, "RUNNING");
            let o = env.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
            assert!(o.status.success(), "kill {id}: {}", text(&o));
            let o = child.wait_with_output().unwrap();
            assert_eq!(code(&o), Some(137), "killed cycle {id}: {}", text(&o));
        }
        _ => {
            // A served wasi:http component: answers, then drains on SIGTERM.
            let port = 20000 + i;
            let addr = format!("BERTH_HTTP_ADDR=127.0.0.1:{port}");
            let child = env.spawn_run(&["--rm", "--null-io", "--runtime", RUNTIME, "--annotation", GROUP, "--env", &addr, "berth.test/http:1", &id]);
            env.wait_status(&id, "RUNNING");
            assert_eq!(curl(&format!("http://127.0.0.1:{port}/soak")).0, "200", "http cycle {id}");
            let o = env.ctr(&["task", "kill", "-s", "SIGTERM", &id]);
            assert!(o.status.success(), "kill {id}: {}", text(&o));
            let o = child.wait_with_output().unwrap();
            assert_eq!(code(&o), Some(0), "http cycle {id}: {}", text(&o));
        }
    }
}

/// Cycles `from..to`, `PARALLEL` at a time.
fn churn(env: &Env, from: usize, to: usize) {
    let next = AtomicUsize::new(from);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return;
                }
                cycle(env, i);
            });
        }
    });
}

/// The berth shim server whose command line names container `id` (the
/// first container of its group): the one in a session of its own, not
/// the `start` or `delete` command containerd runs with the same flags.
fn shim_of(env: &Env, id: &str) -> Option<u32> {
    env.shims().into_iter().find(|&p| {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        // SAFETY: getsid only reads another process's session id.
        let leader = unsafe { libc::getsid(p as i32) } == p as i32;
        leader && String::from_utf8_lossy(&cmd).split('\0').any(|a| a == id)
    })
}

/// A shim SIGKILLed while it creates its first container, `delay` after
/// it appears: the create fails or its task is gone, and containerd's
/// clean-up leaves no process, mount or state of it.
fn shim_killed_mid_create(env: &Env, n: usize, delay: Duration) {
    let id = format!("victim{n}");
    let marker = format!("/bin/sleep 61{n}");
    let group = format!("berth.dev/group=victims{n}");
    let child = env.spawn_run(&["-d", "--null-io", "--runtime", RUNTIME, "--annotation", &group, "berth.test/busybox:1", &id, "/bin/sleep", &format!("61{n}")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let shim = loop {
        if let Some(p) = shim_of(env, &id) {
            break p;
        }
        assert!(Instant::now() < deadline, "no shim appeared for {id}");
        std::thread::sleep(Duration::from_millis(1));
    };
    std::thread::sleep(delay);
    // SAFETY: SIGKILL to a shim this test's containerd started.
    unsafe { libc::kill(shim as i32, libc::SIGKILL) };
    let _ = child.wait_with_output().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.task_status(&id).is_some_and(|s| s != "STOPPED") {
        assert!(Instant::now() < deadline, "the killed shim's task is still {:?}", env.task_status(&id));
        std::thread::sleep(Duration::from_millis(50));
    }
    remove(env, &id);
    wait_gone(&marker);
    // containerd cleans up after a dead shim in the background (the shim's
    // delete, then the bundle's unmount): its mounts must go as its
    // processes do, within a bound.
    let left = || mounts_under(env.c.dir.path()).into_iter().filter(|m| m.contains(&id)).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left().is_empty() {
        assert!(Instant::now() < deadline, "mounts of {id} are left: {:?}", left());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_thousand_cycles_with_faults_leave_the_shim_as_it_was() {
    let mut env =
        Env::new(&[(guests::HELLO_P1, "berth.test/hello:1"), (guests::WAT_SLEEP, "berth.test/sleep:1"), (guests::HTTP_HELLO_P2, "berth.test/http:1")]);
    env.import_busybox("berth.test/busybox:1");
    // The keeper holds the group's shim for the whole soak.
    let o = env.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "--annotation", GROUP, "berth.test/sleep:1", "keeper"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_status("keeper", "RUNNING");
    let shim = shim_of(&env, "keeper").expect("the group's shim");
    // Warm up every kind once (engine, pools, compiled code), then take the
    // baseline.
    churn(&env, CYCLES, CYCLES + 16);
    std::thread::sleep(Duration::from_secs(2));
    let base = footprint(shim);
    let t = Instant::now();

    churn(&env, 0, CYCLES / 2);
    eprintln!("soak: after {} cycles {:?}", CYCLES / 2, footprint(shim));
    // containerd restarts in the middle: the shim and its keeper go on.
    env.c.restart();
    env.wait_status("keeper", "RUNNING");
    churn(&env, CYCLES / 2, CYCLES);
    let churned = t.elapsed();

    // Faults around the group: shims killed mid-create at several points.
    for (n, ms) in [0, 20, 100, 400].into_iter().enumerate() {
        shim_killed_mid_create(&env, n, Duration::from_millis(ms));
    }
    // A kill sent while the container is being created, and a delete sent
    // while it starts: each ends with the container removable and nothing
    // of it left.
    for (n, fault) in ["kill", "delete"].into_iter().enumerate() {
        let id = format!("fault{n}");
        let marker = format!("/bin/sleep 62{n}");
        let child =
            env.spawn_run(&["-d", "--null-io", "--runtime", RUNTIME, "--annotation", GROUP, "berth.test/busybox:1", &id, "/bin/sleep", &format!("62{n}")]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = match fault {
                "kill" => env.ctr(&["task", "kill", "-s", "SIGKILL", &id]),
                _ => env.ctr(&["task", "rm", "-f", &id]),
            };
            if o.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "{fault} of {id} never took: {}", text(&o));
        }
        let _ = child.wait_with_output().unwrap();
        if fault == "kill" {
            env.wait_status(&id, "STOPPED");
        }
        remove(&env, &id);
        wait_gone(&marker);
    }

    // The keeper lived through it all and reports its true status.
    assert_eq!(env.task_status("keeper").as_deref(), Some("RUNNING"));
    assert_eq!(shim_of(&env, "keeper"), Some(shim), "the group's shim was replaced");
    // Back at the baseline: tokio's idle blocking threads end after 10 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = footprint(shim);
        if (now.fds <= base.fds && now.threads <= base.threads && now.children <= base.children) || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("soak: {CYCLES} cycles in {churned:?} ({:.1}/s); baseline {base:?}; after {after:?}", CYCLES as f64 / churned.as_secs_f64());
    assert!(after.fds <= base.fds, "descriptors leaked: {base:?} -> {after:?}");
    assert!(after.threads <= base.threads, "threads leaked: {base:?} -> {after:?}");
    assert!(after.children <= base.children, "children left: {base:?} -> {after:?}");
    // Allocator caches may keep some; a leak per cycle would be far more.
    assert!(after.rss_kb <= base.rss_kb + 10 * 1024, "memory grew: {base:?} -> {after:?}");
    env.wait_no_zombies();
    let state: Vec<_> = std::fs::read_dir(env.native_state()).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(state.is_empty(), "native state left: {state:?}");
    let mounts: Vec<String> = mounts_under(env.c.dir.path()).into_iter().filter(|m| !m.contains("keeper")).collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");

    let o = env.ctr(&["task", "kill", "-s", "SIGKILL", "keeper"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_status("keeper", "STOPPED");
    let o = env.ctr(&["task", "rm", "keeper"]);
    assert!(text(&o).contains("137"), "the keeper's exit status: {}", text(&o));
    assert!(env.ctr(&["container", "rm", "keeper"]).status.success());
    env.wait_no_shims();
}
