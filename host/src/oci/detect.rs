//! Which runtime gets a container: wasm (in a Wasmtime sandbox) or native
//! (a Linux namespace container). The rules, in order, first match wins
//! (DESIGN.md, "Detection"); every decision carries its reason for the log.
use super::bundle::BundleError;
use super::entry;
use oci_spec::runtime::Spec;
use std::io::Read;
use std::path::Path;

/// CRI marks the pod's sandbox (pause) container with this.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// crun's and youki's wasm handler annotations.
pub const OCI_HANDLER: &str = "run.oci.handler";
pub const WASM_VARIANT: &str = "module.wasm.image/variant";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Wasm,
    Native,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: Kind,
    pub reason: String,
}

fn decided(kind: Kind, reason: impl Into<String>) -> Detection {
    Detection { kind, reason: reason.into() }
}

/// What the first bytes of an entrypoint file say.
pub fn sniff(head: &[u8], path: &str) -> Option<Kind> {
    if head.starts_with(b"\0asm") || path.ends_with(".wat") {
        Some(Kind::Wasm)
    } else if head.starts_with(b"\x7fELF") || head.starts_with(b"#!") {
        Some(Kind::Native)
    } else {
        None
    }
}

/// Decides the runtime of the container in `bundle` (whose rootfs must be
/// in place: `args[0]` is looked at inside it).
pub fn detect(bundle: &Path, spec: &Spec) -> Result<Detection, BundleError> {
    let path = bundle.join("config.json");
    let invalid = |what: String| BundleError::Invalid { path: path.clone(), what };
    let empty = Default::default();
    let ann = spec.annotations().as_ref().unwrap_or(&empty);
    if ann.get(CONTAINER_TYPE).map(String::as_str) == Some("sandbox") {
        return Ok(decided(Kind::Native, format!("{CONTAINER_TYPE}=sandbox (the pod's pause container)")));
    }
    let process = spec.process().as_ref().ok_or_else(|| invalid("no process section; add process.args".into()))?;
    let args = process.args().clone().unwrap_or_default();
    let arg0 = args.first().ok_or_else(|| invalid("process.args is empty; set it to the program to run".into()))?;
    let module_named = {
        let (p, _) = entry::split_export(arg0, |_| false);
        p.ends_with(".wasm") || p.ends_with(".wat")
    };
    for key in [OCI_HANDLER, WASM_VARIANT] {
        match ann.get(key).map(String::as_str) {
            Some("wasm") | Some("compat") => return Ok(decided(Kind::Wasm, format!("annotation {key}"))),
            Some("wasm-smart") | Some("compat-smart") if module_named => {
                return Ok(decided(Kind::Wasm, format!("annotation {key} (smart) and args[0] {arg0:?} names a module")))
            }
            Some("wasm-smart") | Some("compat-smart") => {
                return Ok(decided(Kind::Native, format!("annotation {key} (smart) and args[0] {arg0:?} is not a .wasm/.wat")))
            }
            _ => {}
        }
    }
    let root = spec.root().as_ref().ok_or_else(|| invalid("no root section; set root.path to the rootfs directory".into()))?;
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    let env = process.env().clone().unwrap_or_default();
    let path_env = env.iter().find_map(|kv| kv.strip_prefix("PATH="));
    let cwd = process.cwd().to_string_lossy().into_owned();
    let exists = |p: &str| crate::rooted::open_in_root(&rootfs, p).is_ok();
    let (file, _) = entry::split_export(arg0, exists);
    let found = entry::find_in_root(&rootfs, &file, &cwd, path_env)?;
    let mut head = Vec::with_capacity(4);
    crate::rooted::open_in_root(&rootfs, &found)
        .and_then(|f| f.take(4).read_to_end(&mut head))
        .map_err(|e| invalid(format!("reading the entrypoint {found}: {e}")))?;
    match sniff(&head, &found) {
        Some(Kind::Wasm) => Ok(decided(Kind::Wasm, format!("{found} is a wasm module"))),
        Some(Kind::Native) => Ok(decided(Kind::Native, format!("{found} is a native program (ELF or #! script)"))),
        None => Err(invalid(format!(
            "the entrypoint {found} (args[0] {arg0:?}) is neither wasm (\\0asm, .wat) nor a native program (ELF, #!); it starts with {:02x?}",
            head
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(args: &[&str], ann: &[(&str, &str)]) -> Spec {
        let json = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
            "annotations": ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::HashMap<_, _>>(),
        });
        serde_json::from_value(json).unwrap()
    }

    fn bundle(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("rootfs/bin")).unwrap();
        for (p, body) in files {
            std::fs::write(d.path().join("rootfs").join(p), body).unwrap();
        }
        d
    }

    #[test]
    fn rules_apply_in_order() {
        let b = bundle(&[("bin/sh", b"\x7fELF\x02\x01"), ("app.wasm", b"\0asm\x01\0\0\0"), ("bin/run", b"#!/bin/sh\n"), ("data", b"hello")]);
        let k = |args: &[&str], ann: &[(&str, &str)]| detect(b.path(), &spec(args, ann)).map(|d| d.kind);
        assert_eq!(k(&["/app.wasm"], &[(CONTAINER_TYPE, "sandbox")]).unwrap(), Kind::Native);
        assert_eq!(k(&["sh"], &[(OCI_HANDLER, "wasm")]).unwrap(), Kind::Wasm);
        assert_eq!(k(&["sh"], &[(WASM_VARIANT, "compat-smart")]).unwrap(), Kind::Native);
        assert_eq!(k(&["/app.wasm#run"], &[(WASM_VARIANT, "compat-smart")]).unwrap(), Kind::Wasm);
        assert_eq!(k(&["/app.wasm"], &[]).unwrap(), Kind::Wasm);
        assert_eq!(k(&["sh", "-c", "true"], &[]).unwrap(), Kind::Native);
        assert_eq!(k(&["run"], &[]).unwrap(), Kind::Native);
        let e = k(&["/data"], &[]).unwrap_err().to_string();
        assert!(e.contains("/data") && e.contains("neither wasm"), "{e}");
        let e = k(&["missing"], &[]).unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("not found"), "{e}");
    }
}
