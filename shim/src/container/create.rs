//! Making a container at Create: its rootfs mounted, its kind detected,
//! and a native container made by the helper, or a wasm guest planned and
//! compiled (so that errors surface at create time).
use super::engine::{EngineGuest, Work};
use super::executor::Executor;
use super::native::NativeProcess;
use super::worker::WorkerGuest;
use super::Container;
use crate::lifecycle::Lifecycle;
use berth_host::containerd;
use berth_host::helper::Verb;
use berth_host::oci::annotations::DEFAULT_HTTP_ADDR;
use berth_host::oci::entry::EntryError;
use berth_host::oci::image::{build, store::Store};
use berth_host::oci::{bundle, detect};
use berth_host::plan::{ModuleSource, Stdio};
use berth_host::wasm::http::{self, HttpService};
use berth_host::wasm::netns::NetNamespace;
use berth_host::wasm::worker;
use berth_host::wasm::{server, Meter, Runtime};
use containerd_shim_protos::api::Mount;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("container {id}: terminals (-t) are not supported for wasm containers; run without a tty")]
    Terminal { id: String },
    #[error("container {id}: mounting its rootfs ({fs_type} from {source_path}) at {target}")]
    Mount {
        id: String,
        fs_type: String,
        source_path: String,
        target: String,
        #[source]
        source: containerd_shim::Error,
    },
    #[error("container {id}: {source}")]
    Bundle {
        id: String,
        #[source]
        source: bundle::BundleError,
    },
    #[error("container {id}: process.user is {uid}:{gid}, but wasi:http components are served inside the shim, which cannot hold them to another user's file access; serve it as 0:0 (the guest still sees only its rootfs and mounts)")]
    User { id: String, uid: u32, gid: u32 },
    #[error("container {id}: serving wasi:http on {addr}; choose another address with the BERTH_HTTP_ADDR env or the berth.dev/http-listen annotation")]
    Listen {
        id: String,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id}: {missing}; berth could not read its image from containerd as a wasm artifact")]
    Artifact {
        id: String,
        missing: String,
        #[source]
        source: containerd::ArtifactError,
    },
    #[error("container {id}")]
    Helper {
        id: String,
        #[source]
        source: crate::helper::HelperError,
    },
    #[error("container {id}")]
    Console {
        id: String,
        #[source]
        source: crate::console::ConsoleError,
    },
    #[error("container {id}: {source}")]
    Netns {
        id: String,
        #[source]
        source: berth_host::wasm::netns::NetnsError,
    },
    #[error("container {id}: writing its worker's plan {path}")]
    WorkerPlan {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id}: {source}")]
    Load {
        id: String,
        #[source]
        source: berth_host::wasm::RunError,
    },
}

/// Requests one served component handles at once unless its
/// `berth.dev/http-max-concurrency` says otherwise: a quarter of the shim's
/// default pool, so that one busy component leaves room for the other
/// guests of its group.
const HTTP_SLOTS: usize = 64;

/// Whether a bundle error says `args[0]` is not in the rootfs.
fn entry_missing(e: &bundle::BundleError) -> bool {
    matches!(e, bundle::BundleError::Entry(EntryError::NotFound { .. }))
}

pub struct CreateRequest<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a [Mount],
    pub terminal: bool,
    pub stdio: [String; 3],
    /// Where native containers' state is kept
    /// ([`berth_host::native::state_root_for`]).
    pub native_root: PathBuf,
    /// containerd's gRPC socket and the container's namespace there.
    pub containerd: &'a Path,
    pub namespace: &'a str,
}

