//! The `ctr`-driven suites' world: a private containerd with the shim on
//! its PATH and berth's root in a temp dir, and what their tests share.
use super::*;
use berth_tests::containerd::Containerd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Env {
    pub c: Containerd,
    pub _berth_root: tempfile::TempDir,
}

impl Env {
    /// containerd with the shim on its PATH and the given images imported.
    pub fn new(images: &[(&str, &str)]) -> Env {
        Self::with_env(images, &[])
    }

    /// [`Env::new`] with extra environment for containerd (and so its shims).
    pub fn with_env(images: &[(&str, &str)], extra: &[(&str, &str)]) -> Env {
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

    pub fn import(&self, module: &str, name: &str) {
        import_wasm(&self.c, "berth-test", module, name);
    }

    /// A native busybox image (`berth image build --rootfs`), imported.
    pub fn import_busybox(&self, name: &str) {
        import_busybox(&self.c, "berth-test", name, &["/bin/sh"]);
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.c.ctr(args)
    }

    /// `ctr run` as a child process, for tests that act while it runs.
    pub fn spawn_run(&self, args: &[&str]) -> std::process::Child {
        berth_tests::containerd::ctr_command()
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

    pub fn task_status(&self, id: &str) -> Option<String> {
        let o = self.ctr(&["task", "ls"]);
        String::from_utf8_lossy(&o.stdout).lines().find(|l| l.split_whitespace().next() == Some(id)).and_then(|l| l.split_whitespace().nth(2).map(String::from))
    }

    pub fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.task_status(id).as_deref() != Some(want) {
            assert!(Instant::now() < deadline, "task {id} never reached {want}: {:?}\ncontainerd log:\n{}", self.task_status(id), self.c.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where this containerd's shims keep native containers' state.
    pub fn native_state(&self) -> PathBuf {
        berth_host::native::state_root_for(self.c.socket().to_str().unwrap(), "berth-test")
    }

    /// Waits (10 s at most) until no shim serves this containerd: each
    /// exits with its last container.
    pub fn wait_no_shims(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.shims().is_empty() {
            assert!(Instant::now() < deadline, "shims outlived their last container: {:?}", self.shims());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (5 s at most) until no berth shim of this containerd has a
    /// zombie child: the shim reaps every child it has.
    pub fn wait_no_zombies(&self) {
        wait_no_zombies(|| self.shims());
    }

    /// berth shim processes serving this containerd.
    pub fn shims(&self) -> Vec<u32> {
        self.c.shim_pids("containerd-shim-berth-v1")
    }
}

/// `ctr task metrics ID`: CPU time (ns), memory usage (bytes), the text.
pub fn metrics(env: &Env, id: &str) -> (u64, u64, String) {
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

/// Imports an image of the module `wasm` (at `/app.wasm`, or `/app.wat`
/// for text) whose config runs it as 1000:1000.
pub fn import_as_user(env: &Env, wasm: &str, name: &str) {
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

/// A loopback port that was free a moment ago.
/// `curl` of a URL: (status, body); status "000" when nothing answered.
pub fn curl(url: &str) -> (String, String) {
    let o = Command::new("curl").args(["-s", "-m", "20", "-w", "\n%{http_code}", url]).output().expect("running curl (apt-get install -y curl)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

/// A network namespace made for one test (`ip netns`), deleted on drop.
pub struct NetNs(pub String);

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("berth-test-{tag}-{}", std::process::id());
        let ok = |c: &mut Command| assert!(c.status().expect("ip (iproute2)").success(), "{c:?}");
        ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs(name);
        ok(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]));
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    /// `curl` run inside the namespace.
    pub fn curl(&self, url: &str) -> String {
        let o = Command::new("ip").args(["netns", "exec", &self.0, "curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", url]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub const BUSYBOX: &str = "example.com/busybox:1";

/// What a terminal test's container runs after its last output. containerd
/// 1.6's client (ctr) closes its ends of the stdio FIFOs as it deletes an
/// exited task (not an exec: that waits), before it has copied what was left in them (its
/// `task.Delete` calls `io.Close` before `io.Wait`): output that reached
/// the FIFO just before the exit can be dropped by ctr itself. Under load,
/// about 1 `ctr run -t` in 200 lost its last line that way, every byte of
/// it logged as written to the FIFO by the shim (runc's shim, which
/// reports exits later, lost none in 800). The pause lets ctr read its
/// FIFO before it sees the exit.
pub const CTR_DRAIN: &str = "sleep 0.5";

/// A native container's spec as `ctr oci spec` makes it, running `args`
/// from a busybox rootfs in berth group `group`, with `hooks` (an OCI
/// hooks object), for `ctr run --config`.
pub fn native_spec(env: &Env, dir: &Path, name: &str, args: &[&str], group: &str, hooks: serde_json::Value) -> PathBuf {
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
pub fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

/// Makes container `id` the way CRI does for an image containerd cannot
/// unpack (a CNCF wasm artifact: no filesystem layers): an empty snapshot
/// as its rootfs and a container record naming `image`, through
/// containerd's API. `ctr run` would try to unpack the image first.
pub fn create_from_image_record(env: &Env, id: &str, image: &str, args: &[&str], uid: u32) {
    let o = env.ctr(&["snapshot", "prepare", id]);
    assert!(o.status.success(), "{}", text(&o));
    let o = env.ctr(&["oci", "spec"]);
    let mut spec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["process"]["user"] = serde_json::json!({"uid": uid, "gid": uid});
    spec["root"]["path"] = serde_json::json!("rootfs");
    use berth_host::containerd::api::containers::{container::Runtime, Container, CreateContainerRequest, CreateContainerResponse};
    use berth_host::containerd::Client;
    let spec = protobuf::well_known_types::any::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
        value: serde_json::to_vec(&spec).unwrap(),
        ..Default::default()
    };
    let container = Container {
        id: id.into(),
        image: image.into(),
        runtime: Some(Runtime { name: RUNTIME.into(), ..Default::default() }).into(),
        spec: Some(spec).into(),
        snapshotter: "overlayfs".into(),
        snapshot_key: id.into(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = Client::connect(&env.c.socket(), "berth-test").await.unwrap();
        let request = CreateContainerRequest { container: Some(container).into(), ..Default::default() };
        let _: CreateContainerResponse = client.unary("/containerd.services.containers.v1.Containers/Create", &request).await.unwrap();
    });
}
