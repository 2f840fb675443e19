//! `berth run --bundle`: OCI runtime bundles through the same RunPlan path.
mod common;
use common::{guests, Berth};
use std::path::{Path, PathBuf};

/// Writes `config.json` into `dir` and copies `module` into its rootfs.
fn bundle(dir: &Path, module: &str, in_root: &str, config: serde_json::Value) -> PathBuf {
    let rootfs = dir.join("rootfs");
    common::write(&rootfs.join(in_root.trim_start_matches('/')), std::fs::read(module).unwrap());
    common::write(&dir.join("config.json"), serde_json::to_vec_pretty(&config).unwrap());
    dir.to_path_buf()
}

fn config(args: &[&str], extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": { "user": { "uid": 0, "gid": 0 }, "args": args, "env": ["PATH=/bin", "MODE=bundle"], "cwd": "/" },
        "root": { "path": "rootfs", "readonly": true },
        "mounts": [ { "destination": "/proc", "type": "proc", "source": "proc" },
                    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs" } ]
    });
    merge(&mut c, extra);
    c
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

#[test]
fn runs_bundle_with_args_env_cwd() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("rootfs/work")).unwrap();
    let cfg = config(&["app.wasm", "one", "two"], serde_json::json!({ "process": { "cwd": "/work" } }));
    let dir = bundle(t.path(), guests::ARGS_ENV_P1, "/bin/app.wasm", cfg);
    let out = Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]);
    out.expect_code(0);
    assert!(out.stdout.starts_with("arg[0]=app.wasm\narg[1]=one\narg[2]=two\nenv MODE=bundle\nenv PATH=/bin\n"), "{}", out.stdout);
}

#[test]
fn bind_mounts_are_granted_at_their_destination_and_ro_honoured() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::write(&data.join("hello.txt"), "from the host");
    let mounts = serde_json::json!({ "mounts": [
        { "destination": "/data", "type": "bind", "source": data, "options": ["rbind", "ro"] },
        { "destination": "/proc", "type": "proc", "source": "proc" } ] });
    let dir = bundle(&t.path().join("b"), guests::FILE_TOOL_P1, "/tool.wasm", config(&["/tool.wasm", "read", "/data/hello.txt"], mounts.clone()));
    let out = Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]);
    assert_eq!(out.expect_code(0).stdout, "from the host");
    let dir = bundle(&t.path().join("b"), guests::FILE_TOOL_P1, "/tool.wasm", config(&["/tool.wasm", "write", "/data/new.txt", "x"], mounts.clone()));
    Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]).expect_code(1);
    assert!(!data.join("new.txt").exists());
    // root.readonly: the rootfs itself cannot be written
    let dir = bundle(&t.path().join("b"), guests::FILE_TOOL_P1, "/tool.wasm", config(&["/tool.wasm", "write", "/new.txt", "x"], mounts));
    Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]).expect_code(1);
    assert!(!dir.join("rootfs/new.txt").exists());
    // proc is not exposed to wasm guests
    let dir = bundle(&t.path().join("c"), guests::FILE_TOOL_P1, "/tool.wasm", config(&["/tool.wasm", "ls", "/proc"], serde_json::json!({})));
    Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]).expect_code(1);
}

#[test]
fn entrypoint_symlink_cannot_leave_the_rootfs() {
    let t = tempfile::tempdir().unwrap();
    let host_module = t.path().join("host-only.wasm");
    std::fs::copy(guests::HELLO_P1, &host_module).unwrap();
    let dir = t.path().join("b");
    common::write(&dir.join("config.json"), serde_json::to_vec(&config(&["/app.wasm"], serde_json::json!({}))).unwrap());
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    std::os::unix::fs::symlink(&host_module, dir.join("rootfs/app.wasm")).unwrap();
    let out = Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]);
    out.expect_berth_error(&["/app.wasm", "not found in the rootfs"]);
    assert!(!out.stdout.contains("hello"));
    // a relative link climbing out fares no better
    std::fs::remove_file(dir.join("rootfs/app.wasm")).unwrap();
    std::os::unix::fs::symlink("../../host-only.wasm", dir.join("rootfs/app.wasm")).unwrap();
    Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]).expect_berth_error(&["not found in the rootfs"]);
}

#[test]
fn bundle_limits_and_annotations() {
    let t = tempfile::tempdir().unwrap();
    let cfg = config(&["/loop.wat"], serde_json::json!({ "annotations": { "berth.dev/timeout": "1s" } }));
    let dir = bundle(&t.path().join("a"), guests::WAT_LOOP, "/loop.wat", cfg);
    Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]).expect_code(124);
    let cfg = config(&["/bomb.wat"], serde_json::json!({ "linux": { "resources": { "memory": { "limit": 1048576 } } } }));
    let dir = bundle(&t.path().join("b"), guests::WAT_MEMBOMB, "/bomb.wat", cfg);
    Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]).expect_code(7);
    let cfg = config(&["/bomb.wat"], serde_json::json!({ "annotations": { "berth.dev/net-connect": "not-a-rule" } }));
    let dir = bundle(&t.path().join("c"), guests::WAT_MEMBOMB, "/bomb.wat", cfg);
    Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]).expect_berth_error(&["berth.dev/net-connect", "not-a-rule"]);
}

#[test]
fn invalid_bundles_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let b = Berth::new();
    let dir = t.path().to_str().unwrap();
    b.run(&["run", "--bundle", dir]).expect_berth_error(&["config.json", "--bundle"]);
    common::write(&t.path().join("config.json"), "{ not json");
    b.run(&["run", "--bundle", dir]).expect_berth_error(&["config.json", "not a valid OCI runtime spec"]);
    common::write(&t.path().join("config.json"), serde_json::to_vec(&config(&[], serde_json::json!({}))).unwrap());
    std::fs::create_dir_all(t.path().join("rootfs")).unwrap();
    b.run(&["run", "--bundle", dir]).expect_berth_error(&["process.args is empty"]);
    b.run(&["run", "--bundle", dir, "--dir", "/tmp:/tmp"]).expect_berth_error(&["--bundle", "config.json"]);
    b.run(&["run", "--bundle", dir, "extra"]).expect_berth_error(&["--bundle", "process.args"]);
}

#[test]
fn guest_file_access_is_limited_to_process_user() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::write(&data.join("private.txt"), "root only");
    common::write(&data.join("public.txt"), "anyone");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data.join("private.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mounts = |file: &str| {
        let user = serde_json::json!({
            "process": { "user": { "uid": 65534, "gid": 65534, "additionalGids": [65534] } },
            "root": { "readonly": false },
            "mounts": [ { "destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"] } ]
        });
        config(&["/tool.wasm", "read", file], user)
    };
    let dir = bundle(&t.path().join("b"), guests::FILE_TOOL_P1, "/tool.wasm", mounts("/data/private.txt"));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]);
    if rustix::process::geteuid().is_root() {
        // as root, berth takes on uid 65534: the kernel refuses the 0600 file
        out.expect_code(1);
        assert!(out.stderr.contains("ermission denied") || out.stderr.contains("PermissionDenied"), "{}", out.stderr);
        let dir = bundle(&t.path().join("b"), guests::FILE_TOOL_P1, "/tool.wasm", mounts("/data/public.txt"));
        let out = Berth::new().run(&["run", "--bundle", dir.to_str().unwrap()]);
        assert_eq!(out.expect_code(0).stdout, "anyone");
    } else {
        // without root berth cannot become uid 65534 and refuses to run
        // the guest with the caller's (wider) access
        out.expect_berth_error(&["uid 65534", "cannot switch"]);
    }
}
