//! OCI runtime bundle (`config.json` + rootfs) to [`RunPlan`].
use super::{annotations, entry};
use crate::plan::{CpuQuota, Entrypoint, Limits, ModuleSource, Preopen, RunPlan, User};
use oci_spec::runtime::{Mount, Spec};
use std::path::{Path, PathBuf};

/// `config.json` larger than this is refused before parsing.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Mount types that are never shown to wasm guests: kernel interfaces and
/// scratch filesystems have no meaning in a wasm sandbox.
const HIDDEN_MOUNT_TYPES: &[&str] = &["proc", "sysfs", "devpts", "tmpfs", "mqueue", "cgroup", "cgroup2", "devtmpfs", "securityfs", "shm"];

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path} (pass --bundle a directory that holds config.json)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, over the {max}-byte limit for config.json")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{path} is not a valid OCI runtime spec")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    // The annotation's problem is in the message itself: the shim reports
    // only an error's top line to containerd.
    #[error("{path}: {error}")]
    Annotation { path: PathBuf, error: annotations::AnnotationError },
    #[error(transparent)]
    Entry(#[from] entry::EntryError),
}

/// Reads and parses `<bundle>/config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec, BundleError> {
    let path = bundle.join("config.json");
    let read = |source| BundleError::Read { path: path.clone(), source };
    let size = std::fs::metadata(&path).map_err(read)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(BundleError::TooLarge { path, size, max: MAX_CONFIG_BYTES });
    }
    let bytes = std::fs::read(&path).map_err(read)?;
    serde_json::from_slice(&bytes).map_err(|source| BundleError::Parse { path, source })
}

/// Builds the plan for the bundle at `bundle`.
pub fn plan_from_bundle(bundle: &Path) -> Result<RunPlan, BundleError> {
    let spec = load_spec(bundle)?;
    plan_from_spec(bundle, &spec)
}

/// Builds the plan for an already-parsed spec whose paths are relative to `bundle`.
pub fn plan_from_spec(bundle: &Path, spec: &Spec) -> Result<RunPlan, BundleError> {
    plan_with_module(bundle, spec, None)
}