impl Container {
    /// Mounts the rootfs, builds the plan from `config.json` and compiles
    /// (or loads from cache) the guest, so errors surface at create time.
    pub async fn create(runtime: &Arc<Runtime>, req: CreateRequest<'_>) -> Result<Container, CreateError> {
        let id = req.id.to_string();
        let rootfs = req.bundle.join("rootfs");
        let mut mounted = false;
        for m in req.rootfs {
            containerd_shim::asynchronous::util::mount_rootfs(m, &rootfs).await.map_err(|e| CreateError::Mount {
                id: id.clone(),
                fs_type: m.type_.clone(),
                source_path: m.source.clone(),
                target: rootfs.display().to_string(),
                source: e,
            })?;
            mounted = true;
        }
        let undo = |e| {
            if mounted {
                crate::rootfs::unmount(&rootfs);
            }
            e
        };
        let spec = bundle::load_spec(req.bundle).map_err(|source| undo(CreateError::Bundle { id: id.clone(), source }))?;
        let pod = spec.annotations().as_ref().and_then(|a| a.get(crate::grouping::SANDBOX_ID)).cloned().unwrap_or_default();
        let (kind, module) = match detect::detect(req.bundle, &spec) {
            Err(e) if entry_missing(&e) => {
                let (image, module) = Self::artifact(&req, e).await.map_err(undo)?;
                let reason =
                    format!("args[0] is not in the rootfs and image {image} is a wasm artifact: its module is the {} layer", build::WASM_LAYER_MEDIA_TYPE);
                (detect::Detection { kind: detect::Kind::Wasm, reason }, Some(module))
            }
            r => (r.map_err(|source| undo(CreateError::Bundle { id: id.clone(), source }))?, None),
        };
        tracing::info!(container_id = %id, pod_id = %pod, runtime = ?kind.kind, reason = %kind.reason, "runtime chosen");
        let executor: Arc<dyn Executor> = match kind.kind {
            detect::Kind::Native => Arc::new(Self::create_native(&req, &pod).await.map_err(undo)?),
            detect::Kind::Wasm => Self::create_wasm(runtime, &req, &spec, &pod, module).await.map_err(undo)?,
        };
        Ok(Container {
            id,
            bundle: req.bundle.to_path_buf(),
            stdio: req.stdio,
            executor,
            life: Lifecycle::default(),
            execs: Mutex::default(),
            mounted,
            pod,
            starting: Default::default(),
        })
    }

    /// A native container, made by the single-threaded helper (this binary
    /// re-executed): its process waits for Start.
    async fn create_native(req: &CreateRequest<'_>, pod: &str) -> Result<NativeProcess, CreateError> {
        let id = req.id.to_string();
        let fail = |source| CreateError::Helper { id: id.clone(), source };
        let console_failed = |source| CreateError::Console { id: id.clone(), source };
        let console = match req.terminal {
            true => Some(crate::console::ConsoleSocket::new().map_err(console_failed)?),
            false => None,
        };
        let mut cmd = crate::helper::command(Verb::Create).map_err(fail)?;
        cmd.arg(&id).arg(req.bundle).arg(&req.native_root).args(&req.stdio);
        if let Some(c) = &console {
            cmd.arg(c.path());
        }
        let pid = match crate::helper::run_for_pid(cmd).await {
            Ok(pid) => pid,
            Err(e) => {
                // Whatever the helper left half made (an init waiting for
                // Start, a cgroup, state) goes with the failed create.
                if let Err(d) = crate::helper::native(Verb::Delete, &req.native_root, &id).await {
                    tracing::warn!(container_id = %id, error = %berth_host::error::chain(&d), "removing a container whose create failed");
                }
                return Err(fail(e));
            }
        };
        let terminal = match console {
            None => None,
            Some(c) => Some(crate::console::attach(c, &req.stdio[0], &req.stdio[1]).await.map_err(console_failed)?),
        };
        let exit = crate::reaper::watch(pid);
        tracing::info!(container_id = %id, pid, "native container created");
        Ok(NativeProcess::new(&id, pod, pid, req.native_root.clone(), exit, terminal))
    }

    /// A wasm container: the plan from `config.json`, the guest compiled
    /// (or loaded from cache), and for wasi:http components the listener.
    /// The module of a container whose `args[0]` is not in its rootfs
    /// (`missing` says so): its image's wasm layer, when containerd holds
    /// that image as a CNCF wasm artifact. Otherwise `missing` is the error.
    async fn artifact(req: &CreateRequest<'_>, missing: bundle::BundleError) -> Result<(String, ModuleSource), CreateError> {
        let id = req.id.to_string();
        let fail = |source| CreateError::Artifact { id: id.clone(), missing: missing.to_string(), source };
        let store = Store::open(Store::default_dir()).map_err(|e| fail(containerd::ArtifactError::OpenStore(e)))?;
        let mut client = containerd::Client::connect(req.containerd, req.namespace).await.map_err(|e| fail(e.into()))?;
        match containerd::artifact_module(&mut client, &store, &id).await {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(CreateError::Bundle { id, source: missing }),
            Err(e) => Err(fail(e)),
        }
    }

