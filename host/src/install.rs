//! `berth install containerd`: adds berth's runtime to a containerd
//! config, in place, keeping everything else (comments included).
//!
//! Schema 2 (containerd 1.x) takes the runtime under
//! `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth`, schema 3
//! (containerd 2.x) under
//! `plugins."io.containerd.cri.v1.runtime".containerd.runtimes.berth`.
//! CRI is told to pass `berth.dev/*` pod and container annotations on, so
//! grants made in a pod spec reach the shim.
use toml_edit::{value, Array, DocumentMut, Item, Table};

/// The runtime type berth registers.
pub const RUNTIME_TYPE: &str = "io.containerd.berth.v1";
/// The runtime name under `runtimes` (the RuntimeClass handler).
pub const RUNTIME_NAME: &str = "berth";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path} is not valid TOML: {reason}")]
    Parse { path: String, reason: String },
    #[error("{path} has config schema version {version}; berth supports versions 2 and 3 (convert it with `containerd config migrate`)")]
    Version { path: String, version: i64 },
    #[error("{path}: {key} is not a table; fix it by hand, then run the install again")]
    NotATable { path: String, key: String },
}

/// What an install did to the config text.
#[derive(Debug, PartialEq, Eq)]
pub struct Edit {
    pub version: i64,
    pub new_text: String,
    pub changed: bool,
}

/// Returns `text` with berth's runtime entry added or updated. An empty
/// `text` (no config yet) becomes a schema-2 config with just that entry.
pub fn add_runtime(path: &str, text: &str) -> Result<Edit, InstallError> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| InstallError::Parse { path: path.into(), reason: e.to_string() })?;
    if text.trim().is_empty() {
        doc["version"] = value(2);
    }
    let version = doc.get("version").and_then(Item::as_integer).unwrap_or(1);
    let plugin = match version {
        2 => "io.containerd.grpc.v1.cri",
        3 => "io.containerd.cri.v1.runtime",
        v => return Err(InstallError::Version { path: path.into(), version: v }),
    };
    let mut table = doc.as_table_mut();
    let mut key = String::new();
    for part in ["plugins", plugin, "containerd", "runtimes", RUNTIME_NAME] {
        key = if key.is_empty() { part.to_string() } else { format!("{key}.{part}") };
        let entry = table.entry(part).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        table = entry.as_table_mut().ok_or_else(|| InstallError::NotATable { path: path.into(), key: key.clone() })?;
    }
    table.set_implicit(false);
    table["runtime_type"] = value(RUNTIME_TYPE);
    for k in ["pod_annotations", "container_annotations"] {
        let mut list: Vec<String> = table.get(k).and_then(Item::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default();
        if !list.iter().any(|a| a == "berth.dev/*") {
            list.push("berth.dev/*".into());
        }
        table[k] = value(list.into_iter().collect::<Array>());
    }
    let new_text = doc.to_string();
    Ok(Edit { version, changed: new_text != text, new_text })
}

/// A unified diff of the edit, for `--dry-run`.
pub fn diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new).unified_diff().header(path, &format!("{path} (with berth)")).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"version = 2
root = "/var/lib/containerd"

# the default runtime
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
"#;

    #[test]
    fn adds_to_schema_2_keeping_everything() {
        let e = add_runtime("c.toml", V2).unwrap();
        assert!(e.changed && e.version == 2);
        let doc: DocumentMut = e.new_text.parse().unwrap();
        let rt = &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(rt["berth"]["runtime_type"].as_str(), Some(RUNTIME_TYPE));
        assert_eq!(rt["runc"]["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert!(e.new_text.contains("# the default runtime") && e.new_text.contains("default_runtime_name = \"runc\""));
        assert!(e.new_text.contains("berth.dev/*"));
        // Idempotent.
        let again = add_runtime("c.toml", &e.new_text).unwrap();
        assert!(!again.changed, "{}", diff("c.toml", &e.new_text, &again.new_text));
    }

    #[test]
    fn adds_to_schema_3_and_fixes_a_changed_entry() {
        let v3 = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.berth]\nruntime_type = 'old'\npod_annotations = ['x/*']\n";
        let e = add_runtime("c.toml", v3).unwrap();
        let doc: DocumentMut = e.new_text.parse().unwrap();
        let b = &doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["berth"];
        assert_eq!(b["runtime_type"].as_str(), Some(RUNTIME_TYPE));
        let pods: Vec<&str> = b["pod_annotations"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(pods, ["x/*", "berth.dev/*"]);
    }

    #[test]
    fn refuses_what_it_cannot_edit() {
        assert!(matches!(add_runtime("c.toml", "root = '/x'\n"), Err(InstallError::Version { version: 1, .. })));
        assert!(matches!(add_runtime("c.toml", "version = 2\n[plugins\n"), Err(InstallError::Parse { .. })));
        assert!(matches!(add_runtime("c.toml", "version = 2\nplugins = 3\n"), Err(InstallError::NotATable { .. })));
        let fresh = add_runtime("c.toml", "").unwrap();
        assert!(fresh.new_text.starts_with("version = 2"), "{}", fresh.new_text);
    }
}
