//! The manifests of `deploy/kubernetes`, run through CRI as kubelet runs
//! them: the RuntimeClass's handler, the Deployment's pod template's
//! annotations, and each container's image, command, args, env, limits and
//! securityContext become the CRI requests kubelet makes. The readiness
//! probe's port is checked from inside the pod. What the node cannot have
//! here is said where it is replaced.
use crate::node::*;
use berth_tests::guests;
use k8s_cri::v1::*;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Every document of a YAML file of `deploy/kubernetes`.
fn documents(file: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).collect()
}

fn of_kind(docs: &[Value], kind: &str) -> Value {
    docs.iter().find(|d| d["kind"] == kind).cloned().unwrap_or_else(|| panic!("no {kind} in {docs:?}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().expect("a string").to_string()).collect()).unwrap_or_default()
}

/// A Kubernetes memory quantity (`64Mi`, `1G`, `512`) in bytes.
fn bytes(q: &str) -> i64 {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: i64 = n.parse().unwrap_or_else(|_| panic!("memory quantity {q}"));
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => panic!("memory quantity {q}: unit {unit}"),
    }
}

/// A container of the pod template as kubelet puts it in CreateContainer.
fn container_config(c: &Value) -> impl FnOnce(&mut ContainerConfig) + '_ {
    move |cfg| {
        cfg.command = strings(&c["command"]);
        cfg.args = strings(&c["args"]);
        cfg.envs = c["env"].as_array().into_iter().flatten().map(|e| env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap())).collect();
        let linux = cfg.linux.as_mut().unwrap();
        let res = linux.resources.as_mut().unwrap();
        if let Some(m) = c["resources"]["limits"]["memory"].as_str() {
            res.memory_limit_in_bytes = bytes(m);
        }
        if let Some(cpu) = c["resources"]["limits"]["cpu"].as_str() {
            let milli: i64 = cpu.strip_suffix('m').map(|m| m.parse().unwrap()).unwrap_or_else(|| cpu.parse::<i64>().unwrap() * 1000);
            (res.cpu_period, res.cpu_quota, res.cpu_shares) = (100_000, milli * 100, milli * 1024 / 1000);
        }
        let sc = linux.security_context.as_mut().unwrap();
        sc.readonly_rootfs = c["securityContext"]["readOnlyRootFilesystem"].as_bool().unwrap_or(false);
        sc.run_as_user = c["securityContext"]["runAsUser"].as_i64().map(|value| Int64Value { value });
    }
}

#[test]
fn the_kubernetes_manifests_run_as_kubelet_runs_them() {
    let class = of_kind(&documents("runtimeclass.yaml"), "RuntimeClass");
    let deployment = of_kind(&documents("hello-http.yaml"), "Deployment");
    let template = &deployment["spec"]["template"];
    assert_eq!(template["spec"]["runtimeClassName"], class["metadata"]["name"], "the Deployment names another RuntimeClass");
    let handler = class["handler"].as_str().unwrap();
    let containers = template["spec"]["containers"].as_array().unwrap();
    let named = |n: &str| containers.iter().find(|c| c["name"] == n).unwrap_or_else(|| panic!("no container {n}"));
    let (app, cache) = (named("app"), named("cache"));
    // The component's image under the name the manifest gives it, as the
    // manifest's comment says to import it (imagePullPolicy IfNotPresent).
    let image = app["image"].as_str().unwrap();
    let node = Node::start(&[(guests::HTTP_HELLO_P2, image)]);
    let pod = node
        .try_run_pod_with(handler, deployment["metadata"]["name"].as_str().unwrap(), |p| {
            p.labels = serde_json::from_value(template["metadata"]["labels"].clone()).unwrap();
            p.annotations = serde_json::from_value(template["metadata"]["annotations"].clone()).unwrap();
        })
        .unwrap_or_else(|e| panic!("RunPodSandbox with handler {handler}: {e}\ncontainerd's log:\n{}", node.c.log()));
    let web = node.run(&pod, "app", image, container_config(app));
    // The sidecar: the node has no registry to pull redis from, so busybox
    // stands in for it, with the manifest's args given to a shell that
    // prints them and stays (a native container beside the wasm one).
    let side = node.run(&pod, "cache", BUSYBOX, |c| {
        container_config(cache)(c);
        c.command = vec!["/bin/sh".into(), "-c".into(), "echo \"$@\"; exec sleep 1000".into(), "redis".into()];
    });
    node.wait_running(&side);
    // The readiness probe's port answers, in the pod (kubelet would probe
    // the pod's address; the test stays inside the pod's namespace).
    let port = app["readinessProbe"]["tcpSocket"]["port"].as_u64().unwrap() as u16;
    assert_eq!(app["ports"][0]["containerPort"].as_u64(), Some(port as u64), "the probe checks another port than the one declared");
    let ns = node.netns(&pod);
    wait_serving(&ns, port);
    assert_eq!(get_in(&ns, port, "/").unwrap(), (200, "hello from berth: GET /\n".into()));
    assert!(stdout_lines(&node.log(&pod, "cache")).iter().any(|l| l.contains("--bind 127.0.0.1 --port 6379")), "{}", node.log(&pod, "cache"));
    // One shim serves the whole pod.
    assert_eq!(node.shims().len(), 1);
    let status = node.status(&web);
    assert_eq!(status.state, ContainerState::ContainerRunning as i32, "{status:?}");
    // kubectl delete: the pod stops within its grace period and leaves nothing.
    node.stop_container(&web, 30);
    assert_eq!(node.wait_exited(&web).exit_code, 0, "the component did not drain on SIGTERM");
    node.assert_no_zombies();
    node.remove_pod(&pod, Duration::from_secs(30));
    node.wait_clean();
}
