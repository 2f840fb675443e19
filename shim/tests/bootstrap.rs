//! The shim started exactly as containerd 2.3 starts it (its
//! `pkg/shim` `Command`): the legacy flags and environment, and a
//! `BootstrapParams` on stdin, built from containerd's own
//! `bootstrap.proto` (as containerd-shim-protos compiles it). The test then
//! drives the shim's task API as containerd does, for a wasm container and
//! a native one, and deletes them. A real containerd (the one on `PATH`)
//! receives the shim's events.
mod common;

use berth_tests::containerd::Containerd;
use common::*;
use containerd_shim_protos::api;
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, Extension, LogLevel};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{EnumOrUnknown, Message};
use containerd_shim_protos::shim_sync::{Client, TaskClient};
use containerd_shim_protos::ttrpc::context;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const NS: &str = "berth-bootstrap";

/// The shim's `start` as containerd 2.3 runs it for container `id` of
/// bundle `bundle`, with `stdin`; its output and status.
fn start_as_2_3(c: &Containerd, bundle: &Path, id: &str, stdin: &[u8]) -> std::process::Output {
    let grpc = c.socket().display().to_string();
    let ttrpc = format!("{grpc}.ttrpc");
    let mut child = Command::new(env!("CARGO_BIN_EXE_containerd-shim-berth-v1"))
        .args(["-namespace", NS, "-address", &grpc, "-publish-binary", "/usr/bin/containerd", "-id", id, "start"])
        .current_dir(bundle)
        .env("GOMAXPROCS", "2")
        .env("MAX_SHIM_VERSION", "2")
        .env("TTRPC_ADDRESS", &ttrpc)
        .env("GRPC_ADDRESS", &grpc)
        .env("NAMESPACE", NS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the shim");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The message containerd 2.3 writes: the runtime's options (here a
/// `runtimeoptions.v1.Options` with `grouping = "pod"` in its body) as
/// an extension, and its socket directory.
fn params(c: &Containerd, id: &str) -> BootstrapParams {
    let grpc = c.socket().display().to_string();
    let options = berth_host::containerd::api::runtimeoptions::Options { config_body: b"grouping = \"pod\"\n".to_vec(), ..Default::default() };
    let any = Any { type_url: "runtimeoptions.v1.Options".into(), value: options.write_to_bytes().unwrap(), ..Default::default() };
    BootstrapParams {
        instance_id: id.into(),
        namespace: NS.into(),
        log_level: EnumOrUnknown::new(LogLevel::LOG_LEVEL_INFO),
        containerd_version: "v2.3.4".into(),
        containerd_ttrpc_address: format!("{grpc}.ttrpc"),
        containerd_grpc_address: grpc,
        containerd_binary: "/usr/bin/containerd".into(),
        socket_dir: Some(c.dir.path().join("s").display().to_string()),
        extensions: vec![Extension { value: Some(any).into(), ..Default::default() }],
        ..Default::default()
    }
}

/// A bundle for `args`, with `rootfs` as its root, under `dir`.
fn bundle(dir: &Path, args: &[&str]) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    let mut spec = oci_spec::runtime::Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
    process.set_terminal(Some(false));
    spec.set_process(Some(process));
    spec.save(dir.join("config.json")).unwrap();
    dir.to_path_buf()
}

/// Creates, starts, waits for and deletes container `id` of `bundle`
/// through the shim at `address`; its exit status and stdout.
fn run(client: &TaskClient, id: &str, bundle: &Path) -> (u32, String) {
    let ctx = || context::with_timeout(60_000_000_000);
    let stdout = bundle.join("stdout");
    let created = client
        .create(
            ctx(),
            &api::CreateTaskRequest { id: id.into(), bundle: bundle.display().to_string(), stdout: stdout.display().to_string(), ..Default::default() },
        )
        .unwrap_or_else(|e| panic!("create {id}: {e:?}"));
    assert!(created.pid > 0);
    client.start(ctx(), &api::StartRequest { id: id.into(), ..Default::default() }).unwrap_or_else(|e| panic!("start {id}: {e:?}"));
    let waited = client.wait(ctx(), &api::WaitRequest { id: id.into(), ..Default::default() }).unwrap_or_else(|e| panic!("wait {id}: {e:?}"));
    let deleted = client.delete(ctx(), &api::DeleteRequest { id: id.into(), ..Default::default() }).unwrap_or_else(|e| panic!("delete {id}: {e:?}"));
    assert_eq!(deleted.exit_status, waited.exit_status);
    (waited.exit_status, std::fs::read_to_string(&stdout).unwrap_or_default())
}

#[test]
fn the_shim_started_as_containerd_2_3_starts_it_runs_wasm_and_native_containers() {
    let c = Containerd::start();
    let base = c.dir.path().join("bundles");
    let wasm = bundle(&base.join("w1"), &["/hello.wasm", "from-2.3"]);
    std::fs::copy(berth_tests::guests::ARGS_ENV_P1, wasm.join("rootfs/hello.wasm")).unwrap();
    let native = bundle(&base.join("n1"), &["/bin/sh", "-c", "echo native-from-2.3"]);
    berth_tests::busybox::rootfs(&native.join("rootfs"));

    let out = start_as_2_3(&c, &wasm, "w1", &params(&c, "w1").write_to_bytes().unwrap());
    assert!(out.status.success(), "start: {}", text(&out));
    // The reply is a BootstrapResult, with the socket in the directory the
    // message named.
    let reply = BootstrapResult::parse_from_bytes(&out.stdout).unwrap_or_else(|e| panic!("the reply is no BootstrapResult ({e}): {}", text(&out)));
    assert_eq!((reply.version, reply.protocol.as_str()), (3, "ttrpc"), "{reply:?}");
    let socket_dir = c.dir.path().join("s");
    let path = reply.address.strip_prefix("unix://").unwrap_or(&reply.address);
    assert_eq!(Path::new(path).parent(), Some(socket_dir.as_path()), "{reply:?}");
    assert_eq!(std::fs::read_to_string(wasm.join("address")).unwrap(), reply.address);

    let client = TaskClient::new(Client::connect(&reply.address).unwrap());
    let (status, stdout) = run(&client, "w1", &wasm);
    assert_eq!(status, 0, "{stdout}");
    assert!(stdout.contains("from-2.3"), "the guest's stdout: {stdout:?}");

    // A container of no pod has a shim of its own: the native one gets
    // another, started the same way.
    let out = start_as_2_3(&c, &native, "n1", &params(&c, "n1").write_to_bytes().unwrap());
    assert!(out.status.success(), "start: {}", text(&out));
    let reply2 = BootstrapResult::parse_from_bytes(&out.stdout).unwrap();
    assert_ne!(reply2.address, reply.address);
    let client2 = TaskClient::new(Client::connect(&reply2.address).unwrap());
    let (status, stdout) = run(&client2, "n1", &native);
    assert_eq!((status, stdout.trim()), (0, "native-from-2.3"));

    // containerd 2.x asks each shim to shut down after its task's delete:
    // with no container left, both exit and take their sockets along.
    for (client, address) in [(&client, &reply.address), (&client2, &reply2.address)] {
        let _ = client.shutdown(context::with_timeout(10_000_000_000), &api::ShutdownRequest::default());
        let path = Path::new(address.strip_prefix("unix://").unwrap()).to_path_buf();
        wait_for(|| !path.exists(), &format!("{} removed at shutdown", path.display()));
    }
    wait_for(|| c.shim_pids("containerd-shim-berth-v1").is_empty(), "both shims exit after their shutdown");
}

#[test]
fn a_start_message_that_is_wrong_is_named() {
    let c = Containerd::start();
    let dir = bundle(&c.dir.path().join("bundles/b1"), &["/x.wasm"]);
    let whole = params(&c, "b1").write_to_bytes().unwrap();
    let fails = |stdin: &[u8], what: &str, want: &str| {
        let out = start_as_2_3(&c, &dir, "b1", stdin);
        let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && err.contains(want), "{what}: {}", text(&out));
    };
    fails(&whole[..whole.len() - 7], "cut off", "cut off or garbled");
    fails(&[0x0a, 0xff, 0xff, 0xff], "garbled", "cut off or garbled");
    let mut other = params(&c, "b1");
    other.extensions[0].value.mut_or_insert_default().type_url = "containerd.runc.v1.Options".into();
    fails(&other.write_to_bytes().unwrap(), "options of another runtime", "containerd.runc.v1.Options");
    let mut other = params(&c, "b1");
    other.socket_dir = Some("/proc/berth-cannot-make-this".into());
    fails(&other.write_to_bytes().unwrap(), "a socket dir that cannot be made", "/proc/berth-cannot-make-this");
    assert!(c.shim_pids("containerd-shim-berth-v1").is_empty(), "a failed start left a shim");
}

/// Polls `done` for up to 10 s.
fn wait_for(done: impl Fn() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not within 10 s: {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
