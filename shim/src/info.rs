//! `containerd-shim-berth-v1 -info`: the runtime's name, version and OCI
//! features as a `containerd.types.RuntimeInfo` message on stdout, as
//! containerd 2.x asks of its shims (and as containerd's runc shim answers).
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use oci_spec::runtime::{CgroupBuilder, FeaturesBuilder, LinuxFeatureBuilder, LinuxNamespaceType, SeccompBuilder};

/// The type URL containerd gives OCI runtime features.
const FEATURES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("building the runtime features")]
    Features(#[from] oci_spec::OciSpecError),
    #[error("encoding the runtime features")]
    Json(#[from] serde_json::Error),
    #[error("encoding the RuntimeInfo message")]
    Encode(#[from] containerd_shim_protos::protobuf::Error),
    #[error("writing the RuntimeInfo message")]
    Write(#[from] std::io::Error),
}

/// The mount options native containers honour: those youki's
/// libcontainer parses (the recursive ones, `rro` among them, through
/// `mount_setattr`, kernel 5.12+). containerd's CRI reports a handler
/// that lists `rro` as supporting recursive read-only mounts (Kubernetes'
/// `recursiveReadOnly`). Wasm guests take `ro` and `rro` alike: a
/// read-only grant covers everything beneath it.
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// The features of native containers (youki's libcontainer) and what wasm
/// containers add, as the OCI runtime spec's `features.md` describes them.
fn features_json() -> Result<Vec<u8>, InfoError> {
    use LinuxNamespaceType::*;
    let linux = LinuxFeatureBuilder::default()
        .namespaces(vec![Mount, Cgroup, Uts, Ipc, User, Pid, Network, Time])
        .cgroup(CgroupBuilder::default().v1(true).v2(true).systemd(false).build()?)
        .seccomp(SeccompBuilder::default().enabled(true).build()?)
        .build()?;
    let hooks = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"].map(String::from).to_vec();
    let annotations: std::collections::HashMap<String, String> = [(
        "io.containerd.berth.v1.wasm".to_string(),
        "WASI preview 1 modules, WASI preview 2 components, wasi:http/incoming-handler served over HTTP".to_string(),
    )]
    .into();
    let f = FeaturesBuilder::default()
        .oci_version_min("1.0.0")
        .oci_version_max(oci_spec::runtime::VERSION)
        .hooks(hooks)
        .mount_options(MOUNT_OPTIONS.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .linux(linux)
        .annotations(annotations)
        .build()?;
    Ok(serde_json::to_vec(&f)?)
}

/// The RuntimeInfo message of this shim.
pub fn runtime_info() -> Result<RuntimeInfo, InfoError> {
    let mut features = Any::new();
    features.type_url = FEATURES_TYPE_URL.into();
    features.value = features_json()?;
    Ok(RuntimeInfo {
        name: berth_host::install::RUNTIME_TYPE.into(),
        version: Some(RuntimeVersion { version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }).into(),
        features: Some(features).into(),
        ..Default::default()
    })
}

/// Answers `-info`: containerd may send runtime options on stdin (berth
/// takes none); the message goes to stdout. The exit status.
pub fn print() -> i32 {
    use std::io::{Read, Write};
    let mut options = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut options);
    let written = (|| -> Result<(), InfoError> {
        let bytes = runtime_info()?.write_to_bytes()?;
        std::io::stdout().write_all(&bytes)?;
        Ok(std::io::stdout().flush()?)
    })();
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: -info: {}", berth_host::error::chain(&e));
            1
        }
    }
}
