//! The shim's runtime options: what containerd's runtime table says about
//! berth, handed to `start` on stdin.
//!
//! containerd passes a runtime's `options` to its shim's `start` as a
//! protobuf `Any`. For a runtime type it does not know (berth's), that is
//! `runtimeoptions.v1.Options`, whose `ConfigPath` names a file of the
//! runtime's own: for berth, a TOML file such as
//!
//! ```toml
//! # One shim serves every pod (and container) of the node, per
//! # containerd namespace, instead of one shim per pod.
//! grouping = "node"
//! ```
//!
//! set in containerd's config as
//! `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth.options]`
//! `ConfigPath = "/etc/berth/shim.toml"` (or `ctr run --runtime-config-path`).
use berth_host::containerd::Msg;
use std::path::{Path, PathBuf};

/// The type of the options containerd sends for a runtime type it does
/// not know.
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
/// What `start` reads of stdin at most (containerd's own bound).
const MAX_INPUT: u64 = 1 << 20;
/// The largest config file read.
const MAX_CONFIG: u64 = 64 << 10;

/// Which containers share a shim process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grouping {
    /// A pod's containers (or a `berth.dev/group`) share one; any other
    /// container has its own.
    #[default]
    Pod,
    /// One shim serves every container of the node's containerd
    /// namespace.
    Node,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShimConfig {
    pub grouping: Grouping,
}

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("reading the runtime options on stdin")]
    Stdin(#[source] std::io::Error),
    #[error("the runtime options on stdin: {0}")]
    Malformed(String),
    #[error("reading berth's shim config {} (the runtime's options.ConfigPath)", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("berth's shim config {} (the runtime's options.ConfigPath): {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// The config the runtime options on stdin name; the default when
/// containerd sent none (nothing, or a terminal, on stdin).
pub fn from_stdin() -> Result<ShimConfig, OptionsError> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(ShimConfig::default());
    }
    let mut input = Vec::new();
    stdin.lock().take(MAX_INPUT).read_to_end(&mut input).map_err(OptionsError::Stdin)?;
    match config_path(&input)? {
        Some(path) => load(&path),
        None => Ok(ShimConfig::default()),
    }
}

/// The `ConfigPath` of the marshalled `Any` containerd sent, if any.
fn config_path(input: &[u8]) -> Result<Option<PathBuf>, OptionsError> {
    if input.is_empty() {
        return Ok(None);
    }
    let any = Msg::decode(input).map_err(OptionsError::Malformed)?;
    let type_url = any.get_str(1);
    if type_url.rsplit('/').next() != Some(RUNTIME_OPTIONS) {
        return Err(OptionsError::Malformed(format!(
            "berth takes options of type {RUNTIME_OPTIONS} (a ConfigPath), not {type_url:?}; set only ConfigPath in the runtime's options table"
        )));
    }
    // runtimeoptions.v1.Options { string type_url = 1; string config_path = 2; }
    let path = any.get_msg(2).map_err(OptionsError::Malformed)?.get_str(2);
    Ok((!path.is_empty()).then(|| PathBuf::from(path)))
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<ShimConfig, OptionsError> {
    use std::io::Read;
    let read = |source| OptionsError::Read { path: path.to_path_buf(), source };
    let mut text = String::new();
    std::fs::File::open(path).and_then(|f| f.take(MAX_CONFIG).read_to_string(&mut text)).map_err(read)?;
    parse(&text).map_err(|reason| OptionsError::Invalid { path: path.to_path_buf(), reason })
}

fn parse(text: &str) -> Result<ShimConfig, String> {
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.message().to_string())?;
    let mut config = ShimConfig::default();
    for (key, item) in doc.iter() {
        match key {
            "grouping" => {
                config.grouping = match item.as_str() {
                    Some("pod") => Grouping::Pod,
                    Some("node") => Grouping::Node,
                    _ => {
                        return Err(format!(
                            "grouping = {}: use \"pod\" (a shim per pod, the default) or \"node\" (one shim for the node)",
                            item.to_string().trim()
                        ))
                    }
                }
            }
            other => return Err(format!("unknown key {other:?}; berth's shim config has only \"grouping\"")),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(path: &str) -> Vec<u8> {
        let inner = Msg::new().bytes(2, path);
        Msg::new().bytes(1, RUNTIME_OPTIONS).msg(2, &inner).encode()
    }

    #[test]
    fn the_config_path_comes_from_containerds_runtime_options() {
        assert_eq!(config_path(&options("/etc/berth/shim.toml")).unwrap(), Some(PathBuf::from("/etc/berth/shim.toml")));
        assert_eq!(config_path(&[]).unwrap(), None);
        assert_eq!(config_path(&options("")).unwrap(), None);
        let runc = Msg::new().bytes(1, "containerd.runc.v1.Options").encode();
        let e = config_path(&runc).unwrap_err().to_string();
        assert!(e.contains("containerd.runc.v1.Options") && e.contains("ConfigPath"), "{e}");
    }

    #[test]
    fn configs_are_checked_key_by_key() {
        assert_eq!(parse("").unwrap().grouping, Grouping::Pod);
        assert_eq!(parse("grouping = \"node\"\n").unwrap().grouping, Grouping::Node);
        assert_eq!(parse("# a pod each\ngrouping = \"pod\"").unwrap().grouping, Grouping::Pod);
        let e = parse("grouping = \"cluster\"").unwrap_err();
        assert!(e.contains("\"cluster\"") && e.contains("\"node\""), "{e}");
        let e = parse("groupin = \"node\"").unwrap_err();
        assert!(e.contains("groupin") && e.contains("grouping"), "{e}");
        assert!(parse("grouping = ").is_err());
    }

    #[test]
    fn an_unreadable_config_names_its_path() {
        let e = load(Path::new("/nonexistent/berth-shim.toml")).unwrap_err();
        assert!(matches!(e, OptionsError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/berth-shim.toml"), "{e}");
    }
}
