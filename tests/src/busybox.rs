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
