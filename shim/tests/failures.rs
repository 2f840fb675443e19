//! End to end through `ctr --runtime io.containerd.berth.v1` against a
//! private containerd (see `common::ctr`). When things die: a killed shim
//! is cleaned up and takes its workers and native containers with it;
//! containerd restarts keep tasks; two containerds keep containers of one
//! id apart.
mod common;

use berth_tests::guests;
use common::ctr::*;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn a_killed_shim_is_cleaned_up_and_containerd_restarts_keep_tasks() {
    let mut env = Env::new(&[(guests::WAT_SLEEP, "example.com/sleep:1")]);
    // containerd restarts while a guest runs: the task is still there and
    // its exit is still reported.
    assert!(env.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "example.com/sleep:1", "survivor"]).status.success());
    env.wait_status("survivor", "RUNNING");
    env.c.restart();
    env.wait_status("survivor", "RUNNING");
    assert!(env.ctr(&["task", "kill", "-s", "SIGTERM", "survivor"]).status.success());
    env.wait_status("survivor", "STOPPED");
    assert!(env.ctr(&["task", "rm", "survivor"]).status.success());
    assert!(env.ctr(&["container", "rm", "survivor"]).status.success());
    // The shim is killed: containerd reports the task stopped and ctr can
    // clean up; no mount of the bundle is left.
    assert!(env.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "example.com/sleep:1", "victim"]).status.success());
    env.wait_status("victim", "RUNNING");
    let shims = env.shims();
    assert_eq!(shims.len(), 1);
    // SAFETY: SIGKILL to the shim this test's containerd started.
    unsafe { libc::kill(shims[0] as i32, libc::SIGKILL) };
    // containerd notices, runs `shim delete`, and drops the task.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.task_status("victim").is_some_and(|s| s != "STOPPED") {
        assert!(Instant::now() < deadline, "containerd still shows the killed shim's task: {:?}", env.task_status("victim"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = env.ctr(&["task", "rm", "victim"]);
    assert!(o.status.success() || String::from_utf8_lossy(&o.stderr).contains("not found"), "{}", text(&o));
    assert!(env.ctr(&["container", "rm", "victim"]).status.success());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = env.c.dir.path().display().to_string();
    assert!(!mounts.lines().any(|l| l.contains(&root) && l.contains("victim")), "a rootfs mount of the killed shim's container is left:\n{mounts}");
}

#[test]
fn a_killed_shim_takes_its_workers_with_it() {
    let env = Env::new(&[]);
    import_as_user(&env, guests::WAT_SLEEP, "example.com/user-sleep:1");
    let o = env.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "example.com/user-sleep:1", "wsleep"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_status("wsleep", "RUNNING");
    let ps = env.ctr(&["task", "ps", "wsleep"]);
    let worker: i32 =
        String::from_utf8_lossy(&ps.stdout).lines().nth(1).and_then(|l| l.split_whitespace().next()?.parse().ok()).unwrap_or_else(|| panic!("{}", text(&ps)));
    let shims = env.shims();
    assert!(!shims.contains(&(worker as u32)), "the guest runs in a worker, not in the shim");
    // It takes on the user once it has loaded the guest.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
        if status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("1000")) {
            break;
        }
        assert!(Instant::now() < deadline, "the worker runs as uid 1000:\n{status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in shims {
        // SAFETY: SIGKILL to a shim this test's containerd started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{worker}")).exists() && !std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap_or_default().contains(") Z") {
        assert!(Instant::now() < deadline, "the worker outlived its shim");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.task_status("wsleep").is_some_and(|s| s != "STOPPED") {
        assert!(Instant::now() < deadline, "containerd still shows the task: {:?}", env.task_status("wsleep"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = env.ctr(&["task", "rm", "wsleep"]);
    assert!(env.ctr(&["container", "rm", "wsleep"]).status.success());
}

#[test]
fn a_killed_shim_takes_its_native_containers_with_it() {
    let env = Env::new(&[]);
    env.import_busybox(BUSYBOX);
    // A marker in the command line finds the container's process on the host.
    let marker = format!("4242{}", std::process::id());
    assert!(env.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, BUSYBOX, "orphan", "sleep", &marker]).status.success());
    env.wait_status("orphan", "RUNNING");
    let running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default().contains(&marker))
            .count()
    };
    assert_eq!(running(), 1);
    for pid in env.shims() {
        // SAFETY: SIGKILL to a shim this test's containerd started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    // containerd runs `shim delete`, which kills what is left and removes it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.task_status("orphan").is_some_and(|s| s != "STOPPED") || running() > 0 {
        assert!(Instant::now() < deadline, "after the shim died: task {:?}, {} container process(es) left", env.task_status("orphan"), running());
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = env.ctr(&["task", "rm", "orphan"]);
    assert!(o.status.success() || String::from_utf8_lossy(&o.stderr).contains("not found"), "{}", text(&o));
    assert!(env.ctr(&["container", "rm", "orphan"]).status.success());
    assert!(!env.native_state().join("orphan").exists(), "the native container's state is left");
}

#[test]
fn two_containerds_keep_native_containers_of_one_id_apart() {
    let envs = [Env::new(&[]), Env::new(&[])];
    for env in &envs {
        env.import_busybox(BUSYBOX);
        let o = env.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, BUSYBOX, "same", "sleep", "1000"]);
        assert!(o.status.success(), "{}", text(&o));
        env.wait_status("same", "RUNNING");
    }
    assert_ne!(envs[0].native_state(), envs[1].native_state());
    for env in &envs {
        assert!(env.native_state().join("same").is_dir(), "state of the running container at {}", env.native_state().display());
    }
    for env in &envs {
        assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "same"]).status.success());
        env.wait_status("same", "STOPPED");
        assert!(env.ctr(&["task", "rm", "same"]).status.success());
        assert!(env.ctr(&["container", "rm", "same"]).status.success());
        assert!(!env.native_state().join("same").exists());
    }
}
