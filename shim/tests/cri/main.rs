//! End to end through Kubernetes' CRI: a private containerd with its CRI
//! plugin (config, root, state and socket in a temp dir,
//! `restrict_oom_score_adj = true`), CNI from Debian's
//! containernetworking-plugins (a bridge of the test's own), `runtimes.berth`
//! written by berth's installer, a pause image made with `berth image build
//! --rootfs`, and the CRI API (runtime.v1 over gRPC) driven as kubelet
//! drives it. Pod addresses are only used from inside the pod's network
//! namespace.
#[path = "../common/mod.rs"]
mod common;
mod manifests;
mod node;

use berth_tests::guests;
use common::*;
use k8s_cri::v1::*;
use node::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_pod_runs_wasm_and_native_containers_in_one_shim_and_leaves_nothing() {
    let node = Node::start(&[
        (guests::HELLO_P1, "berth.test/hello:1"),
        (guests::HELLO_P2, "berth.test/hello:2"),
        (guests::WAT_SLEEP, "berth.test/sleep:1"),
        (guests::WAT_LOOP, "berth.test/loop:1"),
    ]);
    let pod = node.run_pod("mixed", |_| {});
    // p1 and p2 guests run to completion; their output is in the pod's
    // CRI-format logs.
    for (name, image, line) in [("hello1", "berth.test/hello:1", "(p1 module)"), ("hello2", "berth.test/hello:2", "(p2 component)")] {
        let id = node.run(&pod, name, image, |_| {});
        let s = node.wait_exited(&id);
        assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
        let log = node.log(&pod, name);
        assert!(stdout_lines(&log).iter().any(|l| l.contains(line)), "{name}'s log: {log:?}");
    }
    // A native sidecar: ExecSync works in it.
    let side = node.run(&pod, "sidecar", BUSYBOX, |c| c.command = vec!["/bin/sleep".into(), "1000".into()]);
    node.wait_running(&side);
    let r = node.exec_sync(&side, &["/bin/sh", "-c", "echo hi; echo oops >&2; exit 3"]).unwrap();
    assert_eq!((r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code), (&b"hi\n"[..], &b"oops\n"[..], 3));
    // A wasm container refuses exec with a clear error.
    let sleeper = node.run(&pod, "sleeper", "berth.test/sleep:1", |_| {});
    node.wait_running(&sleeper);
    let e = node.exec_sync(&sleeper, &["/bin/sh"]).unwrap_err();
    assert!(e.message().contains("wasm"), "{e}");
    // A busy wasm guest shows CPU and memory in ContainerStats.
    let busy = node.run(&pod, "busy", "berth.test/loop:1", |_| {});
    node.wait_running(&busy);
    std::thread::sleep(Duration::from_millis(500));
    let st = node.stats(&busy);
    let cpu = st.cpu.and_then(|c| c.usage_core_nano_seconds).map(|v| v.value).unwrap_or(0);
    let mem = st.memory.and_then(|m| m.working_set_bytes).map(|v| v.value).unwrap_or(0);
    assert!(cpu > 100_000_000 && mem > 0, "stats of a spinning guest: cpu {cpu} ns, memory {mem} B");
    // One shim serves the whole pod, pause container included.
    assert_eq!(node.shims().len(), 1, "one shim per pod");
    // StopContainer ends a guest with SIGTERM: 143.
    node.stop_container(&sleeper, 10);
    assert_eq!(node.wait_exited(&sleeper).exit_code, 143);
    node.assert_no_zombies();
    node.remove_pod(&pod, Duration::from_secs(30));
    node.wait_clean();
    let state = berth_host::native::state_root_for(node.c.socket().to_str().unwrap(), "k8s.io");
    let left: Vec<_> = std::fs::read_dir(&state).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "native state left in {}: {left:?}", state.display());
}

