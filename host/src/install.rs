//! `berth install containerd`: adds berth's runtime to a containerd
//! config, in place, keeping everything else (comments included).
//!
//! Schema 2 (containerd 1.x) takes the runtime under
//! `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth`, schema 3
//! (containerd 2.x) under
//! `plugins."io.containerd.cri.v1.runtime".containerd.runtimes.berth`.
//! CRI is told to pass `berth.dev/*` pod and container annotations on, so
//! grants made in a pod spec reach the shim.
//!
//! In schema 3 the install also lets containerd's transfer service unpack
//! wasm images (`wasi/wasm`), beside this machine's own platform:
//! containerd 2.3 refuses `ctr image import --platform wasi/wasm` (and
//! pulls through the transfer service) when no unpack platform matches
//! ("no unpack platforms defined"). An `unpack_config` list replaces
//! containerd's default one, so the machine's platform is written too.
//!
//! A `runtimes` table in the file replaces containerd's built-in one (which
//! holds just `runc`), so when the default runtime (`default_runtime_name`,
//! `runc` unless set) has no entry of its own, berth writes containerd's
//! built-in entry for it beside berth's: every runtime that worked before
//! the install still works after it.
use toml_edit::{value, Array, DocumentMut, Item, Table};

/// The runtime type berth registers.
pub const RUNTIME_TYPE: &str = "io.containerd.berth.v1";
/// The runtime name under `runtimes` (the RuntimeClass handler).
pub const RUNTIME_NAME: &str = "berth";
/// containerd's built-in default runtime: its name and type.
const DEFAULT_RUNTIME: (&str, &str) = ("runc", "io.containerd.runc.v2");

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path} is not valid TOML: {reason}")]
    Parse { path: String, reason: String },
    #[error("{path} has config schema version {version}; berth supports versions 2 and 3 (convert it with `containerd config migrate`)")]
    Version { path: String, version: i64 },
    #[error("{path}: {key} is not a table; fix it by hand, then run the install again")]
    NotATable { path: String, key: String },
    #[error("{path}: the default runtime {name:?} (default_runtime_name) has no entry under {key}; containerd's CRI plugin cannot load this config, with or without berth: add that runtime's entry or set default_runtime_name to one that exists, then run the install again")]
    NoDefaultRuntime { path: String, key: String, name: String },
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
///
/// A path ending in `.tmpl` is a k3s or RKE2 template (`config.toml.tmpl`,
/// or `config-v3.toml.tmpl` for containerd 2.x): its Go template lines are
/// kept as they are, an empty one starts from k3s's base template, and the
/// base template (which sets the version and the runc entry) is trusted
/// for what it holds.
pub fn add_runtime(path: &str, text: &str) -> Result<Edit, InstallError> {
    let template = path.ends_with(".tmpl");
    let text_in = if template && text.trim().is_empty() { format!("{K3S_BASE}\n") } else { text.to_string() };
    let (toml, actions) = if template { mask_template(&text_in) } else { (text_in.clone(), Vec::new()) };
    let from_base = actions.iter().any(|a| a.split_whitespace().collect::<String>() == K3S_BASE.split_whitespace().collect::<String>());
    let mut doc: DocumentMut = toml.parse().map_err(|e: toml_edit::TomlError| InstallError::Parse { path: path.into(), reason: e.to_string() })?;
    if text.trim().is_empty() && !template {
        doc["version"] = value(2);
    }
    // Comments (and masked template lines) after the last item stay where
    // they were: before what the install appends, not after it.
    let trailing = doc.trailing().as_str().unwrap_or("").to_string();
    doc.set_trailing("");
    let before = doc.to_string();
    let implied = if from_base {
        if path.ends_with("config-v3.toml.tmpl") {
            3
        } else {
            2
        }
    } else {
        1
    };
    let version = doc.get("version").and_then(Item::as_integer).unwrap_or(implied);
    let plugin = match version {
        2 => "io.containerd.grpc.v1.cri",
        3 => "io.containerd.cri.v1.runtime",
        v => return Err(InstallError::Version { path: path.into(), version: v }),
    };
    let runtimes_key = format!("plugins.\"{plugin}\".containerd.runtimes");
    let containerd = table_at(doc.as_table_mut(), &["plugins", plugin, "containerd"], path)?;
    let default_name = containerd.get("default_runtime_name").and_then(Item::as_str).unwrap_or(DEFAULT_RUNTIME.0).to_string();
    let runtimes = table_at(containerd, &["runtimes"], path).map_err(|_| InstallError::NotATable { path: path.into(), key: runtimes_key.clone() })?;
    if !runtimes.contains_key(&default_name) && !from_base {
        if default_name != DEFAULT_RUNTIME.0 {
            return Err(InstallError::NoDefaultRuntime { path: path.into(), key: runtimes_key, name: default_name });
        }
        let mut runc = Table::new();
        runc["runtime_type"] = value(DEFAULT_RUNTIME.1);
        runtimes.insert(DEFAULT_RUNTIME.0, Item::Table(runc));
    }
    let table =
        table_at(runtimes, &[RUNTIME_NAME], path).map_err(|_| InstallError::NotATable { path: path.into(), key: format!("{runtimes_key}.{RUNTIME_NAME}") })?;
    table.set_implicit(false);
    table["runtime_type"] = value(RUNTIME_TYPE);
    for k in ["pod_annotations", "container_annotations"] {
        let mut list: Vec<String> =
            table.get(k).and_then(Item::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default();
        if !list.iter().any(|a| a == "berth.dev/*") {
            list.push("berth.dev/*".into());
        }
        table[k] = value(list.into_iter().collect::<Array>());
    }
    if version == 3 && !from_base {
        add_wasm_unpack(doc.as_table_mut(), path)?;
    }
    let after = doc.to_string();
    let edited = match after.strip_prefix(&before) {
        Some(appended) => format!("{before}{trailing}{appended}"),
        None => format!("{after}{trailing}"),
    };
    let new_text = unmask_template(&edited, &actions);
    Ok(Edit { version, changed: new_text != text, new_text })
}

/// The line with which a k3s/RKE2 template takes in k3s's own config.
const K3S_BASE: &str = "{{ template \"base\" . }}";
/// What a template line becomes while the rest is edited as TOML.
const TEMPLATE_MARK: &str = "# berth: template line ";

/// `text` with every line that is a Go template action alone (`{{ ... }}`)
/// turned into a numbered TOML comment, and those lines.
fn mask_template(text: &str) -> (String, Vec<String>) {
    let mut actions = Vec::new();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with("{{") && t.ends_with("}}") {
            out.push_str(&format!("{TEMPLATE_MARK}{}\n", actions.len()));
            actions.push(line.trim_end_matches('\n').to_string());
        } else {
            out.push_str(line);
        }
    }
    (out, actions)
}

