//! End to end through `ctr --runtime io.containerd.berth.v1` against a
//! private containerd (see `common::ctr`). Containers of one group
//! (`berth.dev/group`, a pod) share one shim process, wasm and native
//! alike; concurrent starts make one.
mod common;

use berth_tests::guests;
use common::ctr::*;
use common::*;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn fifty_grouped_containers_share_one_shim() {
    let env = Env::new(&[(guests::WAT_SLEEP, "example.com/sleep:1")]);
    let n = 50;
    for i in 0..n {
        let id = format!("g{i}");
        let o = env.ctr(&["run", "-d", "--null-io", "--annotation", "berth.dev/group=web", "--runtime", RUNTIME, "example.com/sleep:1", &id]);
        assert!(o.status.success(), "{id}: {}", text(&o));
    }
    for i in 0..n {
        env.wait_status(&format!("g{i}"), "RUNNING");
    }
    assert_eq!(env.shims().len(), 1, "{n} grouped containers must be served by one shim: {:?}", env.shims());
    // Stats of a running guest come from the shim.
    let o = env.ctr(&["task", "metrics", "g0"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("memory.usage_in_bytes"), "{}", text(&o));
    // Killing one leaves the others running; the shim leaves with the last.
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "g0"]).status.success());
    env.wait_status("g0", "STOPPED");
    env.wait_status("g1", "RUNNING");
    for i in 0..n {
        let id = format!("g{i}");
        if i > 0 {
            assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", &id]).status.success());
            env.wait_status(&id, "STOPPED");
        }
        assert!(env.ctr(&["task", "rm", &id]).status.success());
        assert!(env.ctr(&["container", "rm", &id]).status.success());
    }
    env.wait_no_shims();
    // Without a group, each container gets its own shim.
    for id in ["solo1", "solo2"] {
        assert!(env.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "example.com/sleep:1", id]).status.success());
        env.wait_status(id, "RUNNING");
    }
    assert_eq!(env.shims().len(), 2);
    for id in ["solo1", "solo2"] {
        assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", id]).status.success());
        env.wait_status(id, "STOPPED");
        assert!(env.ctr(&["task", "rm", id]).status.success());
    }
}

