//! End to end through `ctr --runtime io.containerd.berth.v1` against a
//! private containerd (see `common::ctr`). Wasm guests through `ctr`:
//! output, args, env and exit codes, stdin, signals and traps, stats,
//! compile errors, the guest pool, and CNCF wasm artifacts read from
//! containerd's content store.
mod common;

use berth_host::oci::image::build::{self, BuildOptions};
use berth_tests::guests;
use common::ctr::*;
use common::*;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn runs_hello_with_output_args_env_and_exit_codes() {
    let env = Env::new(&[(guests::HELLO_P1, "example.com/hello:1"), (guests::HELLO_P2, "example.com/hello:2"), (guests::ARGS_ENV_P1, "example.com/args:1")]);
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "example.com/hello:1", "h1"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("hello from a berth guest (p1 module)"), "{}", text(&o));
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "example.com/hello:2", "h2"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("(p2 component)"), "{}", text(&o));
    for code in ["0", "3", "42"] {
        let id = format!("args-{code}");
        let o = env.ctr(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--env",
            "GREETING=hi there",
            "example.com/args:1",
            &id,
            "/args-env.wasm",
            "a",
            "b c",
            "--exit",
            code,
        ]);
        assert_eq!(o.status.code(), Some(code.parse().unwrap()), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("arg[2]=b c") && out.contains("env GREETING=hi there"), "{out}");
    }
    // --null-io: no stdio at all still runs.
    let o = env.ctr(&["run", "--rm", "--null-io", "--runtime", RUNTIME, "example.com/hello:1", "quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    // Terminals are refused with a clear error (ctr needs a console for -t).
    let o = env.c.ctr_on_terminal(&["run", "--rm", "-t", "--runtime", RUNTIME, "example.com/hello:1", "tty"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stdout).contains("terminals (-t) are not supported"), "{}", text(&o));
    // Nothing is left: no tasks, the shim gone.
    env.wait_no_shims();
}

#[test]
fn stdin_reaches_the_guest_and_its_eof_too() {
    let env = Env::new(&[(guests::FILE_TOOL_P1, "example.com/tool:1")]);
    let mut child = berth_tests::containerd::ctr_command()
        .arg("--address")
        .arg(env.c.socket())
        .args(["--namespace", "berth-test", "run", "--rm", "--runtime", RUNTIME, "example.com/tool:1", "cat1", "/file-tool.wasm", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"line one\nline two\n").unwrap();
    } // closed: the guest must see EOF and exit
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "line one\nline two\n", "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("read 18 bytes from stdin"), "{}", text(&o));
}

#[test]
fn kill_ends_guests_with_128_plus_signal_and_traps_are_134() {
    let env = Env::new(&[
        (berth_tests::guests::WAT_LOOP, "example.com/loop:1"),
        (guests::WAT_SLEEP, "example.com/sleep:1"),
        (guests::WAT_TRAP, "example.com/trap:1"),
    ]);
    for (image, signal, want) in [("example.com/loop:1", "SIGTERM", 143), ("example.com/sleep:1", "SIGKILL", 137), ("example.com/sleep:1", "SIGINT", 130)] {
        let id = format!("k-{}", signal.to_lowercase());
        let child = env.spawn_run(&["--rm", "--runtime", RUNTIME, image, &id]);
        env.wait_status(&id, "RUNNING");
        let o = env.ctr(&["task", "kill", "-s", signal, &id]);
        assert!(o.status.success(), "{}", text(&o));
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(want), "{image} {signal}: {}", text(&o));
    }
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "example.com/trap:1", "trap"]);
    assert_eq!(o.status.code(), Some(134), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("trapped"), "{}", text(&o));
    // Kill after exit and a second delete are harmless.
    let o = env.ctr(&["run", "-d", "--runtime", RUNTIME, "example.com/trap:1", "done"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_status("done", "STOPPED");
    assert!(env.ctr(&["task", "kill", "done"]).status.success());
    assert!(env.ctr(&["task", "rm", "done"]).status.success());
    assert!(!env.ctr(&["task", "rm", "done"]).status.success(), "a second delete reports the task gone");
    assert!(env.ctr(&["container", "rm", "done"]).status.success());
}

#[test]
fn stats_report_guest_cpu_and_memory() {
    let env = Env::new(&[(guests::WAT_LOOP, "example.com/loop:1")]);
    assert!(env.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "example.com/loop:1", "spin"]).status.success());
    env.wait_status("spin", "RUNNING");
    std::thread::sleep(Duration::from_millis(500));
    let (cpu, mem, out) = metrics(&env, "spin");
    assert!(cpu > 100_000_000, "a spinning guest used CPU for 0.5 s:\n{out}");
    assert!(mem >= 65536, "one wasm page at least:\n{out}");
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "spin"]).status.success());
    env.wait_status("spin", "STOPPED");
    assert!(env.ctr(&["task", "rm", "spin"]).status.success());
}