/// Puts back the lines [`mask_template`] took out.
fn unmask_template(text: &str, actions: &[String]) -> String {
    if actions.is_empty() {
        return text.to_string();
    }
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        match line.trim().strip_prefix(TEMPLATE_MARK).and_then(|n| n.parse::<usize>().ok()).and_then(|n| actions.get(n)) {
            Some(action) => {
                out.push_str(action);
                out.push('\n');
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The table at `keys` under `table`, made (implicit, so that it is written
/// only when it holds something) where missing.
fn table_at<'a>(mut table: &'a mut Table, keys: &[&str], path: &str) -> Result<&'a mut Table, InstallError> {
    let mut key = String::new();
    for part in keys {
        key = if key.is_empty() { part.to_string() } else { format!("{key}.{part}") };
        let entry = table.entry(part).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        table = entry.as_table_mut().ok_or_else(|| InstallError::NotATable { path: path.into(), key: key.clone() })?;
    }
    Ok(table)
}

/// The platform wasm images are unpacked for, and the table of the
/// plugin that unpacks what containerd's transfer service imports and
/// pulls.
const WASM_PLATFORM: &str = "wasi/wasm";
const TRANSFER_PLUGIN: &str = "io.containerd.transfer.v1.local";

/// This machine's platform as containerd names it by default.
fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64/v8",
        "arm" => "arm/v7",
        other => other,
    };
    format!("linux/{arch}")
}

/// One `unpack_config` entry: `platform` onto containerd's default
/// snapshotter (with the walking differ for a platform no differ names).
fn unpack_entry(platform: &str, differ: bool) -> Table {
    let mut t = Table::new();
    t["platform"] = value(platform);
    t["snapshotter"] = value("overlayfs");
    if differ {
        t["differ"] = value("walking");
    }
    t
}