#[test]
fn a_pods_wasm_sockets_and_http_listener_live_in_the_pods_network_namespace() {
    let node = Node::start(&[
        (guests::TCP_CLIENT_P2, "berth.test/tcp-client:1"),
        (guests::TCP_SERVER_P2, "berth.test/tcp-server:1"),
        (guests::HTTP_HELLO_P2, "berth.test/http:1"),
    ]);
    let (port, node_only, http, listen, upstream) = (free_port(), free_port(), free_port(), free_port(), free_port());
    // The grants come as pod annotations (the installer's pod_annotations).
    let grant = format!("127.0.0.1/32:{port},127.0.0.1/32:{node_only}");
    let pod = node.run_pod("socks", |p| {
        p.annotations.insert("berth.dev/net-connect".into(), grant.clone());
        p.annotations.insert("berth.dev/net-listen".into(), format!("127.0.0.1/32:{listen}"));
        p.annotations.insert("berth.dev/http-outbound".into(), format!("http://127.0.0.1:{upstream}"));
    });
    let ns = node.netns(&pod);
    banner_server(None, port, "node");
    banner_server(Some(&ns), port, "pod");
    banner_server(None, node_only, "node");
    let connect = |name: &str, to: u16| {
        let id = node.run(&pod, name, "berth.test/tcp-client:1", |c| c.args = vec![format!("127.0.0.1:{to}")]);
        node.wait_exited(&id);
        stdout_lines(&node.log(&pod, name)).join("\n")
    };
    assert_eq!(connect("c1", port), "reply=pod", "a pod's guest reached another loopback than its pod's");
    let out = connect("c2", node_only);
    assert!(out.starts_with("connect-error"), "a pod's guest reached a server on the node's loopback: {out}");
    // Without the grant the same connect is refused by berth.
    let pod2 = node.run_pod("nogrant", |_| {});
    let id = node.run(&pod2, "c3", "berth.test/tcp-client:1", |c| c.args = vec![format!("127.0.0.1:{port}")]);
    node.wait_exited(&id);
    let out = stdout_lines(&node.log(&pod2, "c3")).join("\n");
    assert!(out.starts_with("connect-error") && out.contains("PermissionDenied"), "{out}");
    // The wasi:http listener is in the pod: it answers there, not on the node.
    let web = node.run(&pod, "web", "berth.test/http:1", |c| c.envs = vec![env("BERTH_HTTP_ADDR", &format!("127.0.0.1:{http}"))]);
    wait_serving(&ns, http);
    assert_eq!(get_in(&ns, http, "/hi").unwrap(), (200, "hello from berth: GET /hi\n".into()));
    assert!(std::net::TcpStream::connect(("127.0.0.1", http)).is_err(), "the pod's listener is on the node's loopback");
    // Outbound wasi:http goes to the pod's loopback, not the node's.
    banner_server(None, upstream, "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnode");
    banner_server(Some(&ns), upstream, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\npod");
    let (code, body) = get_in(&ns, http, &format!("/fetch?to=127.0.0.1:{upstream}/x")).unwrap();
    assert_eq!((code, body.trim_end()), (200, "fetched 200: pod"), "outbound wasi:http left the pod's network namespace");
    // A guest's own listener is in the pod too.
    let server = node.run(&pod, "listener", "berth.test/tcp-server:1", |c| c.args = vec![format!("127.0.0.1:{listen}")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stdout_lines(&node.log(&pod, "listener")).contains(&"listening") {
        assert!(Instant::now() < deadline, "the guest never listened: {}", node.log(&pod, "listener"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", listen)).is_err(), "the guest's listener is on the node's loopback");
    let reply = berth_host::wasm::netns::within(std::path::Path::new(&ns), || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", listen))?;
        c.write_all(b"ping")?;
        c.shutdown(std::net::Shutdown::Write)?;
        let mut r = String::new();
        c.read_to_string(&mut r)?;
        Ok::<_, std::io::Error>(r)
    })
    .expect("connecting to the guest's listener in the pod");
    assert_eq!(reply, "pong:ping");
    assert_eq!(node.wait_exited(&server).exit_code, 0);
    // Log rotation: kubelet renames the log, then asks for it to be reopened.
    assert_eq!(get_in(&ns, http, "/log").unwrap().0, 200);
    let log = node.log_path(&pod, "web");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.log(&pod, "web").contains("stdout") {
        assert!(Instant::now() < deadline, "no log line from /log");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::rename(&log, log.with_extension("log.1")).unwrap();
    let req = ReopenContainerLogRequest { container_id: web.clone() };
    node.call(|mut c| async move { c.reopen_container_log(req).await }).expect("ReopenContainerLog");
    assert_eq!(get_in(&ns, http, "/log").unwrap().0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.log(&pod, "web").contains("stdout") {
        assert!(
            Instant::now() < deadline,
            "nothing logged after ReopenContainerLog: {:?}",
            std::fs::read_dir(log.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A drain within the timeout ends with 0.
    node.stop_container(&web, 10);
    assert_eq!(node.wait_exited(&web).exit_code, 0);
    node.remove_pod(&pod, Duration::from_secs(30));
    node.remove_pod(&pod2, Duration::from_secs(30));
    node.wait_clean();
}

#[test]
fn a_pod_sharing_its_pid_namespace_stops_after_a_failed_exec() {
    let node = Node::start(&[]);
    let pod = node.run_pod("shared-pid", |p| {
        let ns = p.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap();
        ns.pid = NamespaceMode::Pod as i32;
    });
    let side = node.run(&pod, "sidecar", BUSYBOX, |c| c.command = vec!["/bin/sleep".into(), "1000".into()]);
    node.wait_running(&side);
    // A command the image does not have: an error, and nothing left behind.
    match node.exec_sync(&side, &["/no/such/command"]) {
        Ok(r) => assert_ne!(r.exit_code, 0, "{r:?}"),
        Err(e) => assert!(e.message().contains("/no/such/command"), "{e}"),
    }
    node.assert_no_zombies();
    node.remove_pod(&pod, Duration::from_secs(15));
    node.wait_clean();
}

#[test]
fn kubelet_restarts_and_stop_timeouts_behave_as_with_runc() {
    let node = Node::start(&[(guests::ARGS_ENV_P1, "berth.test/args:1"), (guests::HTTP_HELLO_P2, "berth.test/http:1")]);
    let pod = node.run_pod("restarts", |_| {});
    // A crashed container is created again in the same pod, as attempt 1.
    let first = node.run(&pod, "app", "berth.test/args:1", |c| c.args = vec!["--exit".into(), "3".into()]);
    let s = node.wait_exited(&first);
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"), "{s:?}");
    let second = node.run(&pod, "app", "berth.test/args:1", |c| {
        c.metadata.as_mut().unwrap().attempt = 1;
        c.log_path = "app-1.log".into();
    });
    assert_ne!(first, second);
    assert_eq!(node.wait_exited(&second).exit_code, 0);
    // StopContainer's timeout: SIGTERM, then SIGKILL when it runs out.
    let stubborn = node.run(&pod, "stubborn", BUSYBOX, |c| {
        c.command = vec!["/bin/sh".into(), "-c".into(), "trap '' TERM; echo > /tmp/trapped; while true; do sleep 1; done".into()]
    });
    node.wait_running(&stubborn);
    // Only once the shell ignores SIGTERM.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.exec_sync(&stubborn, &["/bin/cat", "/tmp/trapped"]).is_ok_and(|r| r.exit_code == 0) {
        assert!(Instant::now() < deadline, "the shell never set its trap");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    node.stop_container(&stubborn, 2);
    let s = node.wait_exited(&stubborn);
    assert_eq!(s.exit_code, 137, "{s:?}");
    assert!(t.elapsed() >= Duration::from_secs(2), "SIGKILL came before the timeout ran out");
    // A wasi:http drain that outlasts the timeout ends with 137 too.
    let http = free_port();
    let ns = node.netns(&pod);
    let web = node.run(&pod, "web", "berth.test/http:1", |c| c.envs = vec![env("BERTH_HTTP_ADDR", &format!("127.0.0.1:{http}"))]);
    wait_serving(&ns, http);
    let spinning = {
        let ns = ns.clone();
        std::thread::spawn(move || get_in(&ns, http, "/loop"))
    };
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    node.stop_container(&web, 1);
    assert_eq!(node.wait_exited(&web).exit_code, 137);
    assert!(t.elapsed() >= Duration::from_secs(1), "the drain was cut short before the timeout ran out");
    let _ = spinning.join();
    node.remove_pod(&pod, Duration::from_secs(30));
    node.wait_clean();
}

#[test]
fn mounts_users_and_a_read_only_rootfs_apply_to_wasm_guests() {
    let node = Node::start(&[(guests::FILE_TOOL_P1, "berth.test/files:1")]);
    let pod = node.run_pod("files", |_| {});
    use std::os::unix::fs::PermissionsExt;
    let dir = node.c.dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    // /data belongs to the pod's user (as with fsGroup), /shared to root.
    let (rw, ro, shared) = (dir.join("host-rw"), dir.join("host-ro"), dir.join("host-shared"));
    for d in [&rw, &ro, &shared] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("in.txt"), "from the host").unwrap();
    }
    std::os::unix::fs::chown(&rw, Some(4242), Some(4242)).unwrap();
    let mounts = vec![
        Mount { container_path: "/data".into(), host_path: rw.display().to_string(), ..Default::default() },
        Mount { container_path: "/config".into(), host_path: ro.display().to_string(), readonly: true, ..Default::default() },
        Mount { container_path: "/shared".into(), host_path: shared.display().to_string(), ..Default::default() },
    ];
    let n = std::cell::Cell::new(0);
    let tool = |args: &[&str], uid: Option<i64>, readonly_rootfs: bool| {
        n.set(n.get() + 1);
        let name = format!("tool{}", n.get());
        let id = node.run(&pod, &name, "berth.test/files:1", |c| {
            c.args = args.iter().map(|s| s.to_string()).collect();
            c.mounts = mounts.clone();
            let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
            sc.run_as_user = uid.map(|value| Int64Value { value });
            sc.readonly_rootfs = readonly_rootfs;
        });
        let s = node.wait_exited(&id);
        (s.exit_code, node.log(&pod, &name))
    };
    let (code, log) = tool(&["read", "/config/in.txt"], None, false);
    assert_eq!((code, stdout_lines(&log)), (0, vec!["from the host"]), "{log}");
    // The read-only mount refuses writes and the host file is unchanged.
    let (code, _) = tool(&["write", "/config/in.txt", "changed"], None, false);
    assert_eq!(code, 1);
    assert_eq!(std::fs::read_to_string(ro.join("in.txt")).unwrap(), "from the host");
    // runAsUser: what the guest writes belongs to that uid.
    let (code, log) = tool(&["write", "/data/out.txt", "written"], Some(4242), false);
    assert_eq!(code, 0, "{log}");
    let meta = std::fs::metadata(rw.join("out.txt")).unwrap();
    assert_eq!((std::os::unix::fs::MetadataExt::uid(&meta), std::fs::read_to_string(rw.join("out.txt")).unwrap().as_str()), (4242, "written"));
    // ... and the kernel checks that uid: root's directory refuses it.
    let (code, log) = tool(&["write", "/shared/out.txt", "x"], Some(4242), false);
    assert!(code == 1 && log.contains("PermissionDenied"), "{code}: {log}");
    assert!(!shared.join("out.txt").exists());
    let (code, log) = tool(&["write", "/shared/out.txt", "x"], None, false);
    assert_eq!(code, 0, "{log}");
    // readOnlyRootFilesystem: the rootfs refuses writes, mounts still take them.
    let (code, _) = tool(&["write", "/new.txt", "x"], None, true);
    assert_eq!(code, 1);
    let (code, log) = tool(&["write", "/data/second.txt", "y"], None, true);
    assert_eq!(code, 0, "{log}");
    node.remove_pod(&pod, Duration::from_secs(30));
    node.wait_clean();
}

#[test]
fn a_wasm_guest_that_runs_out_of_memory_is_oom_killed() {
    let node = Node::start(&[(guests::WAT_OOM, "berth.test/oom:1"), (guests::WAT_MEMBOMB, "berth.test/membomb:1")]);
    let pod = node.run_pod("oom", |_| {});
    let limited = |c: &mut ContainerConfig| c.linux.as_mut().unwrap().resources.as_mut().unwrap().memory_limit_in_bytes = 32 << 20;
    // Aborting on a refused allocation (a trap) is an OOM kill.
    let id = node.run(&pod, "oom", "berth.test/oom:1", limited);
    let s = node.wait_exited(&id);
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"), "{s:?}");
    // A guest that handles the refusal and exits on its own is not.
    let id = node.run(&pod, "handled", "berth.test/membomb:1", limited);
    let s = node.wait_exited(&id);
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"), "{s:?}");
    node.remove_pod(&pod, Duration::from_secs(30));
    node.wait_clean();
}

#[test]
fn a_refused_oom_score_adj_names_its_cause_through_cri() {
    // Without restrict_oom_score_adj, CRI asks for -998 for the pause
    // container; a host that refuses it must say so.
    let node = Node::start_with(&[], false);
    let e = match node.try_run_pod("oomadj", |_| {}) {
        Err(e) => e,
        Ok(_) => {
            // Root in the init user namespace may lower it: nothing to report.
            let s = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
            panic!(
                "RunPodSandbox with oomScoreAdj -998 succeeded here (oom_score_adj {s:?}); this host does not refuse it, so this test cannot show the error"
            );
        }
    };
    let msg = e.message();
    assert!(msg.contains("oomScoreAdj") && msg.contains("oom_score_adj") && msg.contains("ermission denied"), "{msg}");
}

/// A directory of the test's that is a shared mount of its own (kubelet
/// makes its pods' volume directories so), unmounted on drop.
struct SharedDir(PathBuf);

impl SharedDir {
    fn new(path: PathBuf) -> SharedDir {
        std::fs::create_dir_all(&path).unwrap();
        let ok = |args: &[&str]| assert!(Command::new("mount").args(args).arg(&path).arg(&path).status().unwrap().success(), "mount {args:?}");
        ok(&["--bind"]);
        let d = SharedDir(path);
        assert!(Command::new("mount").arg("--make-shared").arg(&d.0).status().unwrap().success());
        d
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn native_containers_honour_mount_propagation_as_runc_does() {
    let node = Node::start(&[]);
    for handler in ["runc", "berth"] {
        let dir = node.c.dir.path().join(format!("prop-{handler}"));
        let (both, down) = (SharedDir::new(dir.join("both")), SharedDir::new(dir.join("down")));
        let pod = node
            .try_run_pod_with(handler, &format!("prop-{handler}"), |p| p.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = true)
            .unwrap_or_else(|e| panic!("{handler}: {e}"));
        let id = node.run(&pod, "mounter", BUSYBOX, |c| {
            c.command = vec![
                "/bin/sh".into(),
                "-c".into(),
                "mkdir -p /both/inner && mount -t tmpfs tmpfs /both/inner && echo from-container > /both/inner/f; exec sleep 1000".into(),
            ];
            c.mounts = vec![
                Mount {
                    container_path: "/both".into(),
                    host_path: both.0.display().to_string(),
                    propagation: MountPropagation::PropagationBidirectional as i32,
                    ..Default::default()
                },
                Mount {
                    container_path: "/down".into(),
                    host_path: down.0.display().to_string(),
                    propagation: MountPropagation::PropagationHostToContainer as i32,
                    ..Default::default()
                },
            ];
            c.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = true;
        });
        node.wait_running(&id);
        // rshared: the container's mount reaches the host.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(both.0.join("inner/f")).ok().as_deref() != Some("from-container\n") {
            assert!(Instant::now() < deadline, "{handler}: the container's mount under a Bidirectional volume never reached the host");
            std::thread::sleep(Duration::from_millis(50));
        }
        // rslave (and rshared): the host's later mount reaches the container.
        for d in [&down.0, &both.0] {
            let late = d.join("late");
            std::fs::create_dir_all(&late).unwrap();
            assert!(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&late).status().unwrap().success());
            std::fs::write(late.join("f"), "from-host").unwrap();
        }
        for inside in ["/down/late/f", "/both/late/f"] {
            let r = node.exec_sync(&id, &["/bin/cat", inside]).unwrap_or_else(|e| panic!("{handler}: {e}"));
            assert_eq!(
                (r.exit_code, String::from_utf8_lossy(&r.stdout).as_ref()),
                (0, "from-host"),
                "{handler}: {inside}: {}",
                String::from_utf8_lossy(&r.stderr)
            );
        }
        node.remove_pod(&pod, Duration::from_secs(30));
        drop((both, down));
    }
    node.wait_clean();
}

#[test]
fn a_wasm_artifact_runs_in_a_pod_with_a_command() {
    use berth_host::oci::image::build::{self, BuildOptions};
    let node = Node::start(&[]);
    // CRI gives an artifact (application/wasm layer, no diff_ids) an empty
    // rootfs; the shim finds the module through containerd's content store.
    let built = build::build(&BuildOptions {
        module: Some(guests::HELLO_P2.into()),
        name: "berth.test/artifact:1".into(),
        artifact: true,
        adds: vec![],
        rootfs: None,
        entrypoint: vec![],
    })
    .unwrap();
    let tar = node.c.dir.path().join("artifact.tar");
    build::write_archive(&built, std::fs::File::create(&tar).unwrap()).unwrap();
    let o = node.c.ctr_in("k8s.io", &["image", "import", "--all-platforms", "--no-unpack", tar.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let pod = node.run_pod("artifact", |_| {});
    let id = node.run(&pod, "app", "berth.test/artifact:1", |c| c.command = vec!["/app.wasm".into()]);
    let s = node.wait_exited(&id);
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert!(stdout_lines(&node.log(&pod, "app")).iter().any(|l| l.contains("(p2 component)")), "{}", node.log(&pod, "app"));
    node.remove_pod(&pod, Duration::from_secs(30));
    node.wait_clean();
}

#[test]
fn pods_of_the_node_wide_handler_share_one_shim_and_end_apart() {
    let node = Node::start(&[(guests::WAT_SLEEP, "berth.test/sleep:1")]);
    // Handler `berth-node` (options.ConfigPath: grouping = "node").
    let pods: Vec<Pod> = ["wide-a", "wide-b"].iter().map(|n| node.try_run_pod_with("berth-node", n, |_| {}).unwrap_or_else(|e| panic!("{n}: {e}"))).collect();
    let apps: Vec<String> = pods.iter().map(|p| node.run(p, "app", "berth.test/sleep:1", |_| {})).collect();
    for id in &apps {
        node.wait_running(id);
    }
    assert_eq!(node.shims().len(), 1, "two pods of the node-wide handler, one shim: {:?}", node.shims());
    // A pod of handler `berth` keeps a shim of its own.
    let own = node.run_pod("own", |_| {});
    let own_app = node.run(&own, "app", "berth.test/sleep:1", |_| {});
    node.wait_running(&own_app);
    assert_eq!(node.shims().len(), 2, "{:?}", node.shims());
    // One pod's end leaves the other running in the shared shim.
    node.remove_pod(&pods[0], Duration::from_secs(30));
    node.wait_running(&apps[1]);
    assert_eq!(node.shims().len(), 2);
    node.stop_container(&apps[1], 10);
    assert_eq!(node.wait_exited(&apps[1]).exit_code, 143);
    node.assert_no_zombies();
    node.remove_pod(&pods[1], Duration::from_secs(30));
    node.remove_pod(&own, Duration::from_secs(30));
    node.wait_clean();
}

#[test]
fn recursive_read_only_mounts_are_offered_as_containerd_reads_handlers() {
    let node = Node::start(&[]);
    // What kubelet reads before it asks for recursiveReadOnly: the
    // handler's features in CRI's Status. containerd 1.x reports none;
    // 2.0 to 2.2 read them from `-info` for runc-type runtimes only; from
    // 2.3 on for every runtime, berth's `-info` listing `rro` among its
    // mount options.
    let status = node.call(|mut c| async move { c.status(StatusRequest { verbose: false }).await }).expect("CRI Status");
    let rro =
        |name: &str| status.runtime_handlers.iter().find(|h| h.name == name).and_then(|h| h.features.as_ref()).is_some_and(|f| f.recursive_read_only_mounts);
    let version = berth_tests::containerd::version();
    let want =
        |runc: bool, berth: bool| assert!(rro("runc") == runc && rro("berth") == berth, "containerd {version:?}: handlers {:?}", status.runtime_handlers);
    match version {
        (1, _) => want(false, false),
        (2, minor) if minor < 3 => want(true, false),
        _ => want(true, true),
    }
    // The handlers that offer it honour it: `ro` leaves a submount of the
    // volume writable, `rro` does not (native containers through
    // libcontainer's mount_setattr; shim/tests/native.rs runs berth's
    // native and wasm sides of it through ctr on every containerd).
    let vol = WithSubmount::new(node.c.dir.path().join("rro-volume"));
    for handler in ["runc", "berth"].into_iter().filter(|h| rro(h)) {
        let pod = node.try_run_pod_with(handler, &format!("rro-{handler}"), |_| {}).unwrap_or_else(|e| panic!("{handler}: {e}"));
        for (name, recursive, sub_writable) in [("plain", false, true), ("recursive", true, false)] {
            let id = node.run(&pod, name, BUSYBOX, |c| {
                c.command =
                    vec!["/bin/sh".into(), "-c".into(), "touch /v/sub/f-$0 2>/dev/null; echo sub=$?; touch /v/t 2>/dev/null; echo top=$?".into(), name.into()];
                c.mounts = vec![Mount {
                    container_path: "/v".into(),
                    host_path: vol.0.display().to_string(),
                    readonly: true,
                    recursive_read_only: recursive,
                    ..Default::default()
                }];
            });
            node.wait_exited(&id);
            let log = node.log(&pod, name);
            let want = vec![if sub_writable { "sub=0" } else { "sub=1" }, "top=1"];
            assert_eq!(stdout_lines(&log), want, "{handler}, {name} read-only mount: {log}");
            assert_eq!(vol.0.join("sub").join(format!("f-{name}")).exists(), sub_writable, "{handler}, {name}");
        }
        node.remove_pod(&pod, Duration::from_secs(30));
        for f in ["f-plain", "f-recursive"] {
            let _ = std::fs::remove_file(vol.0.join("sub").join(f));
        }
    }
    drop(vol);
    node.wait_clean();
}

#[test]
fn pods_keep_running_across_a_containerd_restart_and_stop_cleanly_after_it() {
    let mut node = Node::start(&[(guests::WAT_SLEEP, "berth.test/sleep:1")]);
    let wasm_pod = node.run_pod("restart-wasm", |_| {});
    let guest = node.run(&wasm_pod, "guest", "berth.test/sleep:1", |_| {});
    let native_pod = node.run_pod("restart-native", |_| {});
    let side = node.run(&native_pod, "side", BUSYBOX, |c| {
        c.command = vec!["/bin/sh".into(), "-c".into(), "trap 'exit 0' TERM; while :; do sleep 1; done".into()];
    });
    node.wait_running(&guest);
    node.wait_running(&side);
    let shims = node.shims();
    assert_eq!(shims.len(), 2, "a shim per pod: {shims:?}");
    // containerd stops (as a service manager stops it) and starts again:
    // it reconnects to the shims, which kept their containers.
    node.restart_containerd();
    node.wait_running(&guest);
    node.wait_running(&side);
    let mut after = node.shims();
    after.sort();
    let mut before = shims.clone();
    before.sort();
    assert_eq!(after, before, "the same shims serve the pods after the restart");
    node.stop_container(&guest, 10);
    assert_eq!(node.wait_exited(&guest).exit_code, 143);
    node.stop_container(&side, 10);
    assert_eq!(node.wait_exited(&side).exit_code, 0);
    node.remove_pod(&wasm_pod, Duration::from_secs(30));
    node.remove_pod(&native_pod, Duration::from_secs(30));
    node.wait_clean();
}
