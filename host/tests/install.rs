//! `berth install containerd` on real config files, checked by containerd
//! itself (`containerd config dump` parses the result).
mod common;
use common::Berth;
use std::process::Command;

/// `containerd config dump` of `config`, by the containerd under test,
/// with its table names in double quotes (2.x writes single ones).
fn dump(config: &std::path::Path) -> String {
    let o = Command::new(berth_tests::containerd::require("containerd"))
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .expect("containerd is installed (.ci/run installs it)");
    assert!(o.status.success(), "containerd rejects the config: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).replace('\'', "\"")
}

/// The header of berth's runtime table in a dump by the containerd under
/// test (which migrates a schema-2 file to its own schema).
fn berth_table() -> String {
    format!("[plugins.\"{}\".containerd.runtimes.berth]", berth_tests::containerd::cri_plugin("runtime"))
}

#[test]
fn adds_the_runtime_once_keeps_a_backup_and_containerd_accepts_it() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let original = format!(
        "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\n# keep me\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n",
        dir.path().display()
    );
    std::fs::write(&config, &original).unwrap();
    let c = config.to_str().unwrap();
    let o = b.run(&["install", "containerd", "--config", c, "--dry-run"]);
    o.expect_code(0);
    assert!(o.stdout.contains("+runtime_type = \"io.containerd.berth.v1\""), "{}", o.stdout);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original, "--dry-run changed the file");
    b.run(&["install", "containerd", "--config", c]).expect_code(0);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with(&original), "existing entries and comments must stay:\n{text}");
    let backups: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains("berth-backup")).collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(std::fs::read_to_string(backups[0].path()).unwrap(), original);
    let o = b.run(&["install", "containerd", "--config", c]);
    o.expect_code(0);
    assert!(o.stdout.contains("nothing to do"), "{}", o.stdout);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text, "a second install changed the file");
    let d = dump(&config);
    assert!(d.contains(&berth_table()) && d.contains("runtime_type = \"io.containerd.berth.v1\""), "{d}");
    assert!(d.contains("runtime_type = \"io.containerd.runc.v2\""), "the runc entry is kept: {d}");
    // Schema 1 is refused, and the file is untouched.
    std::fs::write(&config, "root = \"/x\"\n").unwrap();
    b.run(&["install", "containerd", "--config", c]).expect_berth_error(&["schema version 1", "containerd config migrate"]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "root = \"/x\"\n");
}

/// Debian's stock /etc/containerd/config.toml (its tables; comments
/// dropped), with the opt plugin's path moved into `p`. For containerd
/// 2.x, whose package ships none, the opt plugin's table alone, in schema
/// 3.
fn debian_stock_tables(p: &std::path::Path) -> String {
    if berth_tests::containerd::schema() == 3 {
        return format!("[plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{}/opt\"\n", p.display());
    }
    format!(
        "[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      conf_dir = \"/etc/cni/net.d\"\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{}/opt\"\n",
        p.display()
    )
}

/// The status containerd gives its CRI plugin in `ctr plugins ls` (`ok`,
/// `error`, ...).
fn cri_status(c: &berth_tests::containerd::Containerd) -> String {
    let o = c.ctr(&["plugins", "ls"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let row = out.lines().find(|l| l.split_whitespace().take(2).eq(["io.containerd.grpc.v1", "cri"])).unwrap_or_else(|| panic!("no CRI plugin row in:\n{out}"));
    row.split_whitespace().last().unwrap().to_string()
}

#[test]
fn containerds_cri_plugin_still_loads_after_an_install_on_debians_stock_config() {
    use berth_tests::containerd::{private_config, Containerd};
    let b = Berth::new();
    let c = Containerd::start_configured(&[], &[], |p| {
        let config = p.join("config.toml");
        std::fs::write(&config, private_config(p, "", &debian_stock_tables(p))).unwrap();
        b.run(&["install", "containerd", "--config", config.to_str().unwrap()]).expect_code(0);
    });
    assert_eq!(cri_status(&c), "ok", "containerd's log:\n{}", c.log());
    let d = dump(&c.dir.path().join("config.toml"));
    assert!(
        d.contains("runtime_type = \"io.containerd.runc.v2\"") && d.contains("runtime_type = \"io.containerd.berth.v1\"") && d.contains(&berth_table()),
        "{d}"
    );
}
