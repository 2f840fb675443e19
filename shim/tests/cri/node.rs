//! The CRI suite's node: containerd with its CRI plugin, a CNI network
//! of its own, berth's runtime, and a CRI client driving it as kubelet
//! does.
use super::common::*;
use berth_tests::containerd::{cri_plugin, private_config, schema, shim_pids_at, Containerd};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub const PAUSE: &str = "berth.test/pause:1";
pub const BUSYBOX: &str = "berth.test/busybox:1";

/// The CRI plugin's config of a test node whose files are under `p`, in
/// the schema of the containerd under test: the sandbox image, CNI from
/// `net`, the streaming server on loopback, and the `berth-node` handler
/// (berth's node-wide mode). (berth's own handler is added by
/// `berth_host::install`, as a node's installer adds it.)
fn cri_tables(p: &Path, net: &Path, restrict_oom_score_adj: bool) -> String {
    let (runtime, images, grpc) = (cri_plugin("runtime"), cri_plugin("images"), cri_plugin("grpc"));
    // 2.x pins the sandbox image in the images plugin; 1.x names it in
    // CRI's one table.
    // (One table in 1.x: a second header of it would be a TOML error.)
    let stream = "  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n";
    let (sandbox, streaming) = if schema() == 2 {
        (format!("[plugins.\"{runtime}\"]\n  sandbox_image = \"{PAUSE}\"\n{stream}"), String::new())
    } else {
        (format!("[plugins.\"{images}\".pinned_images]\n  sandbox = \"{PAUSE}\"\n[plugins.\"{runtime}\"]\n"), format!("[plugins.\"{grpc}\"]\n{stream}"))
    };
    format!(
        r#"{sandbox}  restrict_oom_score_adj = {restrict_oom_score_adj}
  disable_apparmor = true
  [plugins."{runtime}".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{net}"
    max_conf_num = 1
[plugins."{runtime}".containerd.runtimes.berth-node]
  runtime_type = "io.containerd.berth.v1"
  pod_annotations = ["berth.dev/*"]
  container_annotations = ["berth.dev/*"]
  [plugins."{runtime}".containerd.runtimes.berth-node.options]
    ConfigPath = "{p}/berth-node.toml"
{streaming}[plugins."io.containerd.internal.v1.opt"]
  path = "{p}/opt"
"#,
        net = net.display(),
        p = p.display()
    )
}

/// One node: containerd with CRI, its CNI network and a CRI client.
pub struct Node {
    pub c: Containerd,
    pub rt: tokio::runtime::Runtime,
    pub cri: RuntimeServiceClient<Channel>,
    pub bridge: String,
    /// Zombies of berth shims that stayed over 3 s, seen by a sampler
    /// that runs for the node's whole life.
    pub stuck: Arc<Mutex<Vec<(u32, String)>>>,
    pub sampling: Arc<AtomicBool>,
    pub _berth_root: tempfile::TempDir,
}

/// A pod made by [`Node::run_pod`].
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

/// Each node of a test run gets its own bridge and subnet.
pub static NODES: AtomicU32 = AtomicU32::new(0);

impl Node {
    /// A node with the given wasm images (module, name) and the pause and
    /// busybox images imported into CRI's namespace.
    pub fn start(images: &[(&str, &str)]) -> Node {
        Self::start_with(images, true)
    }

    pub fn start_with(images: &[(&str, &str)], restrict_oom_score_adj: bool) -> Node {
        let n = NODES.fetch_add(1, Ordering::SeqCst);
        let tag = (std::process::id() % 100) * 10 + n % 10;
        let bridge = format!("bth{tag}");
        let berth_root = tempfile::tempdir().unwrap();
        let c = Containerd::start_configured(&[&shim_dir()], &[("BERTH_ROOT", berth_root.path().to_str().unwrap())], |p| {
            let net = p.join("net.d");
            std::fs::create_dir(&net).unwrap();
            let subnet = format!("10.213.{}.0/24", tag % 250);
            let conf = serde_json::json!({
                "cniVersion": "0.4.0", "name": format!("berth-test-{tag}"),
                "plugins": [{"type": "bridge", "bridge": bridge, "isGateway": false, "ipMasq": false,
                             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": p.join("ipam")}}]
            });
            std::fs::write(net.join("10-berth-test.conflist"), conf.to_string()).unwrap();
            let tables = cri_tables(p, &net, restrict_oom_score_adj);
            // Handler `berth-node`: berth's node-wide mode, one shim for
            // every pod.
            std::fs::write(p.join("berth-node.toml"), "grouping = \"node\"\n").unwrap();
            let path = p.join("config.toml");
            let edit = berth_host::install::add_runtime(&path.display().to_string(), &private_config(p, "", &tables)).unwrap();
            std::fs::write(&path, edit.new_text).unwrap();
        });
        require_cni();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let sock = c.socket();
        let cri = rt.block_on(async {
            let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let sock = sock.clone();
                    async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(sock).await?)) }
                }))
                .await
                .expect("connecting to containerd's CRI socket");
            RuntimeServiceClient::new(channel)
        });
        let (stuck, sampling) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(true)));
        let sock = c.socket();
        let (s, on) = (stuck.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut seen: HashMap<u32, Instant> = HashMap::new();
            while on.load(Ordering::Relaxed) {
                let shims = shim_pids_at(&sock, "containerd-shim-berth-v1");
                let now = zombies_of(&shims);
                seen.retain(|pid, _| now.iter().any(|(p, _)| p == pid));
                for (pid, name) in now {
                    let first = *seen.entry(pid).or_insert_with(Instant::now);
                    if first.elapsed() > Duration::from_secs(3) && !s.lock().unwrap().iter().any(|(p, _)| *p == pid) {
                        s.lock().unwrap().push((pid, name));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let node = Node { c, rt, cri, bridge, stuck, sampling, _berth_root: berth_root };
        import_busybox(&node.c, "k8s.io", PAUSE, &["/bin/sleep", "2147483647"]);
        import_busybox(&node.c, "k8s.io", BUSYBOX, &["/bin/sh"]);
        for (module, name) in images {
            import_wasm(&node.c, "k8s.io", module, name);
        }
        let v = node.call(|mut c| async move { c.version(VersionRequest { version: "v1".into() }).await }).expect("CRI Version");
        assert_eq!(v.runtime_api_version, "v1", "{v:?}");
        node
    }

    /// One CRI call, on a fresh handle of the client.
    pub fn call<T, F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>>(
        &self,
        f: impl FnOnce(RuntimeServiceClient<Channel>) -> F,
    ) -> Result<T, tonic::Status> {
        self.rt.block_on(f(self.cri.clone())).map(tonic::Response::into_inner)
    }

    /// RunPodSandbox with handler `berth`, as kubelet makes it.
    pub fn run_pod(&self, name: &str, tweak: impl FnOnce(&mut PodSandboxConfig)) -> Pod {
        self.try_run_pod(name, tweak).unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\ncontainerd's log:\n{}", self.c.log()))
    }

    pub fn try_run_pod(&self, name: &str, tweak: impl FnOnce(&mut PodSandboxConfig)) -> Result<Pod, tonic::Status> {
        self.try_run_pod_with("berth", name, tweak)
    }

    /// RunPodSandbox with runtime handler `handler` (`berth`, `runc`).
    pub fn try_run_pod_with(&self, handler: &str, name: &str, tweak: impl FnOnce(&mut PodSandboxConfig)) -> Result<Pod, tonic::Status> {
        let uid = format!("uid-{name}-{}", std::process::id());
        let logs = self.c.dir.path().join("pods").join(&uid);
        std::fs::create_dir_all(&logs).unwrap();
        let mut config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata { name: name.into(), uid, namespace: "default".into(), attempt: 0 }),
            hostname: name.into(),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        tweak(&mut config);
        let req = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.into() };
        let id = self.call(|mut c| async move { c.run_pod_sandbox(req).await })?.pod_sandbox_id;
        Ok(Pod { id, config })
    }

    /// CreateContainer (attempt 0) of `image` in `pod`, logging to
    /// `NAME.log` in the pod's log directory.
    pub fn create(&self, pod: &Pod, name: &str, image: &str, tweak: impl FnOnce(&mut ContainerConfig)) -> Result<String, tonic::Status> {
        let mut config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(ImageSpec { image: image.into(), ..Default::default() }),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources::default()),
                security_context: Some(LinuxContainerSecurityContext::default()),
            }),
            ..Default::default()
        };
        tweak(&mut config);
        let req = CreateContainerRequest { pod_sandbox_id: pod.id.clone(), config: Some(config), sandbox_config: Some(pod.config.clone()) };
        Ok(self.call(|mut c| async move { c.create_container(req).await })?.container_id)
    }

    /// [`Node::create`] then StartContainer; panics on failure.
    pub fn run(&self, pod: &Pod, name: &str, image: &str, tweak: impl FnOnce(&mut ContainerConfig)) -> String {
        let id = self.create(pod, name, image, tweak).unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\ncontainerd's log:\n{}", self.c.log()));
        self.start_container(&id).unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        id
    }

    pub fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        let req = StartContainerRequest { container_id: id.into() };
        self.call(|mut c| async move { c.start_container(req).await }).map(drop)
    }

    /// Restarts containerd (see [`Containerd::restart`]) and waits (30 s
    /// at most) until CRI answers again, as kubelet retries: the client's
    /// connection broke with the old process and is made again on a call.
    pub fn restart_containerd(&mut self) {
        self.c.restart();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = self.call(|mut c| async move { c.version(VersionRequest { version: "v1".into() }).await }) {
            assert!(Instant::now() < deadline, "CRI did not answer within 30 s of containerd's restart: {e}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn status(&self, id: &str) -> ContainerStatus {
        let req = ContainerStatusRequest { container_id: id.into(), verbose: false };
        self.call(|mut c| async move { c.container_status(req).await }).unwrap().status.unwrap()
    }

    /// Waits (30 s at most) until container `id` has exited.
    pub fn wait_exited(&self, id: &str) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status(id);
            if s.state == ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(Instant::now() < deadline, "container {id} did not exit: {s:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_running(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.status(id).state != ContainerState::ContainerRunning as i32 {
            assert!(Instant::now() < deadline, "container {id} never ran: {:?}", self.status(id));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop_container(&self, id: &str, timeout: i64) {
        let req = StopContainerRequest { container_id: id.into(), timeout };
        self.call(|mut c| async move { c.stop_container(req).await }).unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
    }

    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, tonic::Status> {
        let req = ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 10 };
        self.call(|mut c| async move { c.exec_sync(req).await })
    }

    pub fn stats(&self, id: &str) -> ContainerStats {
        let req = ContainerStatsRequest { container_id: id.into() };
        self.call(|mut c| async move { c.container_stats(req).await }).unwrap_or_else(|e| panic!("ContainerStats {id}: {e}")).stats.unwrap()
    }

    /// The path of the pod's network namespace (from the pause process).
    pub fn netns(&self, pod: &Pod) -> String {
        let req = PodSandboxStatusRequest { pod_sandbox_id: pod.id.clone(), verbose: true };
        let info = self.call(|mut c| async move { c.pod_sandbox_status(req).await }).unwrap().info;
        let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        let ns = v["runtimeSpec"]["linux"]["namespaces"].as_array().unwrap().iter().find(|n| n["type"] == "network").cloned().unwrap();
        ns["path"].as_str().unwrap_or_else(|| panic!("the pod has no network namespace path: {v}")).to_string()
    }

    /// StopPodSandbox then RemovePodSandbox, each within `within`.
    pub fn remove_pod(&self, pod: &Pod, within: Duration) {
        for stop in [true, false] {
            let id = pod.id.clone();
            let mut c = self.cri.clone();
            let r = self.rt.block_on(async move {
                let call = async {
                    if stop {
                        c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id }).await.map(drop)
                    } else {
                        c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await.map(drop)
                    }
                };
                tokio::time::timeout(within, call).await
            });
            let what = if stop { "StopPodSandbox" } else { "RemovePodSandbox" };
            match r {
                Err(_) => panic!("{what} {} did not return within {within:?}; shims' children: {:?}", pod.id, children_of(&self.shims())),
                Ok(Err(e)) => panic!("{what} {}: {e}", pod.id),
                Ok(Ok(())) => {}
            }
        }
    }

    /// The CRI log of container `name` of `pod`.
    pub fn log(&self, pod: &Pod, name: &str) -> String {
        std::fs::read_to_string(self.log_path(pod, name)).unwrap_or_default()
    }

    pub fn log_path(&self, pod: &Pod, name: &str) -> PathBuf {
        Path::new(&pod.config.log_directory).join(format!("{name}.log"))
    }

    pub fn shims(&self) -> Vec<u32> {
        self.c.shim_pids("containerd-shim-berth-v1")
    }

    /// Waits (10 s at most) until no berth shim of this node runs, then
    /// checks that no mount is left under the node's dirs.
    pub fn wait_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.shims().is_empty() {
            assert!(Instant::now() < deadline, "shims outlived their pods: {:?}", self.shims());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.stuck.lock().unwrap().is_empty(), "zombies stayed under a berth shim: {:?}", self.stuck.lock().unwrap());
        let left: Vec<String> =
            mounts_under(self.c.dir.path()).into_iter().filter(|m| !m.contains("/io.containerd.grpc.v1.cri/sandboxes/") || m.ends_with("/shm")).collect();
        assert!(left.is_empty(), "mounts left behind: {left:?}");
    }

    /// Asserts that no berth shim has a zombie child.
    pub fn assert_no_zombies(&self) {
        wait_no_zombies(|| self.shims());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        // Pods a failed test left: stop them so that their netns go.
        let pods = self.call(|mut c| async move { c.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await }).map(|r| r.items).unwrap_or_default();
        for p in pods {
            let id = p.id.clone();
            let mut c = self.cri.clone();
            self.rt.block_on(async move {
                let call = async {
                    let _ = c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await;
                    let _ = c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(20), call).await;
            });
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).stderr(std::process::Stdio::null()).status();
    }
}

