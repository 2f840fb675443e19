//! End to end through `ctr --runtime io.containerd.berth.v1` against a
//! private containerd (see `common::ctr`). Native (busybox) containers
//! through berth: run, exec, terminals, signals, stats, and OCI hooks
//! that take their time.
mod common;

use common::ctr::*;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn native_busybox_containers_run_through_berth() {
    let env = Env::new(&[]);
    env.import_busybox(BUSYBOX);
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, BUSYBOX, "bb1", "echo", "hello"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n", "{}", text(&o));
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, BUSYBOX, "bb2", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    // No descriptor of the shim (or its helper) leaks into the container:
    // the shell's own fds are exactly 0, 1 and 2. (`; true` keeps the
    // shell from exec'ing ls, whose own directory fd would show.)
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, BUSYBOX, "bb3", "sh", "-c", "ls /proc/$$/fd; true"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>(), ["0", "1", "2"], "{}", text(&o));
    // It is a container: its own pid namespace (it is pid 1) and hostname.
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, BUSYBOX, "bb4", "sh", "-c", "echo $$"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1", "{}", text(&o));
    // Kill: SIGKILL ends it with 137; the task's pid is the container's process.
    let child = env.spawn_run(&["--rm", "--runtime", RUNTIME, BUSYBOX, "bb5", "sleep", "1000"]);
    env.wait_status("bb5", "RUNNING");
    let ps = env.ctr(&["task", "ps", "bb5"]);
    let shim = env.shims();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).lines().skip(1).any(|l| shim.iter().any(|s| l.split_whitespace().next() == Some(&s.to_string()))),
        "the task's processes are not the shim: {}",
        text(&ps)
    );
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "bb5"]).status.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(137), "{}", text(&o));
    // Exec: processes run inside the running container (its pid namespace
    // and rootfs), with their own exit codes.
    let o = env.ctr(&["run", "-d", "--runtime", RUNTIME, BUSYBOX, "bb7", "sleep", "1000"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_status("bb7", "RUNNING");
    let o = env.ctr(&["task", "exec", "--exec-id", "sh1", "bb7", "sh", "-c", "echo in-exec; ls /; ps -o pid,comm | grep -c sleep; exit 5"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("in-exec\n") && out.contains("bin\n") && out.ends_with("1\n"), "{}", text(&o));
    // An exec with a terminal.
    let o = env.c.ctr_on_terminal(&["task", "exec", "-t", "--exec-id", "t1", "bb7", "sh", "-c", "tty; exit 6"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("/dev/pts/"), "{}", text(&o));
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    // Stats come from the container's cgroup.
    let o = env.ctr(&["task", "exec", "--exec-id", "spin", "bb7", "sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"]);
    assert!(o.status.success(), "{}", text(&o));
    let (cpu, mem, out) = metrics(&env, "bb7");
    assert!(cpu > 100_000_000 && mem > 100_000, "the cgroup saw the exec's work:\n{out}");
    let o = env.ctr(&["task", "exec", "--exec-id", "sh2", "bb7", "cat", "/proc/1/cmdline"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "sleep\x001000\x00", "pid 1 of the exec's pid namespace is the container's: {}", text(&o));
    // An exec whose program does not exist fails, and leaves no zombie
    // behind (the helper's half-made processes are reaped).
    let o = env.ctr(&["task", "exec", "--exec-id", "nope", "bb7", "/no/such/program"]);
    assert!(!o.status.success(), "{}", text(&o));
    env.wait_no_zombies();
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "bb7"]).status.success());
    env.wait_status("bb7", "STOPPED");
    assert!(env.ctr(&["task", "rm", "bb7"]).status.success());
    assert!(env.ctr(&["container", "rm", "bb7"]).status.success());
    // A terminal (ctr needs a console for -t).
    let script = format!("tty; echo $((40+2)); {CTR_DRAIN}; exit 4");
    let o = env.c.ctr_on_terminal(&["run", "--rm", "-t", "--runtime", RUNTIME, BUSYBOX, "tty1", "sh", "-c", &script]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("/dev/pts/0") && out.contains("42"), "{}", text(&o));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    // A shell that traps SIGTERM exits on it.
    let child = env.spawn_run(&["--rm", "--runtime", RUNTIME, BUSYBOX, "bb6", "sh", "-c", "trap 'exit 43' TERM; echo ready; while :; do sleep 0.1; done"]);
    env.wait_status("bb6", "RUNNING");
    std::thread::sleep(Duration::from_millis(300));
    assert!(env.ctr(&["task", "kill", "bb6"]).status.success());
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(43));
    // Nothing is left behind: no shim, no state.
    env.wait_no_shims();
    let state = env.native_state();
    let left: Vec<_> =
        std::fs::read_dir(&state).map(|d| d.flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().starts_with("bb")).collect()).unwrap_or_default();
    assert!(left.is_empty(), "native state left: {left:?}");
}

