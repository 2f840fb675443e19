//! `containerd-shim-berth-v1 -info`, as containerd 2.x calls it: a
//! RuntimeInfo message on stdout naming the runtime, its version and its
//! OCI features.
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::introspection::RuntimeInfo;
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn info_answers_with_a_runtime_info_message() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_containerd-shim-berth-v1"))
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // containerd writes the runtime's options (an Any) and closes stdin.
    child.stdin.take().unwrap().write_all(b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).expect("a RuntimeInfo message");
    assert_eq!(info.name, "io.containerd.berth.v1");
    assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.features.type_url, "types.containerd.io/opencontainers/runtime-spec/1/features/Features");
    let f: serde_json::Value = serde_json::from_slice(&info.features.value).expect("OCI features JSON");
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(f["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n == "network"), "{f}");
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);
    // containerd's CRI reports recursive read-only mounts for a handler
    // whose runtime lists `rro`.
    let options: Vec<&str> = f["mountOptions"].as_array().expect("mountOptions").iter().filter_map(|o| o.as_str()).collect();
    assert!(options.contains(&"rro") && options.contains(&"ro") && options.contains(&"rbind"), "{options:?}");
}
