//! Where berth keeps its state and caches.
use std::path::PathBuf;

/// Environment variable that overrides the state / cache root.
pub const ROOT_ENV: &str = "BERTH_ROOT";

/// The state / cache root: `$BERTH_ROOT`, else `/var/lib/berth` for root,
/// else `$XDG_DATA_HOME/berth` (default `~/.local/share/berth`).
pub fn root() -> PathBuf {
    if let Some(p) = std::env::var_os(ROOT_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/berth");
    }
    if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("berth");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/berth")
}

/// Directory of the precompiled-module cache.
pub fn cache_dir() -> PathBuf {
    root().join("cache")
}
