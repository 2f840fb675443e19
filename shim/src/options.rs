//! The shim's runtime options: what containerd's runtime table says about
//! berth, handed to `start` on stdin.
//!
//! containerd passes a runtime's `options` to its shim's `start` as a
//! protobuf `Any`: on stdin itself before 2.3, as an extension of the
//! `BootstrapParams` on stdin from 2.3 on (see `bootstrap`). For a
//! runtime type it does not know (berth's), that is
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
//! containerd 2.x also hands over an options table without a `ConfigPath`
//! as it is (`ConfigBody`): there `grouping = "node"` can stand in the
//! runtime's options table itself.
use berth_host::containerd::api::runtimeoptions::Options;
use protobuf::well_known_types::any::Any;
use protobuf::Message as _;
use std::path::{Path, PathBuf};

/// The type of the options containerd sends for a runtime type it does
/// not know.
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
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
    #[error("the runtime options are not a valid runtimeoptions.v1.Options in a protobuf Any")]
    Malformed(#[source] protobuf::Error),
    #[error("berth takes options of type {RUNTIME_OPTIONS} (a ConfigPath), not {0:?}; set only ConfigPath in the runtime's options table")]
    Type(String),
    #[error("reading berth's shim config {} (the runtime's options.ConfigPath)", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("berth's shim config {origin}: {reason}")]
    Invalid { origin: String, reason: String },
}

/// The config the marshalled `Any` containerd sent names or carries
/// (nothing: the default).
pub fn from_options(input: &[u8]) -> Result<ShimConfig, OptionsError> {
    if input.is_empty() {
        return Ok(ShimConfig::default());
    }
    from_any(&Any::parse_from_bytes(input).map_err(OptionsError::Malformed)?)
}

/// The config the runtime options `any` name or carry. (containerd
/// writes bare type names; protobuf's own `Any` prefixes a host.)
pub fn from_any(any: &Any) -> Result<ShimConfig, OptionsError> {
    if any.type_url.rsplit('/').next() != Some(RUNTIME_OPTIONS) {
        return Err(OptionsError::Type(any.type_url.clone()));
    }
    let options = Options::parse_from_bytes(&any.value).map_err(OptionsError::Malformed)?;
    if !options.config_path.is_empty() {
        return load(Path::new(&options.config_path));
    }
    let invalid = |reason: String| OptionsError::Invalid { origin: "in the runtime's options table".into(), reason };
    let body = std::str::from_utf8(&options.config_body).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
    parse(body).map_err(invalid)
}

/// The count the environment variable `name` (in containerd's
/// environment, which shims inherit) sets: a number from 1 to `max`;
/// `default` when it is unset, and, with a warning naming it, when it is
/// anything else.
pub fn env_count(name: &str, default: u32, max: u32) -> u32 {
    let value = std::env::var_os(name);
    count_setting(name, value.as_deref().map(|v| v.to_string_lossy()).as_deref(), default, max)
}

fn count_setting(name: &str, value: Option<&str>, default: u32, max: u32) -> u32 {
    let Some(value) = value else { return default };
    match value.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => n,
        _ => {
            tracing::warn!(value, default, "{name} is not a number from 1 to {max}; using the default");
            default
        }
    }
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<ShimConfig, OptionsError> {
    use std::io::Read;
    let read = |source| OptionsError::Read { path: path.to_path_buf(), source };
    let mut text = String::new();
    std::fs::File::open(path).and_then(|f| f.take(MAX_CONFIG).read_to_string(&mut text)).map_err(read)?;
    parse(&text).map_err(|reason| OptionsError::Invalid { origin: format!("{} (the runtime's options.ConfigPath)", path.display()), reason })
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

    #[test]
    fn a_count_setting_is_a_number_in_its_range_or_the_default() {
        assert_eq!(count_setting("N", None, 7, 10), 7);
        assert_eq!(count_setting("N", Some("3"), 7, 10), 3);
        assert_eq!(count_setting("N", Some("10"), 7, 10), 10);
        for bad in ["0", "11", "-1", "two", "", " 3"] {
            assert_eq!(count_setting("N", Some(bad), 7, 10), 7, "{bad:?}");
        }
    }

    fn any(type_url: &str, options: &Options) -> Vec<u8> {
        Any { type_url: type_url.into(), value: options.write_to_bytes().unwrap(), ..Default::default() }.write_to_bytes().unwrap()
    }

    fn path(path: &str) -> Vec<u8> {
        any(RUNTIME_OPTIONS, &Options { config_path: path.into(), ..Default::default() })
    }

    #[test]
    fn the_config_comes_from_containerds_runtime_options() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shim.toml");
        std::fs::write(&file, "grouping = \"node\"\n").unwrap();
        assert_eq!(from_options(&path(file.to_str().unwrap())).unwrap().grouping, Grouping::Node);
        assert_eq!(from_options(&[]).unwrap(), ShimConfig::default());
        assert_eq!(from_options(&path("")).unwrap(), ShimConfig::default());
        let e = from_options(&path("/nonexistent/berth-shim.toml")).unwrap_err();
        assert!(matches!(e, OptionsError::Read { .. }), "{e}");
        let runc = any("containerd.runc.v1.Options", &Options::default());
        let e = from_options(&runc).unwrap_err().to_string();
        assert!(e.contains("containerd.runc.v1.Options") && e.contains("ConfigPath"), "{e}");
        assert!(matches!(from_options(b"\x0a\x05ab"), Err(OptionsError::Malformed(_))), "a cut-off field");
    }

    #[test]
    fn containerd_2_hands_over_an_options_table_without_a_config_path_as_it_is() {
        let typed = "type.googleapis.com/runtimeoptions.v1.Options";
        let body = |text: &str| any(typed, &Options { config_body: text.as_bytes().to_vec(), ..Default::default() });
        assert_eq!(from_options(&body("grouping = \"node\"\n")).unwrap().grouping, Grouping::Node);
        let e = from_options(&body("grouping = \"cluster\"\n")).unwrap_err().to_string();
        assert!(e.contains("runtime's options table") && e.contains("\"cluster\""), "{e}");
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