#[test]
fn modules_are_compiled_in_a_child_process_whose_errors_reach_ctr() {
    let env = Env::new(&[]);
    let extra = env.c.dir.path().join("extra");
    std::fs::create_dir(&extra).unwrap();
    // A module header followed by a section that is not there.
    std::fs::write(extra.join("bad.wasm"), b"\0asm\x01\0\0\0\x01\x7f").unwrap();
    let opts = BuildOptions {
        module: Some(guests::HELLO_P1.into()),
        name: "example.com/two:1".into(),
        artifact: false,
        adds: vec![(extra, "/x".into())],
        rootfs: None,
        entrypoint: vec![],
    };
    import(&env.c, "berth-test", &opts);
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "example.com/two:1", "bad1", "/x/bad.wasm"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("/x/bad.wasm") && err.contains("not valid WebAssembly"), "{}", text(&o));
    // The compiler process wrote nothing to the cache for it, and a valid
    // module compiled the same way runs (and is cached).
    let cache = env._berth_root.path().join("cache");
    let entries = || std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries(), 0);
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "example.com/two:1", "good1"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("hello from a berth guest"), "{}", text(&o));
    assert!(entries() > 0);
    let log = env.c.log();
    assert!(log.lines().any(|l| l.contains("compiled (precompile cache miss)") && l.contains("hello.wasm") && l.contains("in_child=true")), "{log}");
}

#[test]
fn a_full_shim_pool_refuses_the_next_guest_with_the_setting_to_change() {
    let env = Env::with_env(&[(guests::WAT_SLEEP, "example.com/sleep:1"), (guests::HELLO_P1, "example.com/hello:1")], &[("BERTH_SHIM_MAX_GUESTS", "2")]);
    for id in ["full1", "full2"] {
        let o = env.ctr(&["run", "-d", "--null-io", "--annotation", "berth.dev/group=full", "--runtime", RUNTIME, "example.com/sleep:1", id]);
        assert!(o.status.success(), "{}", text(&o));
        env.wait_status(id, "RUNNING");
    }
    let o = env.ctr(&["run", "--rm", "--annotation", "berth.dev/group=full", "--runtime", RUNTIME, "example.com/hello:1", "full3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(125) && err.contains("BERTH_SHIM_MAX_GUESTS") && err.contains("limit of 2"), "{}", text(&o));
    // The two running guests are untouched, and another group has room.
    assert_eq!((env.task_status("full1").as_deref(), env.task_status("full2").as_deref()), (Some("RUNNING"), Some("RUNNING")));
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "example.com/hello:1", "elsewhere"]);
    assert!(o.status.success(), "{}", text(&o));
    for id in ["full1", "full2"] {
        let _ = env.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    }
    for id in ["full1", "full2"] {
        env.wait_status(id, "STOPPED");
        assert!(env.ctr(&["task", "rm", id]).status.success());
        assert!(env.ctr(&["container", "rm", id]).status.success());
    }
}

