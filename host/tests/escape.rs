//! Filesystem escape attempts by a real guest. The prober is granted one
//! directory read-only and one read-write; every attempt to reach beyond
//! them must fail, and the host outside the writable grant must be
//! byte-for-byte unchanged.
mod common;
use berth_tests::tree::snapshot;
use common::{guests, Berth};
use std::os::unix::fs::symlink;
use std::path::Path;

fn prepare(t: &Path) {
    common::write(&t.join("outside/secret.txt"), "top secret");
    common::write(&t.join("ro/file.txt"), "read-only data");
    std::fs::create_dir_all(t.join("rw")).unwrap();
    symlink(t.join("outside/secret.txt"), t.join("ro/abs-link")).unwrap();
    symlink("../outside/secret.txt", t.join("ro/rel-link")).unwrap();
    symlink("../outside", t.join("ro/dir-link")).unwrap();
    symlink("../outside", t.join("rw/out-link")).unwrap();
}

fn probe(prober: &str) {
    let t = tempfile::tempdir().unwrap();
    prepare(t.path());
    let before = snapshot(t.path(), &|p| p.starts_with("rw/") && p != "rw/out-link");
    let secret = t.path().join("outside/secret.txt");
    let ro = format!("{}:/ro:ro", t.path().join("ro").display());
    let rw = format!("{}:/rw", t.path().join("rw").display());
    let out = Berth::new().run(&["run", "--dir", &ro, "--dir", &rw, prober, "/ro", "/rw", secret.to_str().unwrap()]);

    let attempts: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("DENIED") || l.starts_with("ESCAPED")).collect();
    assert!(attempts.len() >= 25, "prober made too few attempts:\n{}\n{}", out.stdout, out.stderr);
    let escaped: Vec<&&str> = attempts.iter().filter(|l| l.starts_with("ESCAPED")).collect();
    assert!(escaped.is_empty(), "escapes:\n{}", escaped.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("\n"));
    out.expect_code(0);
    assert!(out.stdout.contains("summary escaped=0"), "{}", out.stdout);

    // Outside the writable grant nothing changed: contents, modes, links.
    let after = snapshot(t.path(), &|p| p.starts_with("rw/") && p != "rw/out-link");
    assert_eq!(before, after, "host tree changed outside the writable grant");
    assert!(!t.path().join("escaped.txt").exists());
    assert!(!t.path().join("outside/planted.txt").exists());
    assert!(!t.path().join("rw/hardlink").exists(), "hard link of the read-only file was created");
    assert!(!Path::new("/tmp/berth-escape.txt").exists());
    // What the guest did write stayed inside its writable grant.
    assert!(t.path().join("rw/staged.txt").exists(), "the writable grant did work");
}

#[test]
fn escape_attempts_fail_p1() {
    probe(guests::ESCAPE_PROBER_P1);
}

#[test]
fn escape_attempts_fail_p2() {
    probe(guests::ESCAPE_PROBER_P2);
}

#[test]
fn file_tool_works_inside_its_grants() {
    let t = tempfile::tempdir().unwrap();
    common::write(&t.path().join("data/in.txt"), "input");
    let grant = format!("{}:/data", t.path().join("data").display());
    let b = Berth::new();
    b.run(&["run", "--dir", &grant, guests::FILE_TOOL_P1, "write", "/data/out.txt", "written"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(t.path().join("data/out.txt")).unwrap(), "written");
    let out = b.run(&["run", "--dir", &grant, guests::FILE_TOOL_P2, "ls", "/data"]);
    assert_eq!(out.expect_code(0).stdout, "in.txt\nout.txt\n");
    let out = b.run(&["run", "--dir", &format!("{grant}:ro"), guests::FILE_TOOL_P1, "write", "/data/x", "y"]);
    out.expect_code(1);
    assert!(!t.path().join("data/x").exists());
    // nothing granted, nothing visible
    b.run(&["run", guests::FILE_TOOL_P1, "read", "/data/in.txt"]).expect_code(1);
}
