//! `RunPlan`: everything a runtime needs to run one container, as plain
//! data. Built from CLI flags ([`crate::cli`]) or from an OCI bundle
//! ([`crate::oci::bundle`]); consumed by the runtimes.
pub use crate::caps::dirs::Preopen;
pub use crate::caps::identity::User;
use crate::caps::net::NetPolicy;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// One container's run, fully resolved.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunPlan {
    /// Human-readable name for logs (container id, or the module's file name).
    pub name: String,
    /// Where the wasm code comes from, and which export to call.
    pub entrypoint: Entrypoint,
    /// The guest's argv, argv[0] included, exactly as given.
    pub args: Vec<String>,
    /// The guest's environment, exactly as given (no host variables).
    pub env: Vec<(String, String)>,
    /// The guest's initial working directory (a guest path).
    pub cwd: Option<String>,
    /// Host directories the guest may reach, and where it sees them.
    pub preopens: Vec<Preopen>,
    /// Sockets the guest may open.
    pub net: NetPolicy,
    /// Origins a wasi:http guest may send requests to (none: all denied).
    pub http_outbound: Vec<crate::caps::http::HttpOrigin>,
    /// Where a `wasi:http/incoming-handler` guest is served (`None`: the
    /// default, 0.0.0.0:8080).
    pub http_listen: Option<std::net::SocketAddr>,
    /// Requests served at once (`None`: the server's default).
    pub http_max_concurrency: Option<usize>,
    /// Largest request body served (`None`: the server's default).
    pub http_max_body: Option<u64>,
    /// Connections served at once (`None`: the server's default).
    pub http_max_connections: Option<usize>,
    /// Time a client has to send a request's head (`None`: the server's default).
    pub http_header_timeout: Option<std::time::Duration>,
    /// The network namespace (a path, e.g. a pod's `/var/run/netns/...`)
    /// the guest's listening sockets live in; `None`: berth's own.
    pub net_namespace: Option<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
    /// Identity whose file access the guest must not exceed.
    pub user: Option<User>,
    /// Whether precompiled (`.cwasm`) input may be loaded. Precompiled code
    /// is trusted machine code, so only explicit opt-in allows it.
    pub allow_precompiled: bool,
    /// Where the guest's stdin, stdout and stderr go.
    pub stdio: Stdio,
}

/// The guest's standard streams.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Stdio {
    /// berth's own (the `berth` command).
    #[default]
    Inherit,
    /// Paths (FIFOs from containerd, or files); `None` is the null device.
    Paths { stdin: Option<PathBuf>, stdout: Option<PathBuf>, stderr: Option<PathBuf> },
}

/// The code to run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entrypoint {
    pub source: ModuleSource,
    /// Export to call instead of `_start` / `wasi:cli/run`.
    pub export: Option<String>,
}

/// Where the module or component bytes live.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum ModuleSource {
    /// A host path, given by the user on the command line.
    File(PathBuf),
    /// A path inside a container root, resolved beneath `root` (symlinks
    /// included) so it can never name a file outside the rootfs.
    InRoot { root: PathBuf, path: String },
    /// A content-addressed blob (an image's wasm layer): its bytes must
    /// hash to `digest` (`sha256:<hex>`), or it is refused.
    Blob { path: PathBuf, digest: String },
    #[default]
    None,
}

impl std::fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleSource::File(p) => write!(f, "{}", p.display()),
            ModuleSource::InRoot { root, path } => write!(f, "{path} (in rootfs {})", root.display()),
            ModuleSource::Blob { digest, .. } => write!(f, "blob {digest}"),
            ModuleSource::None => f.write_str("<no module>"),
        }
    }
}

/// Resource limits of one guest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    /// Cap on linear memories plus tables, in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU share: `quota / period` of one core (e.g. 0.5).
    pub cpu: Option<CpuQuota>,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
}

/// CPU quota per period, as in `linux.resources.cpu` (microseconds).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}
