//! Which shim serves a container, and where it listens: containers of one
//! pod (CRI's sandbox id) or one `berth.dev/group` share a shim process;
//! any other container has its own. In the node-wide mode (runtime
//! options: `grouping = "node"`) one shim serves them all.
use crate::options::Grouping;
use std::path::Path;

/// Annotation CRI sets on every container of a pod.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// berth's own grouping annotation.
pub const GROUP: &str = "berth.dev/group";
/// How the names of the node's group and of `berth.dev/group`s begin.
const NODE_GROUP: &str = "node:";
const NAMED_GROUP: &str = "group:";

/// The shim group of the container whose bundle is `bundle`: the node's
/// in the node-wide mode; else its pod, else its `berth.dev/group`, else
/// itself. The names of shared groups hold a `:`, which no container id
/// does (containerd allows letters, digits, `.`, `_` and `-`), so that no
/// container can name itself into another's group.
pub fn group_of(grouping: Grouping, bundle: &Path, id: &str) -> String {
    if grouping == Grouping::Node {
        return NODE_GROUP.to_string();
    }
    let spec = berth_host::oci::bundle::load_spec(bundle).ok();
    let ann = spec.as_ref().and_then(|s| s.annotations().clone()).unwrap_or_default();
    match (ann.get(SANDBOX_ID), ann.get(GROUP)) {
        (Some(pod), _) if !pod.is_empty() => format!("pod:{pod}"),
        (_, Some(g)) if !g.is_empty() => format!("{NAMED_GROUP}{g}"),
        _ => id.to_string(),
    }
}

/// Whether `group` (a name from [`group_of`]) may gather any number of
/// containers: the node's, or a `berth.dev/group`. A pod's holds its few
/// containers, a loose container's group only it.
pub fn gathers_many(group: &str) -> bool {
    group.starts_with(NODE_GROUP) || group.starts_with(NAMED_GROUP)
}

/// The file of a socket address as containerd writes them (`unix://PATH`
/// or a bare path).
pub fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_shares_its_shim_and_the_node_wide_mode_shares_one_for_all() {
        let pod = tempfile::tempdir().unwrap();
        std::fs::write(pod.path().join("config.json"), r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"p1","berth.dev/group":"g"}}"#)
            .unwrap();
        let group = tempfile::tempdir().unwrap();
        std::fs::write(group.path().join("config.json"), r#"{"ociVersion":"1.0.2","annotations":{"berth.dev/group":"g"}}"#).unwrap();
        let loose = tempfile::tempdir().unwrap();
        assert_eq!(group_of(Grouping::Pod, pod.path(), "c1"), "pod:p1");
        assert_eq!(group_of(Grouping::Pod, group.path(), "c2"), "group:g");
        assert_eq!(group_of(Grouping::Pod, loose.path(), "c3"), "c3");
        // A container of no pod cannot join one, or a group, by its name.
        for id in ["pod-p1", "pod_p1", "podp1", "p1"] {
            assert_ne!(group_of(Grouping::Pod, loose.path(), id), group_of(Grouping::Pod, pod.path(), "c1"), "{id}");
        }
        for id in ["group-g", "groupg", "g"] {
            assert_ne!(group_of(Grouping::Pod, loose.path(), id), group_of(Grouping::Pod, group.path(), "c2"), "{id}");
        }
        for dir in [&pod, &group, &loose] {
            assert_eq!(group_of(Grouping::Node, dir.path(), "c"), "node:");
            assert!(gathers_many(&group_of(Grouping::Node, dir.path(), "c")));
        }
        assert!(gathers_many(&group_of(Grouping::Pod, group.path(), "c2")));
        assert!(!gathers_many(&group_of(Grouping::Pod, pod.path(), "c1")));
        assert!(!gathers_many(&group_of(Grouping::Pod, loose.path(), "c3")));
        // A loose container's id cannot pass for a shared group's name.
        assert!(!gathers_many(&group_of(Grouping::Pod, loose.path(), "group-x")));
    }
}
