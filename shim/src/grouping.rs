//! Which shim serves a container, and where it listens: containers of one
//! pod (CRI's sandbox id) or one `berth.dev/group` share a shim process;
//! any other container has its own.
use std::path::Path;

/// Annotation CRI sets on every container of a pod.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// berth's own grouping annotation.
pub const GROUP: &str = "berth.dev/group";

/// The shim group of the container whose bundle is `bundle`: its pod, else
/// its `berth.dev/group`, else itself.
pub fn group_of(bundle: &Path, id: &str) -> String {
    let spec = berth_host::oci::bundle::load_spec(bundle).ok();
    let ann = spec.as_ref().and_then(|s| s.annotations().clone()).unwrap_or_default();
    match (ann.get(SANDBOX_ID), ann.get(GROUP)) {
        (Some(pod), _) if !pod.is_empty() => format!("pod-{pod}"),
        (_, Some(g)) if !g.is_empty() => format!("group-{g}"),
        _ => id.to_string(),
    }
}

/// The file of a socket address as containerd writes them (`unix://PATH`
/// or a bare path).
pub fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}
