//! A container's rootfs as containerd hands it over: mounts the shim makes
//! at the bundle's `rootfs`, and undoes.
use std::path::Path;

/// Unmounts a container rootfs, recursively; a path not mounted is fine.
pub fn unmount(path: &Path) {
    if let Some(p) = path.to_str() {
        if let Err(e) = containerd_shim::mount::umount_recursive(Some(p), libc::MNT_DETACH) {
            tracing::debug!(path = p, error = %e, "unmounting rootfs");
        }
    }
}
