//! `berth install containerd` on real config files, checked by containerd
//! itself (`containerd config dump` parses the result).
mod common;
use common::Berth;
use std::process::Command;

fn dump(config: &std::path::Path) -> String {
    let o = Command::new("containerd").arg("--config").arg(config).args(["config", "dump"]).output().expect("containerd is installed (.ci/run installs it)");
    assert!(o.status.success(), "containerd rejects the config: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
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
    assert!(d.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.berth]") && d.contains("runtime_type = \"io.containerd.berth.v1\""), "{d}");
    assert!(d.contains("runtime_type = \"io.containerd.runc.v2\""), "the runc entry is kept: {d}");
    // Schema 1 is refused, and the file is untouched.
    std::fs::write(&config, "root = \"/x\"\n").unwrap();
    b.run(&["install", "containerd", "--config", c]).expect_berth_error(&["schema version 1", "containerd config migrate"]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "root = \"/x\"\n");
}