#[test]
fn slow_hooks_hold_up_only_their_own_container() {
    let env = Env::new(&[]);
    env.import_busybox(BUSYBOX);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // More containers whose poststop hooks wait than the shim has async
    // worker threads (one per CPU), and one more in the same shim that
    // must keep answering meanwhile. The hooks run on the host.
    let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) + 1;
    let hook = |script: String| serde_json::json!([{ "path": "/bin/sh", "args": ["sh", "-c", script] }]);
    for i in 0..n {
        let hooks = serde_json::json!({
            "poststart": hook(format!("echo {i} >> {d}/started")),
            "poststop": hook(format!("echo {i} >> {d}/stopping; while [ ! -e {d}/release ]; do sleep 0.05; done; echo {i} >> {d}/stopped")),
        });
        let spec = native_spec(&env, dir.path(), &format!("h{i}"), &["sleep", "1000"], "hooks", hooks);
        let o = env.ctr(&["run", "-d", "--null-io", "--config", spec.to_str().unwrap(), "--runtime", RUNTIME, &format!("h{i}")]);
        assert!(o.status.success(), "h{i}: {}", text(&o));
        env.wait_status(&format!("h{i}"), "RUNNING");
    }
    // Poststart hooks ran, and saw their status (a shim that reaps every
    // child must not take a hook's from the code waiting for it).
    assert_eq!(lines(&dir.path().join("started")), n, "every poststart hook ran once");
    let o = env.ctr(&["run", "-d", "--null-io", "--annotation", "berth.dev/group=hooks", "--runtime", RUNTIME, BUSYBOX, "other", "sleep", "1000"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_status("other", "RUNNING");
    assert_eq!(env.shims().len(), 1, "one shim serves the group");
    for i in 0..n {
        assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", &format!("h{i}")]).status.success());
        env.wait_status(&format!("h{i}"), "STOPPED");
    }
    let removals: Vec<_> = (0..n)
        .map(|i| {
            berth_tests::containerd::ctr_command()
                .arg("--address")
                .arg(env.c.socket())
                .args(["--namespace", "berth-test", "task", "rm", &format!("h{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines(&dir.path().join("stopping")) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} poststop hooks started: deletes wait for each other\ncontainerd log:\n{}",
            lines(&dir.path().join("stopping")),
            env.c.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every delete is inside its hook: the shim still serves the group's
    // other container.
    let mut ps = berth_tests::containerd::ctr_command()
        .arg("--address")
        .arg(env.c.socket())
        .args(["--namespace", "berth-test", "task", "ps", "other"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ps.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = ps.kill();
            let _ = std::fs::write(dir.path().join("release"), "");
            panic!("the shim did not answer `ctr task ps` within 10 s while {n} poststop hooks ran");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = ps.wait_with_output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).lines().count() >= 2, "{}", text(&o));
    assert_eq!(lines(&dir.path().join("stopped")), 0, "the hooks are still waiting");
    std::fs::write(dir.path().join("release"), "").unwrap();
    for (i, r) in removals.into_iter().enumerate() {
        let o = r.wait_with_output().unwrap();
        assert!(o.status.success(), "task rm h{i}: {}", text(&o));
    }
    assert_eq!(lines(&dir.path().join("stopped")), n, "every poststop hook ran to its end before its delete returned");
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "other"]).status.success());
    env.wait_status("other", "STOPPED");
    assert!(env.ctr(&["task", "rm", "other"]).status.success());
    for id in (0..n).map(|i| format!("h{i}")).chain(["other".to_string()]) {
        assert!(env.ctr(&["container", "rm", &id]).status.success());
    }
    env.wait_no_shims();
}

#[test]
fn recursive_read_only_bind_mounts_are_read_only_beneath_too() {
    let env = Env::new(&[(berth_tests::guests::FILE_TOOL_P1, "example.com/tool:1")]);
    env.import_busybox(BUSYBOX);
    let vol = WithSubmount::new(env.c.dir.path().join("rro-volume"));
    let mount = |options: &str| format!("type=bind,src={},dst=/v,options={options}", vol.0.display());
    // A native container: `ro` is the bind mount's own flag, and the
    // tmpfs beneath it stays writable; `rro` (mount_setattr, recursive)
    // makes it read-only too.
    let script = "touch /v/sub/f-$0 2>/dev/null; echo sub=$?; touch /v/t 2>/dev/null; echo top=$?";
    for (n, options, sub_writable) in [(1, "rbind:ro", true), (2, "rbind:rro", false)] {
        let id = format!("rro{n}");
        let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "--mount", &mount(options), BUSYBOX, &id, "sh", "-c", script, &id]);
        let want = format!("sub={}\ntop=1\n", if sub_writable { 0 } else { 1 });
        assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{options}: {}", text(&o));
        assert_eq!(vol.0.join("sub").join(format!("f-{id}")).exists(), sub_writable, "{options}");
    }
    // A wasm guest: a read-only grant covers all beneath it, `rro` as `ro`.
    let tool = |id: &str, options: &str, args: &[&str]| {
        let mount = mount(options);
        let mut run = vec!["run", "--rm", "--runtime", RUNTIME, "--mount", &mount, "example.com/tool:1", id, "/file-tool.wasm"];
        run.extend_from_slice(args);
        env.ctr(&run)
    };
    for (id, options) in [("rro3", "rbind:ro"), ("rro4", "rbind:rro")] {
        let o = tool(id, options, &["write", "/v/sub/from-wasm", "x"]);
        assert_eq!(o.status.code(), Some(1), "{options}: {}", text(&o));
        let o = tool(&format!("{id}r"), options, &["read", "/v/top.txt"]);
        assert_eq!((o.status.code(), String::from_utf8_lossy(&o.stdout).trim()), (Some(0), "top"), "{options}: {}", text(&o));
    }
    assert!(!vol.0.join("sub/from-wasm").exists());
}