    async fn create_wasm(
        runtime: &Arc<Runtime>,
        req: &CreateRequest<'_>,
        spec: &oci_spec::runtime::Spec,
        pod: &str,
        module: Option<ModuleSource>,
    ) -> Result<Arc<dyn Executor>, CreateError> {
        let id = req.id.to_string();
        if req.terminal {
            return Err(CreateError::Terminal { id });
        }
        // Detection by annotation does not look for args[0]: the plan may
        // find it missing too.
        let plan = match bundle::plan_with_module(req.bundle, spec, module.clone()) {
            Err(e) if module.is_none() && entry_missing(&e) => {
                let (_, module) = Self::artifact(req, e).await?;
                bundle::plan_with_module(req.bundle, spec, Some(module))
            }
            r => r,
        };
        let mut plan = plan.map_err(|source| CreateError::Bundle { id: id.clone(), source })?;
        plan.name = id.clone();
        // A guest must never get more file access than its user would: the
        // shim cannot switch identity per guest (it serves many), so a guest
        // of another user runs in a worker process under that user.
        // (Root's supplementary groups, which containerd's default spec
        // lists, add nothing to root's access.)
        let other_user = plan.user.as_ref().filter(|u| u.uid != 0 || u.gid != 0).cloned();
        plan.stdio = Stdio::Paths { stdin: fifo(&req.stdio[0]), stdout: fifo(&req.stdio[1]), stderr: fifo(&req.stdio[2]) };
        let (rt, p) = (runtime.clone(), plan.clone());
        let prepared =
            tokio::task::spawn_blocking(move || rt.prepare(&p)).await.expect("compile task").map_err(|source| CreateError::Load { id: id.clone(), source })?;
        let serves_http = http::is_http_handler(&prepared);
        // Guests run here make their sockets in the spec's network
        // namespace (a worker joins it itself).
        let netns = match (&plan.net_namespace, &other_user) {
            (Some(path), None) => Some(NetNamespace::get(path).map_err(|source| CreateError::Netns { id: id.clone(), source })?),
            _ => None,
        };
        if let Some(u) = other_user {
            if serves_http {
                return Err(CreateError::User { id: id.clone(), uid: u.uid, gid: u.gid });
            }
            tracing::info!(container_id = %id, pod_id = %pod, uid = u.uid, gid = u.gid, "wasm container of another user: it runs in a worker process under that user");
            let path = req.bundle.join(worker::PLAN_FILE);
            worker::write_plan(&plan, &path).map_err(|source| CreateError::WorkerPlan { id: id.clone(), path: path.clone(), source })?;
            return Ok(Arc::new(WorkerGuest::new(&id, pod, req.stdio.clone(), path)));
        }
        let meter = Arc::new(Meter::default());
        let work = if serves_http {
            let service =
                HttpService::metered(runtime.clone(), &prepared, &plan, meter.clone()).map_err(|source| CreateError::Load { id: id.clone(), source })?;
            let addr = plan.http_listen.unwrap_or_else(|| DEFAULT_HTTP_ADDR.parse().expect("default address"));
            let listener = server::bind(addr, plan.net_namespace.as_deref()).map_err(|source| CreateError::Listen { id: id.clone(), addr, source })?;
            tracing::info!(container_id = %id, pod_id = %pod, address = %addr, net_namespace = ?plan.net_namespace, "wasi:http component: served, an instance per request");
            let default = server::Limits::default();
            let limits = server::Limits {
                slots: plan.http_max_concurrency.unwrap_or(HTTP_SLOTS),
                max_body: plan.http_max_body.unwrap_or(default.max_body),
                max_connections: plan.http_max_connections.unwrap_or(default.max_connections),
                header_timeout: plan.http_header_timeout.unwrap_or(default.header_timeout),
                ..default
            };
            Work::Serve { serving: Mutex::new(Some(Box::new((service, listener)))), limits, stop: watch::channel(0).0 }
        } else {
            let cache_hit = prepared.info.cache_hit;
            tracing::info!(container_id = %id, pod_id = %pod, module = %plan.entrypoint.source, cache_hit, "wasm container created");
            Work::Run { plan: Box::new(plan), prepared: Arc::new(prepared) }
        };
        // Guests run here report traps on their stderr.
        let stderr = fifo(&req.stdio[2]).and_then(|p| berth_host::stdio::open(&p, true).ok());
        Ok(Arc::new(EngineGuest::new(&id, pod, work, meter, netns, stderr)))
    }
}

/// A stdio path from containerd; empty means none.
fn fifo(path: &str) -> Option<PathBuf> {
    (!path.is_empty()).then(|| PathBuf::from(path))
}
