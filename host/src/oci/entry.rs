//! The entrypoint: `args[0]` (optionally `path#export`), found and opened
//! strictly beneath a container root ([`crate::rooted`]).
use crate::rooted::open_in_root;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("entrypoint {arg0:?} not found in the rootfs {root} (looked in {looked}); set process.args[0] to the module's path, e.g. /app.wasm")]
    NotFound { arg0: String, root: String, looked: String },
}

/// Splits `path#export`. A `#` is only an export separator when what
/// follows is non-empty, has no `/`, and the whole string is not itself an
/// existing file (so a file named `a#b.wasm` still works).
pub fn split_export(arg0: &str, exists: impl Fn(&str) -> bool) -> (String, Option<String>) {
    if let Some((path, export)) = arg0.rsplit_once('#') {
        if !export.is_empty() && !export.contains('/') && !path.is_empty() && !exists(arg0) {
            return (path.to_string(), Some(export.to_string()));
        }
    }
    (arg0.to_string(), None)
}

/// Finds the entrypoint inside the rootfs like a container runtime would:
/// a path with `/` is taken relative to `cwd`; a bare name is searched in
/// `PATH` (from the container's env), then in `cwd`. Returns the absolute
/// container path.
pub fn find_in_root(root: &Path, arg0: &str, cwd: &str, path_env: Option<&str>) -> Result<String, EntryError> {
    let join = |dir: &str, name: &str| format!("{}/{}", dir.trim_end_matches('/'), name);
    let candidates: Vec<String> = if arg0.starts_with('/') {
        vec![arg0.to_string()]
    } else if arg0.contains('/') {
        vec![join(cwd, arg0)]
    } else {
        let path = path_env.unwrap_or("/usr/local/bin:/usr/bin:/bin");
        path.split(':').filter(|d| !d.is_empty()).map(|d| join(d, arg0)).chain([join(cwd, arg0)]).collect()
    };
    for c in &candidates {
        if let Ok(f) = open_in_root(root, c) {
            if f.metadata().map(|m| m.is_file()).unwrap_or(false) {
                return Ok(c.clone());
            }
        }
    }
    Err(EntryError::NotFound { arg0: arg0.to_string(), root: root.display().to_string(), looked: candidates.join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_exports() {
        assert_eq!(split_export("/app.wasm#run", |_| false), ("/app.wasm".into(), Some("run".into())));
        assert_eq!(split_export("/app.wasm", |_| false), ("/app.wasm".into(), None));
        assert_eq!(split_export("/a#b/c.wasm", |_| false), ("/a#b/c.wasm".into(), None));
        assert_eq!(split_export("/x.wasm#", |_| false), ("/x.wasm#".into(), None));
        assert_eq!(split_export("/x#y", |p| p == "/x#y"), ("/x#y".into(), None));
    }

    #[test]
    fn finds_entrypoints() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("work")).unwrap();
        std::fs::write(root.join("usr/bin/tool.wasm"), b"").unwrap();
        std::fs::write(root.join("work/local.wasm"), b"").unwrap();
        assert_eq!(find_in_root(root, "tool.wasm", "/", None).unwrap(), "/usr/bin/tool.wasm");
        assert_eq!(find_in_root(root, "./local.wasm", "/work", None).unwrap(), "/work/./local.wasm");
        assert_eq!(find_in_root(root, "local.wasm", "/work", Some("/nope")).unwrap(), "/work/local.wasm");
        let e = find_in_root(root, "/missing.wasm", "/", None).unwrap_err().to_string();
        assert!(e.contains("/missing.wasm") && e.contains("args[0]"), "{e}");
        // a directory is not an entrypoint
        assert!(find_in_root(root, "/work", "/", None).is_err());
    }
}
