//! End to end through `ctr --runtime io.containerd.berth.v1` against a
//! private containerd (see `common::ctr`). Guests of other users: a wasm
//! container with a non-root `process.user` gets only that user's file
//! access, and a long-lived shim leaks no descriptors.
mod common;

use berth_tests::guests;
use common::ctr::*;
use common::*;

#[test]
fn other_users_get_only_their_file_access_and_a_long_lived_shim_leaks_no_fds() {
    let env = Env::new(&[(guests::WAT_SLEEP, "example.com/sleep:1"), (guests::HELLO_P1, "example.com/hello:1")]);
    // An image whose config runs the file tool as 1000:1000.
    import_as_user(&env, guests::FILE_TOOL_P1, "example.com/user:1");
    // A host directory with a root-only file and a public one, bind-mounted.
    let data = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.path().join("private.txt"), "root only").unwrap();
    std::fs::set_permissions(data.path().join("private.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(data.path().join("public.txt"), "anyone").unwrap();
    std::fs::set_permissions(data.path().join("public.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mount = format!("type=bind,src={},dst=/data,options=rbind:rw", data.path().display());
    let read = |id: &str, file: &str| env.ctr(&["run", "--rm", "--runtime", RUNTIME, "--mount", &mount, "example.com/user:1", id, "/app.wasm", "read", file]);
    // The kernel holds the guest to uid 1000: the root-only file is refused.
    let o = read("u1", "/data/private.txt");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ermission denied"), "{}", text(&o));
    let o = read("u2", "/data/public.txt");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "anyone");

    // One shim keeps serving a group while containers come and go.
    assert!(env.ctr(&["run", "-d", "--null-io", "--annotation", "berth.dev/group=fd", "--runtime", RUNTIME, "example.com/sleep:1", "keeper"]).status.success());
    env.wait_status("keeper", "RUNNING");
    let shim = env.shims()[0];
    let fds = || std::fs::read_dir(format!("/proc/{shim}/fd")).unwrap().count();
    let cycle = |i: usize| {
        let id = format!("c{i}");
        let o = env.ctr(&["run", "--rm", "--annotation", "berth.dev/group=fd", "--runtime", RUNTIME, "example.com/hello:1", &id]);
        assert!(o.status.success(), "{}", text(&o));
    };
    cycle(0);
    let before = fds();
    for i in 1..=10 {
        cycle(i);
    }
    assert_eq!(env.shims(), vec![shim], "the group's shim served them all");
    assert_eq!(fds(), before, "fds of the shim grew over 10 create/delete cycles");
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "keeper"]).status.success());
    env.wait_status("keeper", "STOPPED");
    assert!(env.ctr(&["task", "rm", "keeper"]).status.success());
}
