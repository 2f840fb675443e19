//! End to end: a private containerd (started by the test, with the shim
//! built by cargo first on its PATH) runs wasm images made with
//! `berth image build` through `ctr ... --runtime io.containerd.berth.v1`.
mod common;

use berth_host::oci::image::build::{self, BuildOptions};
use berth_tests::containerd::Containerd;
use berth_tests::guests;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Env {
    c: Containerd,
    _berth_root: tempfile::TempDir,
}

impl Env {
    /// containerd with the shim on its PATH and the given images imported.
    fn new(images: &[(&str, &str)]) -> Env {
        Self::with_env(images, &[])
    }

    /// [`Env::new`] with extra environment for containerd (and so its shims).
    fn with_env(images: &[(&str, &str)], extra: &[(&str, &str)]) -> Env {
        let root = tempfile::tempdir().unwrap();
        let mut vars = vec![("BERTH_ROOT", root.path().to_str().unwrap())];
        vars.extend_from_slice(extra);
        let c = Containerd::start_with(&[&shim_dir()], &vars);
        let env = Env { c, _berth_root: root };
        for (module, name) in images {
            env.import(module, name);
        }
        env
    }

    fn import(&self, module: &str, name: &str) {
        import_wasm(&self.c, "berth-test", module, name);
    }

    /// A native busybox image (`berth image build --rootfs`), imported.
    fn import_busybox(&self, name: &str) {
        import_busybox(&self.c, "berth-test", name, &["/bin/sh"]);
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.c.ctr(args)
    }

