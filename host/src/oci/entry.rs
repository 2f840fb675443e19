//! The entrypoint: `args[0]` (optionally `path#export`), found and opened
//! strictly beneath a container root.
use crate::plan::ModuleSource;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("entrypoint {arg0:?} not found in the rootfs {root} (looked in {looked}); set process.args[0] to the module's path, e.g. /app.wasm")]
    NotFound { arg0: String, root: String, looked: String },
    #[error("opening module {source_name}")]
    Open {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("module {source_name} is not a regular file; give the path of a .wasm or .wat file")]
    NotAFile { source_name: String },
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

/// Opens `path` (absolute or relative, as the container sees it) beneath
/// `root`: `..` and symlinks, absolute ones included, resolve inside the
/// root as they would for the container, never outside it.
pub fn open_in_root(root: &Path, path: &str) -> std::io::Result<File> {
    let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    match rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    ) {
        Ok(fd) => Ok(File::from(fd)),
        // Kernels before 5.6 lack openat2: fall back to cap-std, which
        // refuses (rather than re-roots) anything that would leave the root.
        Err(rustix::io::Errno::NOSYS) => {
            let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())?;
            Ok(dir.open(rel)?.into_std())
        }
        Err(e) => Err(e.into()),
    }
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

/// Opens the module file of a plan and checks that it is a regular file.
pub fn open_source(source: &ModuleSource) -> Result<File, EntryError> {
    let source_name = source.to_string();
    let err = |source| EntryError::Open { source_name: source_name.clone(), source };
    let file = match source {
        // O_NONBLOCK: a FIFO or device named as the module must not hang
        // the open; the regular-file check below then refuses it.
        ModuleSource::File(p) | ModuleSource::Blob { path: p, .. } => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(p).map_err(err)?
        }
        ModuleSource::InRoot { root, path } => open_in_root(root, path).map_err(err)?,
        ModuleSource::None => return Err(EntryError::Open { source_name, source: std::io::Error::new(std::io::ErrorKind::NotFound, "no module given") }),
    };
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(EntryError::NotAFile { source_name });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn splits_exports() {
        assert_eq!(split_export("/app.wasm#run", |_| false), ("/app.wasm".into(), Some("run".into())));
        assert_eq!(split_export("/app.wasm", |_| false), ("/app.wasm".into(), None));
        assert_eq!(split_export("/a#b/c.wasm", |_| false), ("/a#b/c.wasm".into(), None));
        assert_eq!(split_export("/x.wasm#", |_| false), ("/x.wasm#".into(), None));
        assert_eq!(split_export("/x#y", |p| p == "/x#y"), ("/x#y".into(), None));
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(outer.path().join("secret"), b"host secret").unwrap();
        std::fs::write(root.join("bin/app.wasm"), b"inside").unwrap();
        // absolute symlink: re-rooted, finds the rootfs's own file
        symlink("/bin/app.wasm", root.join("abs")).unwrap();
        let mut s = String::new();
        use std::io::Read;
        open_in_root(&root, "/abs").unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "inside");
        // relative and absolute escapes stay in the root and find nothing
        symlink("../secret", root.join("rel-out")).unwrap();
        symlink(outer.path().join("secret"), root.join("abs-out")).unwrap();
        for p in ["/rel-out", "/abs-out", "/../secret", "../../secret"] {
            assert!(open_in_root(&root, p).is_err(), "{p} must not reach the host file");
        }
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
