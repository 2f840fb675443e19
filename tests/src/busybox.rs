//! A minimal native rootfs: Debian's static busybox (`busybox-static`)
//! and its applets as symlinks, for native-container tests.
use std::path::Path;

/// Where Debian's busybox-static installs busybox.
pub const BUSYBOX: &str = "/bin/busybox";

const APPLETS: &[&str] = &["sh", "echo", "ls", "cat", "sleep", "id", "true", "false", "readlink", "test", "wc", "mkdir", "touch", "pwd", "ps", "grep", "head"];

/// Fills `root` with `/bin/busybox` and its applets, plus empty `/proc`,
/// `/dev`, `/sys`, `/tmp` and `/etc` for the runtime's mounts.
pub fn rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let meta = std::fs::metadata(BUSYBOX).unwrap_or_else(|e| panic!("{BUSYBOX}: {e}; install busybox-static"));
    assert!(meta.len() > 100_000, "{BUSYBOX} should be the static busybox");
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
    }
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
}

/// A native bundle in `dir`: a busybox rootfs and the default runtime spec
/// (namespaces, masked and read-only paths, capabilities as `runc spec`
/// makes them) running `args`, changed by `tweak`.
pub fn bundle(dir: &Path, args: &[&str], tweak: impl FnOnce(&mut oci_spec::runtime::Spec)) {
    rootfs(&dir.join("rootfs"));
    let mut spec = oci_spec::runtime::Spec::default();
    spec.set_root(Some(oci_spec::runtime::RootBuilder::default().path("rootfs").readonly(false).build().unwrap()));
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    process.set_env(Some(vec!["PATH=/bin".into()]));
    spec.set_process(Some(process));
    tweak(&mut spec);
    spec.save(dir.join("config.json")).unwrap();
}