    /// `ctr run` as a child process, for tests that act while it runs.
    fn spawn_run(&self, args: &[&str]) -> std::process::Child {
        Command::new("ctr")
            .arg("--address")
            .arg(self.c.socket())
            .args(["--namespace", "berth-test", "run"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn task_status(&self, id: &str) -> Option<String> {
        let o = self.ctr(&["task", "ls"]);
        String::from_utf8_lossy(&o.stdout).lines().find(|l| l.split_whitespace().next() == Some(id)).and_then(|l| l.split_whitespace().nth(2).map(String::from))
    }

    fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.task_status(id).as_deref() != Some(want) {
            assert!(Instant::now() < deadline, "task {id} never reached {want}: {:?}\ncontainerd log:\n{}", self.task_status(id), self.c.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where this containerd's shims keep native containers' state.
    fn native_state(&self) -> PathBuf {
        berth_host::native::state_root_for(self.c.socket().to_str().unwrap(), "berth-test")
    }

    /// Waits (10 s at most) until no shim serves this containerd: each
    /// exits with its last container.
    fn wait_no_shims(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.shims().is_empty() {
            assert!(Instant::now() < deadline, "shims outlived their last container: {:?}", self.shims());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (5 s at most) until no berth shim of this containerd has a
    /// zombie child: the shim reaps every child it has.
    fn wait_no_zombies(&self) {
        wait_no_zombies(|| self.shims());
    }

    /// berth shim processes serving this containerd.
    fn shims(&self) -> Vec<u32> {
        self.c.shim_pids("containerd-shim-berth-v1")
    }
}

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
    let mut child = Command::new("ctr")
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

/// `ctr task metrics ID`: CPU time (ns), memory usage (bytes), the text.
fn metrics(env: &Env, id: &str) -> (u64, u64, String) {
    let o = env.ctr(&["task", "metrics", id]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let value = |key: &str| -> u64 {
        out.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} missing:\n{out}"))
    };
    (value("cpuacct.usage "), value("memory.usage_in_bytes"), out.clone())
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

/// Imports an image of the module `wasm` (at `/app.wasm`, or `/app.wat`
/// for text) whose config runs it as 1000:1000.
fn import_as_user(env: &Env, wasm: &str, name: &str) {
    let mut a = berth_tests::oci::Archive::default();
    let file = if wasm.ends_with(".wat") { "app.wat" } else { "app.wasm" };
    let wasm = std::fs::read(wasm).unwrap();
    let layer = berth_tests::oci::file_layer(file, &wasm, 0o755);
    let l = a.blob("application/vnd.oci.image.layer.v1.tar", &layer);
    let config = serde_json::json!({ "architecture": "wasm", "os": "wasi", "config": { "Entrypoint": [format!("/{file}")], "User": "1000:1000" }, "rootfs": { "type": "layers", "diff_ids": [berth_tests::oci::digest(&layer)] } });
    let c = a.blob("application/vnd.oci.image.config.v1+json", config.to_string().as_bytes());
    let m = serde_json::json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": c, "layers": [l] });
    let mut d = a.blob("application/vnd.oci.image.manifest.v1+json", m.to_string().as_bytes());
    d["platform"] = serde_json::json!({ "os": "wasi", "architecture": "wasm" });
    a.index(&[(Some(name), d)]);
    let tar = env.c.dir.path().join(format!("{}.tar", name.replace(['/', ':'], "_")));
    std::fs::write(&tar, a.tar()).unwrap();
    assert!(env.ctr(&["image", "import", "--platform", "wasi/wasm", tar.to_str().unwrap()]).status.success());
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
fn other_users_get_only_their_file_access_and_a_long_lived_shim_leaks_no_fds() {
    let env = Env::new(&[(guests::WAT_SLEEP, "example.com/sleep:1"), (guests::HELLO_P1, "example.com/hello:1")]);
    // An image whose config runs the file tool as 1000:1000.
    import_as_user(&env, guests::FILE_TOOL_P1, "example.com/user:1");
    // A host directory with a root-only file and a public one, bind-mounted.
    let data = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.path().join("private.txt"), "root only").unwrap();
    std::fs::set_permissions(data.path().join("private.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(data.path().join("public.txt"), "anyone").unwrap();
    std::fs::set_permissions(data.path().join("public.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mount = format!("type=bind,src={},dst=/data,options=rbind:rw", data.path().display());
    let read = |id: &str, file: &str| env.ctr(&["run", "--rm", "--runtime", RUNTIME, "--mount", &mount, "example.com/user:1", id, "/app.wasm", "read", file]);
    // The kernel holds the guest to uid 1000: the root-only file is refused.
    let o = read("u1", "/data/private.txt");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ermission denied"), "{}", text(&o));
    let o = read("u2", "/data/public.txt");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "anyone");

    // One shim keeps serving a group while containers come and go.
    assert!(env.ctr(&["run", "-d", "--null-io", "--annotation", "berth.dev/group=fd", "--runtime", RUNTIME, "example.com/sleep:1", "keeper"]).status.success());
    env.wait_status("keeper", "RUNNING");
    let shim = env.shims()[0];
    let fds = || std::fs::read_dir(format!("/proc/{shim}/fd")).unwrap().count();
    let cycle = |i: usize| {
        let id = format!("c{i}");
        let o = env.ctr(&["run", "--rm", "--annotation", "berth.dev/group=fd", "--runtime", RUNTIME, "example.com/hello:1", &id]);
        assert!(o.status.success(), "{}", text(&o));
    };
    cycle(0);
    let before = fds();
    for i in 1..=10 {
        cycle(i);
    }
    assert_eq!(env.shims(), vec![shim], "the group's shim served them all");
    assert_eq!(fds(), before, "fds of the shim grew over 10 create/delete cycles");
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "keeper"]).status.success());
    env.wait_status("keeper", "STOPPED");
    assert!(env.ctr(&["task", "rm", "keeper"]).status.success());
}

/// A loopback port that was free a moment ago.
/// `curl` of a URL: (status, body); status "000" when nothing answered.
fn curl(url: &str) -> (String, String) {
    let o = Command::new("curl").args(["-s", "-m", "20", "-w", "\n%{http_code}", url]).output().expect("running curl (apt-get install -y curl)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

#[test]
fn http_components_are_served_from_containers_and_drain_on_sigterm() {
    let env = Env::new(&[(guests::HTTP_HELLO_P2, "example.com/hello-http:1")]);
    let port = free_port();
    let addr = format!("BERTH_HTTP_ADDR=127.0.0.1:{port}");
    let child = env.spawn_run(&["--rm", "--runtime", RUNTIME, "--env", &addr, "example.com/hello-http:1", "web1"]);
    env.wait_status("web1", "RUNNING");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    assert_eq!(curl(&url("/hi")), ("200".into(), "hello from berth: GET /hi\n".into()));
    assert_eq!(curl(&url("/log")).0, "200");
    // A trap answers 500 and the container keeps serving.
    assert_eq!(curl(&url("/trap")).0, "500");
    assert_eq!(curl(&url("/after-trap")).0, "200");
    // SIGTERM (ctr's default) while a slow request runs: it finishes, the
    // container exits 0 and stops listening.
    let slow_url = url("/slow");
    let slow = std::thread::spawn(move || curl(&slow_url));
    std::thread::sleep(Duration::from_millis(300));
    // The requests' instances are the container's stats: the one in flight
    // holds memory, and the requests so far used CPU.
    let (cpu, mem, out) = metrics(&env, "web1");
    assert!(cpu > 0 && mem >= 65536, "an instance is in flight and requests ran:\n{out}");
    let o = env.ctr(&["task", "kill", "web1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(slow.join().unwrap(), ("200".into(), "hello from berth: GET /slow\n".into()));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The handlers' stdout and stderr are the container's.
    assert!(String::from_utf8_lossy(&o.stdout).contains("stdout of request"), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stderr of request"), "{}", text(&o));
    assert_eq!(curl(&url("/late")).0, "000");

    // The address from the berth.dev/http-listen annotation; SIGKILL ends
    // the container at once (137).
    let port2 = free_port();
    let listen = format!("berth.dev/http-listen=127.0.0.1:{port2}");
    let child = env.spawn_run(&[
        "--rm",
        "--runtime",
        RUNTIME,
        "--annotation",
        &listen,
        "--annotation",
        "berth.dev/http-max-body=10",
        "example.com/hello-http:1",
        "web2",
    ]);
    env.wait_status("web2", "RUNNING");
    assert_eq!(curl(&format!("http://127.0.0.1:{port2}/two")).0, "200");
    // berth.dev/http-max-body caps request bodies.
    let post = |len: usize| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port2)).unwrap();
        write!(s, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{}", "b".repeat(len)).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split_whitespace().nth(1).unwrap_or_default().to_string()
    };
    assert_eq!((post(10), post(20)), ("200".to_string(), "413".to_string()));
    // A bad serving annotation fails the create, naming it.
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "--annotation", "berth.dev/http-max-concurrency=0", "example.com/hello-http:1", "web4"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("berth.dev/http-max-concurrency"), "{}", text(&o));
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "web2"]).status.success());
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(137));

    // A taken address fails the create, naming it and the fix.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("BERTH_HTTP_ADDR={}", held.local_addr().unwrap());
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "--env", &taken, "example.com/hello-http:1", "web3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(&held.local_addr().unwrap().to_string()) && err.contains("BERTH_HTTP_ADDR"), "{}", text(&o));
}

/// A network namespace made for one test (`ip netns`), deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new(tag: &str) -> NetNs {
        let name = format!("berth-test-{tag}-{}", std::process::id());
        let ok = |c: &mut Command| assert!(c.status().expect("ip (iproute2)").success(), "{c:?}");
        ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs(name);
        ok(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]));
        ns
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    /// `curl` run inside the namespace.
    fn curl(&self, url: &str) -> String {
        let o = Command::new("ip").args(["netns", "exec", &self.0, "curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", url]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_pod_network_namespace_is_where_http_is_served() {
    let env = Env::new(&[(guests::HTTP_HELLO_P2, "example.com/hello-http:1")]);
    let ns = NetNs::new("pod");
    let port = free_port();
    let addr = format!("BERTH_HTTP_ADDR=127.0.0.1:{port}");
    let with_ns = format!("network:{}", ns.path());
    let o = env.ctr(&["run", "-d", "--runtime", RUNTIME, "--with-ns", &with_ns, "--env", &addr, "example.com/hello-http:1", "inpod"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_status("inpod", "RUNNING");
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(ns.curl(&url), "200", "served inside the pod's namespace");
    assert_eq!(curl(&url).0, "000", "not served in the host's namespace");
    assert!(env.ctr(&["task", "kill", "inpod"]).status.success());
    env.wait_status("inpod", "STOPPED");
    assert!(env.ctr(&["task", "rm", "inpod"]).status.success());
    assert!(env.ctr(&["container", "rm", "inpod"]).status.success());
}

const BUSYBOX: &str = "example.com/busybox:1";

/// What a terminal test's container runs after its last output. containerd
/// 1.6's client (ctr) closes its ends of the stdio FIFOs as it deletes an
/// exited task (not an exec: that waits), before it has copied what was left in them (its
/// `task.Delete` calls `io.Close` before `io.Wait`): output that reached
/// the FIFO just before the exit can be dropped by ctr itself. Under load,
/// about 1 `ctr run -t` in 200 lost its last line that way, every byte of
/// it logged as written to the FIFO by the shim (runc's shim, which
/// reports exits later, lost none in 800). The pause lets ctr read its
/// FIFO before it sees the exit.
const CTR_DRAIN: &str = "sleep 0.5";

/// A native container's spec as `ctr oci spec` makes it, running `args`
/// from a busybox rootfs in berth group `group`, with `hooks` (an OCI
/// hooks object), for `ctr run --config`.
fn native_spec(env: &Env, dir: &Path, name: &str, args: &[&str], group: &str, hooks: serde_json::Value) -> PathBuf {
    let o = env.ctr(&["oci", "spec"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut spec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rootfs = dir.join(format!("{name}-rootfs"));
    berth_tests::busybox::rootfs(&rootfs);
    spec["root"] = serde_json::json!({ "path": rootfs, "readonly": false });
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/berth-test/{name}"));
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["annotations"] = serde_json::json!({ "berth.dev/group": group });
    spec["hooks"] = hooks;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    path
}

/// Lines in a file the hooks append to.
fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
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
            Command::new("ctr")
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
    let mut ps = Command::new("ctr")
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

/// Makes container `id` the way CRI does for an image containerd cannot
/// unpack (a CNCF wasm artifact: no filesystem layers): an empty snapshot
/// as its rootfs and a container record naming `image`, through
/// containerd's API. `ctr run` would try to unpack the image first.
fn create_from_image_record(env: &Env, id: &str, image: &str, args: &[&str], uid: u32) {
    let o = env.ctr(&["snapshot", "prepare", id]);
    assert!(o.status.success(), "{}", text(&o));
    let o = env.ctr(&["oci", "spec"]);
    let mut spec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["process"]["user"] = serde_json::json!({"uid": uid, "gid": uid});
    spec["root"]["path"] = serde_json::json!("rootfs");
    use berth_host::containerd::{Client, Msg};
    let spec = Msg::new().bytes(1, "types.containerd.io/opencontainers/runtime-spec/1/Spec").bytes(2, serde_json::to_vec(&spec).unwrap());
    let container = Msg::new().bytes(1, id).bytes(3, image).msg(4, &Msg::new().bytes(1, RUNTIME)).msg(5, &spec).bytes(6, "overlayfs").bytes(7, id);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = Client::connect(&env.c.socket(), "berth-test").await.unwrap();
        client.unary("/containerd.services.containers.v1.Containers/Create", &Msg::new().msg(1, &container)).await.unwrap();
    });
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

/// A loopback server on `port` answering every connection with `banner`,
/// in the network namespace at `ns` (else the node's own).
#[test]
fn a_pods_wasm_sockets_live_in_its_network_namespace() {
    let env = Env::new(&[(guests::TCP_CLIENT_P2, "example.com/tcp-client:1"), (guests::WAT_SLEEP, "example.com/sleep:1")]);
    let (pod1, pod2) = (NetNs::new("sock1"), NetNs::new("sock2"));
    // The same port on the node's loopback and on each pod's.
    let port = free_port();
    banner_server(None, port, "node");
    banner_server(Some(&pod1.path()), port, "pod1");
    banner_server(Some(&pod2.path()), port, "pod2");
    // A port where only the node listens.
    let node_only = free_port();
    banner_server(None, node_only, "node");
    // One shim serves both pods (a group kept alive by a sleeping guest).
    assert!(env
        .ctr(&["run", "-d", "--null-io", "--annotation", "berth.dev/group=socks", "--runtime", RUNTIME, "example.com/sleep:1", "keeper"])
        .status
        .success());
    env.wait_status("keeper", "RUNNING");
    let connect = |id: &str, ns: Option<&NetNs>, port: u16| {
        let grant = format!("berth.dev/net-connect=127.0.0.1/32:{port}");
        let target = format!("127.0.0.1:{port}");
        let with_ns = ns.map(|n| format!("network:{}", n.path()));
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME, "--annotation", "berth.dev/group=socks", "--annotation", &grant];
        if let Some(w) = &with_ns {
            args.extend(["--with-ns", w]);
        }
        args.extend(["example.com/tcp-client:1", id, "/tcp-client.wasm", &target]);
        let o = env.ctr(&args);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(connect("c1", Some(&pod1), port), "reply=pod1", "a guest of pod 1 reached another loopback");
    assert_eq!(connect("c2", Some(&pod2), port), "reply=pod2", "a guest of pod 2 reached another loopback");
    assert_eq!(connect("c3", None, port), "reply=node", "without a namespace, the shim's own is used");
    let out = connect("c4", Some(&pod1), node_only);
    assert!(out.starts_with("connect-error"), "a pod's guest reached a server on the node's loopback: {out}");
    assert_eq!(env.shims().len(), 1, "one shim served both pods");
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "keeper"]).status.success());
    env.wait_status("keeper", "STOPPED");
    assert!(env.ctr(&["task", "rm", "keeper"]).status.success());
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
                Command::new("ctr")
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