pub fn require_cni() {
    for p in ["bridge", "host-local", "loopback"] {
        assert!(
            Path::new("/usr/lib/cni").join(p).exists(),
            "CNI plugin {p} is missing: apt-get install -y containernetworking-plugins (`.ci/run` installs it)"
        );
    }
}

/// An HTTP GET of `path` on 127.0.0.1:`port` inside network
/// namespace `ns`: (status, body).
pub fn get_in(ns: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = berth_host::wasm::netns::within(Path::new(ns), || std::net::TcpStream::connect(("127.0.0.1", port)))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    // HTTP/1.0: the body comes whole, not chunked.
    write!(s, "GET {path} HTTP/1.0\r\nhost: pod\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

/// Waits (20 s at most) until `ns`'s 127.0.0.1:`port` answers.
pub fn wait_serving(ns: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(get_in(ns, port, "/ready"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "nothing answers on 127.0.0.1:{port} in the pod");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn env(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: v.into() }
}

/// The stdout lines of a CRI log (`TIMESTAMP STREAM TAG TEXT`; tag `P`
/// is a partial line, `F` a full one).
pub fn stdout_lines(log: &str) -> Vec<&str> {
    log.lines().filter_map(|l| l.splitn(4, ' ').collect::<Vec<_>>().get(1..).filter(|f| f.len() == 3 && f[0] == "stdout").map(|f| f[2])).collect()
}
