//! What berth checks and settles in a native container's `config.json`
//! before libcontainer reads it, where libcontainer would report a bare
//! "io error" or "failed precondition", or refuse a spec that runc runs.
use super::NativeError;
use serde_json::Value;
use std::path::Path;

/// Runs every check on the bundle's spec. A spec that cannot be read is
/// left to libcontainer to report.
pub(super) fn check(id: &str, bundle: &Path) -> Result<(), NativeError> {
    let path = bundle.join("config.json");
    let Ok(mut spec) = std::fs::read(&path).map_err(drop).and_then(|b| serde_json::from_slice::<Value>(&b).map_err(drop)) else { return Ok(()) };
    mount_namespace(id, &spec)?;
    oom_score_adj(id, &spec)?;
    if rootfs_propagation(id, &mut spec)? {
        rewrite(id, &path, &spec)?;
    }
    Ok(())
}

/// berth's native helper shares the host's mount propagation, so every
/// container must have a mount namespace of its own (runc asks the same).
fn mount_namespace(id: &str, spec: &Value) -> Result<(), NativeError> {
    let has = spec.pointer("/linux/namespaces").and_then(Value::as_array).is_some_and(|n| n.iter().any(|n| n["type"] == "mount"));
    if has {
        return Ok(());
    }
    Err(NativeError::Op {
        id: id.into(),
        what: "reading linux.namespaces",
        reason: "it has no mount namespace; add {\"type\": \"mount\"} to linux.namespaces".into(),
    })
}

/// Sets the spec's `process.oomScoreAdj` on this process, as libcontainer
/// is about to (the container inherits it), so that a host that refuses
/// the score is named with its cause.
fn oom_score_adj(id: &str, spec: &Value) -> Result<(), NativeError> {
    let Some(score) = spec.pointer("/process/oomScoreAdj").and_then(Value::as_i64) else { return Ok(()) };
    std::fs::write("/proc/self/oom_score_adj", score.to_string()).map_err(|e| NativeError::Op {
        id: id.into(),
        what: "setting its process.oomScoreAdj",
        reason: format!("writing {score} to /proc/self/oom_score_adj: {e}; scores run from -1000 to 1000, and a host may refuse negative ones (with containerd's CRI plugin, set restrict_oom_score_adj = true)"),
    })
}

/// libcontainer takes `linux.rootfsPropagation` as `shared`, `slave`,
/// `private` or `unbindable`, always applied recursively. runc takes the
/// `r` forms too, and containerd's CRI plugin writes them (`rshared` for a
/// Bidirectional volume, `rslave` for HostToContainer). Puts the value in
/// the form libcontainer reads (same meaning); true when it changed. A
/// value neither knows is named with the ones that work.
fn rootfs_propagation(id: &str, spec: &mut Value) -> Result<bool, NativeError> {
    let Some(v) = spec.pointer_mut("/linux/rootfsPropagation") else { return Ok(false) };
    let Some(given) = v.as_str() else { return Ok(false) };
    let plain = given.strip_prefix('r').filter(|p| ["shared", "slave", "private", "unbindable"].contains(p));
    match plain {
        Some(p) => {
            *v = Value::String(p.to_string());
            Ok(true)
        }
        None if ["shared", "slave", "private", "unbindable"].contains(&given) => Ok(false),
        None => Err(NativeError::Op {
            id: id.into(),
            what: "reading linux.rootfsPropagation",
            reason: format!("{given:?} is not a propagation type; use shared, slave, private or unbindable (or rshared, rslave, rprivate, runbindable)"),
        }),
    }
}

/// Writes `spec` back to `path` in one step (a temp file renamed over it).
fn rewrite(id: &str, path: &Path, spec: &Value) -> Result<(), NativeError> {
    let err =
        |e: std::io::Error| NativeError::Op { id: id.into(), what: "settling linux.rootfsPropagation", reason: format!("writing {}: {e}", path.display()) };
    let tmp = path.with_extension("json.berth-tmp");
    std::fs::write(&tmp, serde_json::to_vec(spec).map_err(|e| err(std::io::Error::other(e)))?).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursive_propagation_forms_become_libcontainers() {
        for (given, want, changed) in [
            ("rshared", "shared", true),
            ("rslave", "slave", true),
            ("rprivate", "private", true),
            ("runbindable", "unbindable", true),
            ("slave", "slave", false),
            ("shared", "shared", false),
        ] {
            let mut spec = serde_json::json!({"linux": {"rootfsPropagation": given, "other": 1}});
            assert_eq!(rootfs_propagation("c1", &mut spec).unwrap(), changed, "{given}");
            assert_eq!(spec, serde_json::json!({"linux": {"rootfsPropagation": want, "other": 1}}));
        }
        let mut none = serde_json::json!({"linux": {}});
        assert!(!rootfs_propagation("c1", &mut none).unwrap());
        let err = rootfs_propagation("c1", &mut serde_json::json!({"linux": {"rootfsPropagation": "rsideways"}})).unwrap_err().to_string();
        assert!(err.contains("c1") && err.contains("rootfsPropagation") && err.contains("\"rsideways\"") && err.contains("rshared"), "{err}");
    }

    #[test]
    fn a_spec_without_a_mount_namespace_is_refused() {
        let err = mount_namespace("c1", &serde_json::json!({"linux": {"namespaces": [{"type": "pid"}]}})).unwrap_err().to_string();
        assert!(err.contains("c1") && err.contains("mount namespace"), "{err}");
        mount_namespace("c1", &serde_json::json!({"linux": {"namespaces": [{"type": "mount"}]}})).unwrap();
    }

    #[test]
    fn the_bundle_is_rewritten_only_when_the_value_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"mount"}],"rootfsPropagation":"rslave"},"x-unknown":{"kept":true}}"#)
            .unwrap();
        check("c1", dir.path()).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"mount"}],"rootfsPropagation":"slave"},"x-unknown":{"kept":true}})
        );
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        check("c1", dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), before);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    }
}