#[test]
fn berth_shim_workers_sets_how_many_threads_a_shim_runs_guests_on() {
    let env = Env::with_env(&[(guests::WAT_SLEEP, "example.com/sleep:1")], &[("BERTH_SHIM_WORKERS", "1")]);
    let o = env.ctr(&["run", "-d", "--null-io", "--annotation", "io.kubernetes.cri.sandbox-id=pw", "--runtime", RUNTIME, "example.com/sleep:1", "pw1"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_status("pw1", "RUNNING");
    let log = env.c.log();
    let serving: Vec<&str> = log.lines().filter(|l| l.contains("berth shim serving")).collect();
    assert!(serving.len() == 1 && serving[0].contains("workers=1"), "{log}");
    let _ = env.ctr(&["task", "kill", "-s", "SIGKILL", "pw1"]);
    env.wait_status("pw1", "STOPPED");
    assert!(env.ctr(&["task", "rm", "pw1"]).status.success());
    assert!(env.ctr(&["container", "rm", "pw1"]).status.success());
}

#[test]
fn wasm_artifacts_run_from_containerds_content_store() {
    let env = Env::new(&[(guests::HELLO_P1, "example.com/compat:1")]);
    for (module, name) in [(guests::ARGS_ENV_P1, "example.com/args-artifact:1"), (guests::HELLO_P2, "example.com/hello-artifact:2")] {
        let built =
            build::build(&BuildOptions { module: Some(module.into()), name: name.into(), artifact: true, adds: vec![], rootfs: None, entrypoint: vec![] })
                .unwrap();
        let tar = env.c.dir.path().join(format!("{}.tar", name.replace(['/', ':'], "_")));
        build::write_archive(&built, std::fs::File::create(&tar).unwrap()).unwrap();
        // containerd 1.6 cannot unpack the application/wasm layer: import
        // the content only.
        let o = env.ctr(&["image", "import", "--all-platforms", "--no-unpack", tar.to_str().unwrap()]);
        assert!(o.status.success(), "import {name}: {}", text(&o));
    }
    let layer = |module: &str| berth_host::oci::image::digest::of_bytes(&std::fs::read(module).unwrap());
    let in_berth_store = |module: &str| env._berth_root.path().join("images/blobs/sha256").join(layer(module).trim_start_matches("sha256:")).exists();
    let run_as = |uid: u32, id: &str, image: &str, args: &[&str]| {
        create_from_image_record(&env, id, image, args, uid);
        let o = env.ctr(&["task", "start", id]);
        let _ = env.ctr(&["container", "rm", id]);
        o
    };
    let run = |id: &str, image: &str, args: &[&str]| run_as(0, id, image, args);

    // The module is the artifact's layer; args and the exit code are the
    // container's. The layer is kept in berth's store by its digest.
    assert!(!in_berth_store(guests::ARGS_ENV_P1));
    let o = run("art1", "example.com/args-artifact:1", &["args-env.wasm", "first arg", "--exit", "3"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("arg[0]=args-env.wasm") && out.contains("arg[1]=first arg"), "{out}");
    assert!(in_berth_store(guests::ARGS_ENV_P1));
    // A second container of the image runs from berth's copy.
    let o = run("art2", "example.com/args-artifact:1", &["/app.wasm", "again"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("arg[1]=again"), "{}", text(&o));
    // So does one of another user (in a worker process).
    let o = run_as(1000, "art-user", "example.com/args-artifact:1", &["/app.wasm", "as 1000", "--exit", "4"]);
    assert!(o.status.code() == Some(4) && String::from_utf8_lossy(&o.stdout).contains("arg[1]=as 1000"), "{}", text(&o));

    // A layer altered in containerd's content store is refused, and
    // nothing of it is kept.
    let blob = env.c.dir.path().join("root/io.containerd.content.v1.content/blobs/sha256").join(layer(guests::HELLO_P2).trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let o = run("art3", "example.com/hello-artifact:2", &["hello.wasm"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("was altered or cut short"), "{}", text(&o));
    assert!(!in_berth_store(guests::HELLO_P2));

    // An image that is no artifact, without the module in its rootfs: the
    // error is that args[0] is not there.
    let o = run("compat1", "example.com/compat:1", &["/missing.wasm"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("/missing.wasm") && !err.contains("artifact"), "{}", text(&o));
    // Nothing is left.
    env.wait_no_shims();
}