#[test]
fn concurrent_starts_of_one_group_share_one_shim() {
    let env = Env::new(&[(guests::WAT_SLEEP, "example.com/sleep:1")]);
    // Eight containers of a new group started at once: every start finds
    // no server yet, and only one may make it. (Three rounds: the race was
    // lost about every other round.)
    for round in 0..3 {
        let group = format!("berth.dev/group=race{round}");
        let ids: Vec<String> = (0..8).map(|i| format!("race{round}-{i}")).collect();
        let runs: Vec<_> = ids
            .iter()
            .map(|id| {
                berth_tests::containerd::ctr_command()
                    .arg("--address")
                    .arg(env.c.socket())
                    .args(["--namespace", "berth-test", "run", "-d", "--null-io", "--annotation", &group, "--runtime", RUNTIME, "example.com/sleep:1", id])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (id, r) in ids.iter().zip(runs) {
            let o = r.wait_with_output().unwrap();
            assert!(o.status.success(), "{id}: {}", text(&o));
        }
        for id in &ids {
            env.wait_status(id, "RUNNING");
        }
        assert_eq!(env.shims().len(), 1, "one shim serves the group");
        for id in &ids {
            assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", id]).status.success());
            env.wait_status(id, "STOPPED");
            assert!(env.ctr(&["task", "rm", id]).status.success());
        }
        env.wait_no_shims();
    }
}

#[test]
fn a_group_mixes_native_and_wasm_containers_in_one_shim() {
    let env = Env::new(&[(guests::WAT_SLEEP, "example.com/sleep:1")]);
    env.import_busybox(BUSYBOX);
    let group = "berth.dev/group=mixed";
    let o = env.ctr(&["run", "-d", "--runtime", RUNTIME, "--annotation", group, BUSYBOX, "pause", "sleep", "1000"]);
    assert!(o.status.success(), "{}", text(&o));
    for id in ["w1", "w2"] {
        let o = env.ctr(&["run", "-d", "--runtime", RUNTIME, "--annotation", group, "example.com/sleep:1", id]);
        assert!(o.status.success(), "{}", text(&o));
    }
    for id in ["pause", "w1", "w2"] {
        env.wait_status(id, "RUNNING");
    }
    assert_eq!(env.shims().len(), 1, "one shim serves the group");
    // Exec into a wasm container is refused, saying why.
    let o = env.ctr(&["task", "exec", "--exec-id", "x", "w1", "/bin/sh"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not supported for wasm containers"), "{}", text(&o));
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "pause"]).status.success());
    env.wait_status("pause", "STOPPED");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(env.task_status("w1").as_deref(), Some("RUNNING"));
    assert_eq!(env.task_status("w2").as_deref(), Some("RUNNING"));
    for id in ["w1", "w2"] {
        assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", id]).status.success());
        env.wait_status(id, "STOPPED");
    }
    for id in ["pause", "w1", "w2"] {
        assert!(env.ctr(&["task", "rm", id]).status.success());
        assert!(env.ctr(&["container", "rm", id]).status.success());
    }
}

#[test]
fn the_node_wide_mode_serves_every_pod_from_one_shim() {
    let env = Env::new(&[(guests::WAT_SLEEP, "example.com/sleep:1")]);
    env.import_busybox(BUSYBOX);
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.toml");
    std::fs::write(&node, "grouping = \"node\"\n").unwrap();
    let node = node.to_str().unwrap();
    // Two pods (a native pause and a wasm app each) and a container of no
    // pod: one shim for all of them in the node-wide mode.
    let runs: [(&str, &str, &[&str]); 5] = [
        ("pod-a", "pod-a", &[BUSYBOX, "pod-a", "/bin/sleep", "1000"]),
        ("app-a", "pod-a", &["example.com/sleep:1", "app-a"]),
        ("pod-b", "pod-b", &[BUSYBOX, "pod-b", "/bin/sleep", "1000"]),
        ("app-b", "pod-b", &["example.com/sleep:1", "app-b"]),
        ("loose", "", &["example.com/sleep:1", "loose"]),
    ];
    for (id, pod, image_and_args) in runs {
        let sandbox = format!("io.kubernetes.cri.sandbox-id={pod}");
        let mut args = vec!["run", "-d", "--null-io", "--runtime", RUNTIME, "--runtime-config-path", node];
        if !pod.is_empty() {
            args.extend(["--annotation", &sandbox]);
        }
        args.extend(image_and_args);
        let o = env.ctr(&args);
        assert!(o.status.success(), "{id}: {}", text(&o));
        env.wait_status(id, "RUNNING");
    }
    assert_eq!(env.shims().len(), 1, "the node-wide mode must serve all five containers from one shim: {:?}", env.shims());
    // A pod's end leaves the other pods running in the shim.
    for id in ["app-a", "pod-a"] {
        assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", id]).status.success());
        env.wait_status(id, "STOPPED");
        assert!(env.ctr(&["task", "rm", id]).status.success());
    }
    env.wait_status("app-b", "RUNNING");
    env.wait_status("pod-b", "RUNNING");
    // The default mode, in the same containerd: a shim per pod.
    let o = env.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "--annotation", "io.kubernetes.cri.sandbox-id=pod-c", "example.com/sleep:1", "app-c"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_status("app-c", "RUNNING");
    assert_eq!(env.shims().len(), 2, "a pod outside the node-wide mode gets its own shim");
    for id in ["app-b", "pod-b", "loose", "app-c"] {
        assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", id]).status.success());
        env.wait_status(id, "STOPPED");
        assert!(env.ctr(&["task", "rm", id]).status.success());
    }
    env.wait_no_shims();
}

#[test]
fn a_bad_shim_config_fails_the_start_and_names_the_file() {
    let env = Env::new(&[(guests::WAT_SLEEP, "example.com/sleep:1")]);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("shim.toml");
    std::fs::write(&bad, "grouping = \"cluster\"\n").unwrap();
    let o = env.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "--runtime-config-path", bad.to_str().unwrap(), "example.com/sleep:1", "bad"]);
    assert!(!o.status.success());
    let err = text(&o);
    assert!(err.contains(bad.to_str().unwrap()) && err.contains("\"cluster\"") && err.contains("\"node\""), "{err}");
    assert!(env.shims().is_empty(), "no shim may be left: {:?}", env.shims());
}