/// Adds `wasi/wasm` to the transfer service's unpack platforms (the
/// machine's own first, when the file lists none, as containerd's default
/// list holds it).
fn add_wasm_unpack(doc: &mut Table, path: &str) -> Result<(), InstallError> {
    let key = format!("plugins.\"{TRANSFER_PLUGIN}\".unpack_config");
    let transfer = table_at(doc, &["plugins", TRANSFER_PLUGIN], path)?;
    let list = transfer.entry("unpack_config").or_insert_with(|| {
        let mut list = toml_edit::ArrayOfTables::new();
        list.push(unpack_entry(&host_platform(), false));
        Item::ArrayOfTables(list)
    });
    let list = list.as_array_of_tables_mut().ok_or_else(|| InstallError::NotATable { path: path.into(), key })?;
    if !list.iter().any(|t| t.get("platform").and_then(Item::as_str).is_some_and(|p| p.starts_with(WASM_PLATFORM))) {
        list.push(unpack_entry(WASM_PLATFORM, true));
    }
    Ok(())
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
        // containerd 2.3's transfer service unpacks wasm images: wasi/wasm
        // beside the machine's platform, once.
        let platforms = |text: &str| -> Vec<String> {
            let doc: DocumentMut = text.parse().unwrap();
            let list = doc["plugins"][TRANSFER_PLUGIN]["unpack_config"].as_array_of_tables().expect("unpack_config");
            list.iter().map(|t| t["platform"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(platforms(&e.new_text), [host_platform(), WASM_PLATFORM.to_string()], "{}", e.new_text);
        let again = add_runtime("c.toml", &e.new_text).unwrap();
        assert!(!again.changed, "{}", diff("c.toml", &e.new_text, &again.new_text));
        // A list of the node's own keeps its entries, and gains wasi/wasm.
        let own = format!("{v3}[[plugins.\"{TRANSFER_PLUGIN}\".unpack_config]]\nplatform = \"linux/amd64\"\nsnapshotter = \"erofs\"\n");
        assert_eq!(platforms(&add_runtime("c.toml", &own).unwrap().new_text), ["linux/amd64", WASM_PLATFORM]);
        // Schema 2 (containerd 1.x) has no such list.
        assert!(!add_runtime("c.toml", DEBIAN_STOCK).unwrap().new_text.contains("unpack_config"));
    }

    /// Debian's stock /etc/containerd/config.toml, less its comments.
    const DEBIAN_STOCK: &str = "version = 2\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      conf_dir = \"/etc/cni/net.d\"\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"/var/lib/containerd/opt\"\n";

    fn runtimes(text: &str, plugin: &str) -> Vec<(String, String)> {
        let doc: DocumentMut = text.parse().unwrap();
        let rt = doc["plugins"][plugin]["containerd"]["runtimes"].as_table().unwrap();
        rt.iter().map(|(k, v)| (k.to_string(), v["runtime_type"].as_str().unwrap_or("").to_string())).collect()
    }

    #[test]
    fn a_config_without_runtimes_keeps_containerds_default_runc() {
        let e = add_runtime("c.toml", DEBIAN_STOCK).unwrap();
        let rt = runtimes(&e.new_text, "io.containerd.grpc.v1.cri");
        assert_eq!(rt, [("runc".to_string(), "io.containerd.runc.v2".to_string()), ("berth".to_string(), RUNTIME_TYPE.to_string())], "{}", e.new_text);
        assert!(e.new_text.contains("bin_dir = \"/usr/lib/cni\""));
        let again = add_runtime("c.toml", &e.new_text).unwrap();
        assert!(!again.changed, "{}", diff("c.toml", &e.new_text, &again.new_text));
        // Schema 3 (containerd 2.x), and an empty file.
        let e = add_runtime("c.toml", "version = 3\n").unwrap();
        assert_eq!(runtimes(&e.new_text, "io.containerd.cri.v1.runtime").len(), 2, "{}", e.new_text);
        let e = add_runtime("c.toml", "").unwrap();
        assert_eq!(runtimes(&e.new_text, "io.containerd.grpc.v1.cri")[0].0, "runc");
    }

    #[test]
    fn another_default_runtime_is_kept_and_a_missing_one_named() {
        let crun = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"crun\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun]\nruntime_type = \"io.containerd.runc.v2\"\n";
        let e = add_runtime("c.toml", crun).unwrap();
        let names: Vec<String> = runtimes(&e.new_text, "io.containerd.grpc.v1.cri").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["crun", "berth"]);
        let broken = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"crun\"\n";
        let err = add_runtime("c.toml", broken).unwrap_err().to_string();
        assert!(err.contains("\"crun\"") && err.contains("default_runtime_name"), "{err}");
    }

    #[test]
    fn k3s_templates_keep_their_template_lines_and_trust_the_base() {
        // An empty template starts from k3s's base, which has runc.
        let e = add_runtime("config.toml.tmpl", "").unwrap();
        assert!(e.new_text.starts_with("{{ template \"base\" . }}\n"), "{}", e.new_text);
        assert_eq!(e.version, 2);
        let body = e.new_text.replacen("{{ template \"base\" . }}", "", 1);
        assert_eq!(runtimes(&body, "io.containerd.grpc.v1.cri"), [("berth".to_string(), RUNTIME_TYPE.to_string())], "{}", e.new_text);
        assert!(!e.new_text.contains("version ="), "the base sets the version: {}", e.new_text);
        // containerd 2.x's template name means schema 3.
        let e = add_runtime("/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl", "{{ template \"base\" . }}\n").unwrap();
        assert_eq!(e.version, 3);
        assert!(e.new_text.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.berth]"), "{}", e.new_text);
        // Lines of the user's own are kept, template actions included, and
        // a second install changes nothing.
        let own = "{{ template \"base\" . }}\n\n# mine\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"{{ .NodeConfig.Containerd.Config }}\"\n{{ if .NodeConfig.AgentConfig.Snapshotter }}\n# snap\n{{ end }}\n";
        let e = add_runtime("config.toml.tmpl", own).unwrap();
        for line in own.lines() {
            assert!(e.new_text.lines().any(|l| l == line), "lost {line:?}:\n{}", e.new_text);
        }
        assert!(e.new_text.contains("runtimes.berth]"), "{}", e.new_text);
        let again = add_runtime("config.toml.tmpl", &e.new_text).unwrap();
        assert!(!again.changed, "{}", diff("t", &e.new_text, &again.new_text));
        // A template without the base is a whole config of its own.
        let e = add_runtime("config.toml.tmpl", DEBIAN_STOCK).unwrap();
        assert_eq!(runtimes(&e.new_text, "io.containerd.grpc.v1.cri").len(), 2, "{}", e.new_text);
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
