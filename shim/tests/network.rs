//! End to end through `ctr --runtime io.containerd.berth.v1` against a
//! private containerd (see `common::ctr`). Sockets: wasi:http components
//! served from containers (and drained on SIGTERM), and a pod's network
//! namespace as the one where guests listen and connect.
mod common;

use berth_tests::guests;
use common::ctr::*;
use common::*;
use std::time::Duration;

#[test]
fn http_components_are_served_from_containers_and_drain_on_sigterm() {
    let env = Env::new(&[(guests::HTTP_HELLO_P2, "example.com/hello-http:1")]);
    let port = free_port();
    let addr = format!("BERTH_HTTP_ADDR=127.0.0.1:{port}");
    let child = env.spawn_run(&["--rm", "--runtime", RUNTIME, "--env", &addr, "example.com/hello-http:1", "web1"]);
    env.wait_status("web1", "RUNNING");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    assert_eq!(curl(&url("/hi")), ("200".into(), "hello from berth: GET /hi\n".into()));
    assert_eq!(curl(&url("/log")).0, "200");
    // A trap answers 500 and the container keeps serving.
    assert_eq!(curl(&url("/trap")).0, "500");
    assert_eq!(curl(&url("/after-trap")).0, "200");
    // SIGTERM (ctr's default) while a slow request runs: it finishes, the
    // container exits 0 and stops listening.
    let slow_url = url("/slow");
    let slow = std::thread::spawn(move || curl(&slow_url));
    std::thread::sleep(Duration::from_millis(300));
    // The requests' instances are the container's stats: the one in flight
    // holds memory, and the requests so far used CPU.
    let (cpu, mem, out) = metrics(&env, "web1");
    assert!(cpu > 0 && mem >= 65536, "an instance is in flight and requests ran:\n{out}");
    let o = env.ctr(&["task", "kill", "web1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(slow.join().unwrap(), ("200".into(), "hello from berth: GET /slow\n".into()));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The handlers' stdout and stderr are the container's.
    assert!(String::from_utf8_lossy(&o.stdout).contains("stdout of request"), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stderr of request"), "{}", text(&o));
    assert_eq!(curl(&url("/late")).0, "000");

    // The address from the berth.dev/http-listen annotation; SIGKILL ends
    // the container at once (137).
    let port2 = free_port();
    let listen = format!("berth.dev/http-listen=127.0.0.1:{port2}");
    let child = env.spawn_run(&[
        "--rm",
        "--runtime",
        RUNTIME,
        "--annotation",
        &listen,
        "--annotation",
        "berth.dev/http-max-body=10",
        "example.com/hello-http:1",
        "web2",
    ]);
    env.wait_status("web2", "RUNNING");
    assert_eq!(curl(&format!("http://127.0.0.1:{port2}/two")).0, "200");
    // berth.dev/http-max-body caps request bodies.
    let post = |len: usize| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port2)).unwrap();
        write!(s, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{}", "b".repeat(len)).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split_whitespace().nth(1).unwrap_or_default().to_string()
    };
    assert_eq!((post(10), post(20)), ("200".to_string(), "413".to_string()));
    // A bad serving annotation fails the create, naming it.
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "--annotation", "berth.dev/http-max-concurrency=0", "example.com/hello-http:1", "web4"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("berth.dev/http-max-concurrency"), "{}", text(&o));
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "web2"]).status.success());
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(137));

    // A taken address fails the create, naming it and the fix.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("BERTH_HTTP_ADDR={}", held.local_addr().unwrap());
    let o = env.ctr(&["run", "--rm", "--runtime", RUNTIME, "--env", &taken, "example.com/hello-http:1", "web3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(&held.local_addr().unwrap().to_string()) && err.contains("BERTH_HTTP_ADDR"), "{}", text(&o));
}

#[test]
fn a_pod_network_namespace_is_where_http_is_served() {
    let env = Env::new(&[(guests::HTTP_HELLO_P2, "example.com/hello-http:1")]);
    let ns = NetNs::new("pod");
    let port = free_port();
    let addr = format!("BERTH_HTTP_ADDR=127.0.0.1:{port}");
    let with_ns = format!("network:{}", ns.path());
    let o = env.ctr(&["run", "-d", "--runtime", RUNTIME, "--with-ns", &with_ns, "--env", &addr, "example.com/hello-http:1", "inpod"]);
    assert!(o.status.success(), "{}", text(&o));
    env.wait_status("inpod", "RUNNING");
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(ns.curl(&url), "200", "served inside the pod's namespace");
    assert_eq!(curl(&url).0, "000", "not served in the host's namespace");
    assert!(env.ctr(&["task", "kill", "inpod"]).status.success());
    env.wait_status("inpod", "STOPPED");
    assert!(env.ctr(&["task", "rm", "inpod"]).status.success());
    assert!(env.ctr(&["container", "rm", "inpod"]).status.success());
}

/// A loopback server on `port` answering every connection with `banner`,
/// in the network namespace at `ns` (else the node's own).
#[test]
fn a_pods_wasm_sockets_live_in_its_network_namespace() {
    let env = Env::new(&[(guests::TCP_CLIENT_P2, "example.com/tcp-client:1"), (guests::WAT_SLEEP, "example.com/sleep:1")]);
    let (pod1, pod2) = (NetNs::new("sock1"), NetNs::new("sock2"));
    // The same port on the node's loopback and on each pod's.
    let port = free_port();
    banner_server(None, port, "node");
    banner_server(Some(&pod1.path()), port, "pod1");
    banner_server(Some(&pod2.path()), port, "pod2");
    // A port where only the node listens.
    let node_only = free_port();
    banner_server(None, node_only, "node");
    // One shim serves both pods (a group kept alive by a sleeping guest).
    assert!(env
        .ctr(&["run", "-d", "--null-io", "--annotation", "berth.dev/group=socks", "--runtime", RUNTIME, "example.com/sleep:1", "keeper"])
        .status
        .success());
    env.wait_status("keeper", "RUNNING");
    let connect = |id: &str, ns: Option<&NetNs>, port: u16| {
        let grant = format!("berth.dev/net-connect=127.0.0.1/32:{port}");
        let target = format!("127.0.0.1:{port}");
        let with_ns = ns.map(|n| format!("network:{}", n.path()));
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME, "--annotation", "berth.dev/group=socks", "--annotation", &grant];
        if let Some(w) = &with_ns {
            args.extend(["--with-ns", w]);
        }
        args.extend(["example.com/tcp-client:1", id, "/tcp-client.wasm", &target]);
        let o = env.ctr(&args);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(connect("c1", Some(&pod1), port), "reply=pod1", "a guest of pod 1 reached another loopback");
    assert_eq!(connect("c2", Some(&pod2), port), "reply=pod2", "a guest of pod 2 reached another loopback");
    assert_eq!(connect("c3", None, port), "reply=node", "without a namespace, the shim's own is used");
    let out = connect("c4", Some(&pod1), node_only);
    assert!(out.starts_with("connect-error"), "a pod's guest reached a server on the node's loopback: {out}");
    assert_eq!(env.shims().len(), 1, "one shim served both pods");
    assert!(env.ctr(&["task", "kill", "-s", "SIGKILL", "keeper"]).status.success());
    env.wait_status("keeper", "STOPPED");
    assert!(env.ctr(&["task", "rm", "keeper"]).status.success());
}