/// [`plan_from_spec`], with the module given instead of found in the
/// rootfs at `args[0]` (a wasm artifact's layer; `args[0]` is then only the
/// guest's `argv[0]`).
pub fn plan_with_module(bundle: &Path, spec: &Spec, module: Option<ModuleSource>) -> Result<RunPlan, BundleError> {
    let path = bundle.join("config.json");
    let invalid = |what: String| BundleError::Invalid { path: path.clone(), what };
    let process = spec.process().as_ref().ok_or_else(|| invalid("no process section; add process.args".into()))?;
    let args = process.args().clone().unwrap_or_default();
    let arg0 = args.first().ok_or_else(|| invalid("process.args is empty; set it to the module path, e.g. [\"/app.wasm\"]".into()))?;

    let root = spec.root().as_ref().ok_or_else(|| invalid("no root section; set root.path to the rootfs directory".into()))?;
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    let rootfs = rootfs.canonicalize().map_err(|e| invalid(format!("root.path {} is not usable: {e}", root.path().display())))?;

    let env: Vec<(String, String)> = process
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    let cwd = process.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(invalid(format!("process.cwd {cwd:?} must be an absolute path")));
    }

    let (source, export) = match module {
        Some(source) => (source, entry::split_export(arg0, |_| false).1),
        None => {
            let exists = |p: &str| crate::rooted::open_in_root(&rootfs, p).is_ok();
            let (module_path, export) = entry::split_export(arg0, exists);
            let path_env = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
            let path = entry::find_in_root(&rootfs, &module_path, &cwd, path_env)?;
            (ModuleSource::InRoot { root: rootfs.clone(), path }, export)
        }
    };

    let mut preopens = vec![Preopen { host: rootfs.clone(), guest: "/".into(), readonly: root.readonly().unwrap_or(false) }];
    for m in spec.mounts().iter().flatten() {
        if let Some(p) = bind_preopen(bundle, m).map_err(invalid)? {
            preopens.push(p);
        }
    }

    let empty = Default::default();
    let ann = spec.annotations().as_ref().unwrap_or(&empty);
    let ann_err = |error| BundleError::Annotation { path: path.clone(), error };
    let net = annotations::net_policy(ann).map_err(ann_err)?;
    let timeout = annotations::timeout(ann).map_err(ann_err)?;
    let mut http_outbound = Vec::new();
    let http_listen = annotations::http_listen(ann, &env).map_err(ann_err)?;
    let http_max_concurrency = annotations::http_max_concurrency(ann).map_err(ann_err)?;
    let http_max_body = annotations::http_max_body(ann).map_err(ann_err)?;
    let http_max_connections = annotations::http_max_connections(ann).map_err(ann_err)?;
    let http_header_timeout = annotations::http_header_timeout(ann).map_err(ann_err)?;
    if let Some(list) = ann.get(annotations::HTTP_OUTBOUND) {
        crate::caps::http::HttpOrigin::parse_list(list, &mut http_outbound).map_err(|e| invalid(format!("annotation berth.dev/http-outbound: {e}")))?;
    }

    // A pod's containers join its network namespace (by path); a request
    // for a fresh, unnamed one leaves wasm guests in berth's own.
    let net_namespace = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network))
        .and_then(|n| n.path().clone());
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let memory_bytes = resources.and_then(|r| r.memory().as_ref()).and_then(|m| m.limit()).filter(|l| *l > 0).map(|l| l as u64);
    let cpu = resources.and_then(|r| r.cpu().as_ref()).and_then(|c| match (c.quota(), c.period()) {
        (Some(q), p) if q > 0 => Some(CpuQuota { quota_us: q as u64, period_us: p.filter(|p| *p > 0).unwrap_or(100_000) }),
        _ => None,
    });

    let user = process.user();
    Ok(RunPlan {
        name: bundle.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".into()),
        entrypoint: Entrypoint { source, export },
        args,
        env,
        cwd: Some(cwd),
        preopens,
        net,
        limits: Limits { memory_bytes, cpu, timeout },
        user: Some(User { uid: user.uid(), gid: user.gid(), additional_gids: user.additional_gids().clone().unwrap_or_default() }),
        allow_precompiled: false,
        stdio: Default::default(),
        http_outbound,
        http_listen,
        http_max_concurrency,
        http_max_body,
        http_max_connections,
        http_header_timeout,
        net_namespace,
    })
}

/// A bind mount of a directory becomes a preopen at its destination;
/// kernel filesystems and tmpfs are not exposed; other mounts are skipped
/// with a warning in the log.
fn bind_preopen(bundle: &Path, m: &Mount) -> Result<Option<Preopen>, String> {
    let opts = m.options().clone().unwrap_or_default();
    let typ = m.typ().clone().unwrap_or_default();
    let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
    let dest = m.destination().to_string_lossy().into_owned();
    if !is_bind {
        if HIDDEN_MOUNT_TYPES.contains(&typ.as_str()) {
            return Ok(None);
        }
        tracing::warn!(destination = %dest, mount_type = %typ, "mount not shown to the wasm guest: only bind mounts of directories are");
        return Ok(None);
    }
    let source = m.source().clone().ok_or_else(|| format!("bind mount at {dest} has no source"))?;
    let source = if source.is_absolute() { source } else { bundle.join(source) };
    if !dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
        return Err(format!("mount destination {dest:?} must be absolute and must not contain '..'"));
    }
    let meta = std::fs::metadata(&source).map_err(|e| format!("bind mount source {} for {dest}: {e}", source.display()))?;
    if !meta.is_dir() {
        // WASI grants directories; a single-file bind (Kubernetes adds
        // /etc/hosts, /etc/resolv.conf) has no preopen form.
        tracing::warn!(destination = %dest, source = %source.display(), "file bind mount not shown to the wasm guest: WASI grants directories only");
        return Ok(None);
    }
    // `rro` (recursive read-only, as CRI asks for Kubernetes'
    // recursiveReadOnly) is `ro` to a guest: a read-only grant covers the
    // whole tree beneath it, submounts included.
    Ok(Some(Preopen { host: source, guest: dest, readonly: opts.iter().any(|o| o == "ro" || o == "rro") }))
}
