//! `berth image pull/push/tag/login` and `berth run REF` against a real
//! registry: Debian's docker-registry (the CNCF distribution registry),
//! started by each test on 127.0.0.1 with a temp config and storage, over
//! plain HTTP or over TLS (a CA the test makes) with htpasswd auth. The
//! interop tests push and pull with containerd's `ctr` against the same
//! registry and run the images through berth's shim.
mod common;
use berth_tests::guests;
use common::{Berth, Out};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Registry {
    dir: tempfile::TempDir,
    child: Child,
    addr: String,
    tls: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn need(bin: &str, package: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("`{bin}` is not installed; the registry tests need Debian's {package} (./test.sh installs it)"))
}

fn sh(cmd: &mut Command) {
    let o = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
}

impl Registry {
    /// A plain-HTTP registry without auth.
    fn plain() -> Registry {
        Self::start(false, None)
    }

    /// A TLS registry (a CA of the test's) with htpasswd user `user`.
    fn tls_with_user(user: &str, password: &str) -> Registry {
        Self::start(true, Some((user, password)))
    }

    fn start(tls: bool, user: Option<(&str, &str)>) -> Registry {
        let bin = need("docker-registry", "docker-registry");
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let mut config = format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n", d.display());
        if tls {
            let o = |args: &[&str]| sh(Command::new(need("openssl", "openssl")).current_dir(d).args(args));
            o(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=berth test CA"]);
            o(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
            std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
            o(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ]);
            config += &format!("  tls:\n    certificate: {0}/server.pem\n    key: {0}/server.key\n", d.display());
        }
        if let Some((u, p)) = user {
            let o = Command::new(need("htpasswd", "apache2-utils")).args(["-Bbn", u, p]).output().unwrap();
            assert!(o.status.success());
            std::fs::write(d.join("htpasswd"), o.stdout).unwrap();
            config += &format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}/htpasswd\n", d.display());
        }
        std::fs::write(d.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new(bin).arg("serve").arg(d.join("config.yml")).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        let r = Registry { dir, child, addr: format!("127.0.0.1:{port}"), tls };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&r.addr).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start: {}", r.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// The registry's stored file of blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// The flags that reach this registry.
    fn flags(&self) -> Vec<String> {
        if self.tls {
            vec!["--ca-file".into(), self.ca()]
        } else {
            vec!["--plain-http".into()]
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Only the registry this test started, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(b: &Berth, args: &[&str], extra: &[String]) -> Out {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    b.run(&all)
}

/// The image store's staging area and blob count, to show nothing was
/// half-stored.
fn store_state(b: &Berth) -> (usize, usize) {
    let images = b.root.path().join("images");
    let count = |p: PathBuf| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    (count(images.join("ingest")), count(images.join("blobs/sha256")))
}

#[test]
fn push_then_pull_and_run_over_plain_http_for_both_image_forms() {
    let reg = Registry::plain();
    let pusher = Berth::new();
    let f = reg.flags();
    for (tag, artifact) in [("hello:1", false), ("hello-artifact:1", true)] {
        let name = format!("{}/team/{tag}", reg.addr);
        let mut build = vec!["image", "build", guests::HELLO_P1, "-t", &name];
        if artifact {
            build.push("--artifact");
        }
        pusher.run(&build).expect_code(0);
        let o = run(&pusher, &["image", "push", &name], &f);
        o.expect_code(0);
        assert!(o.stdout.contains("0 already there"), "{}", o.stdout);
        // A second push finds every blob there (HEAD first) and sends none.
        let o = run(&pusher, &["image", "push", &name], &f);
        assert!(o.stdout.contains("(0 blobs sent"), "{}", o.stdout);
        // Another machine runs it by reference: pulled because missing.
        let edge = Berth::new();
        let o = run(&edge, &["run", "--pull", "missing"], &f.iter().cloned().chain([name.clone()]).collect::<Vec<_>>());
        o.expect_code(0);
        assert!(o.stdout.contains("hello from a berth guest (p1 module)"), "{}\n{}", o.stdout, o.stderr);
        let ls = edge.run(&["image", "ls"]);
        assert!(ls.stdout.contains(&name), "{}", ls.stdout);
        // The registry keeps the form berth built.
        let manifest = String::from_utf8(
            Command::new("curl")
                .args(["-s", "-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
                .arg(format!("http://{}/v2/team/{}/manifests/1", reg.addr, tag.split(':').next().unwrap()))
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&manifest).unwrap_or_else(|e| panic!("{e}: {manifest}"));
        assert_eq!(v["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{v}");
        if artifact {
            assert_eq!(v["artifactType"], "application/vnd.wasm.config.v0+json", "{v}");
            assert_eq!(v["layers"][0]["mediaType"], "application/wasm", "{v}");
        } else {
            assert_eq!(v["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip", "{v}");
        }
        // --pull never refuses to fetch; --pull always fetches again.
        let fresh = Berth::new();
        let o = run(&fresh, &["run", "--pull", "never"], &f.iter().cloned().chain([name.clone()]).collect::<Vec<_>>());
        o.expect_berth_error(&["neither a file nor an image", "berth image pull"]);
        run(&edge, &["run", "--pull", "always"], &f.iter().cloned().chain([name.clone()]).collect::<Vec<_>>()).expect_code(0);
    }
    // `tag` names the image for another repository; push sends no blob twice.
    let src = format!("{}/team/hello:1", reg.addr);
    let dst = format!("{}/other/hello:2", reg.addr);
    pusher.run(&["image", "tag", &src, &dst]).expect_code(0);
    let o = run(&pusher, &["image", "push", &dst], &f);
    o.expect_code(0);
    let edge = Berth::new();
    let o = run(&edge, &["image", "pull", &dst], &f);
    o.expect_code(0);
    assert!(o.stdout.contains("wasi/wasm"), "{}", o.stdout);
}

#[test]
fn tls_basic_auth_login_and_logout() {
    let reg = Registry::tls_with_user("alice", "s3cret");
    let pusher = Berth::new();
    let name = format!("{}/app:1", reg.addr);
    pusher.run(&["image", "build", guests::HELLO_P1, "-t", &name]).expect_code(0);
    let ca = reg.ca();
    // Without credentials: refused, with the fix named.
    let o = pusher.run(&["image", "push", &name, "--ca-file", &ca]);
    o.expect_berth_error(&["wrong user name or password", "berth image login"]);
    // Without the CA: the certificate is refused.
    let o = pusher.run(&["image", "push", &name]);
    assert_eq!(o.code, 125, "{}", o.stderr);
    assert!(o.stderr.to_lowercase().contains("certificate"), "{}", o.stderr);
    let login = |b: &Berth, password: &str| {
        let mut c = b.cmd();
        c.args(["image", "login", &reg.addr, "-u", "alice", "--password-stdin", "--ca-file", &ca])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        Out::from(child.wait_with_output().unwrap())
    };
    let auth_file = pusher.root.path().join("auth/config.json");
    login(&pusher, "wrong").expect_berth_error(&["wrong user name or password"]);
    assert!(!auth_file.exists(), "a failed login wrote credentials");
    login(&pusher, "s3cret").expect_code(0);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&auth_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    pusher.run(&["image", "push", &name, "--ca-file", &ca]).expect_code(0);
    // Another machine: anonymous pulls are refused; after a login it runs.
    let edge = Berth::new();
    edge.run(&["image", "pull", &name, "--ca-file", &ca]).expect_berth_error(&["wrong user name or password"]);
    login(&edge, "s3cret").expect_code(0);
    let o = edge.run(&["run", "--pull", "missing", "--ca-file", &ca, &name]);
    o.expect_code(0);
    assert!(o.stdout.contains("(p1 module)"), "{}", o.stdout);
    // A Docker config.json (DOCKER_CONFIG) is read when berth has none.
    let docker = tempfile::tempdir().unwrap();
    std::fs::copy(&auth_file, docker.path().join("config.json")).unwrap();
    let other = Berth::new();
    other.run_env(&["image", "pull", &name, "--ca-file", &ca], &[("DOCKER_CONFIG", docker.path().to_str().unwrap())]).expect_code(0);
    // Logout forgets them.
    let o = edge.run(&["image", "logout", &reg.addr]);
    o.expect_code(0);
    edge.run(&["image", "pull", &name, "--ca-file", &ca]).expect_berth_error(&["wrong user name or password"]);
}

#[test]
fn bad_registries_and_references_get_clear_errors_and_nothing_half_stored() {
    let reg = Registry::plain();
    let f = reg.flags();
    let b = Berth::new();
    let name = format!("{}/app:1", reg.addr);
    b.run(&["image", "build", guests::HELLO_P1, "-t", &name]).expect_code(0);
    run(&b, &["image", "push", &name], &f).expect_code(0);
    // A tag the registry does not have.
    let edge = Berth::new();
    run(&edge, &["image", "pull", &format!("{}/app:nope", reg.addr)], &f).expect_berth_error(&["app:nope", "not found at the registry"]);
    // A layer changed in the registry's storage: the pull fails on its
    // digest and stores nothing.
    let manifest: serde_json::Value = serde_json::from_str(&b.run(&["image", "inspect", &name]).stdout).unwrap();
    let layer = manifest["manifest"]["layers"][0]["digest"].as_str().unwrap().to_string();
    let file = reg.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    run(&edge, &["image", "pull", &name], &f).expect_berth_error(&[&layer, "tampered"]);
    assert_eq!(store_state(&edge), (0, 0), "a failed pull left blobs behind");
    assert!(!edge.run(&["image", "ls"]).stdout.contains("app"), "a failed pull named an image");
    // Plain HTTP off loopback is refused before any request.
    edge.run(&["image", "pull", "registry.example.invalid/app:1", "--plain-http"]).expect_berth_error(&["not a loopback registry", "--plain-http=force"]);
    // Malformed references name the fix.
    edge.run(&["image", "pull", "UPPER/case:1"]).expect_berth_error(&["not a valid image name"]);
}

/// A registry that answers `/v2/` and then either hangs or serves a huge
/// manifest: a server berth does not control.
fn fake_registry(hang: bool) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                if req.starts_with("GET /v2/ ") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}");
                } else if hang {
                    std::thread::sleep(Duration::from_secs(60));
                } else {
                    let body = format!("{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"annotations\":{{\"pad\":\"{}\"}},\"config\":{{}},\"layers\":[]}}", "x".repeat(5 << 20));
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(body.as_bytes());
                }
            });
        }
    });
    addr
}

#[test]
fn a_hanging_registry_meets_a_deadline_and_a_huge_manifest_the_size_cap() {
    let b = Berth::new();
    let hang = fake_registry(true);
    let t = Instant::now();
    let o = b.run(&["image", "pull", &format!("{hang}/app:1"), "--plain-http", "--registry-timeout", "2s"]);
    o.expect_code(125);
    assert!(o.stderr.contains("app:1") && o.stderr.to_lowercase().contains("timed out"), "{}", o.stderr);
    assert!(t.elapsed() < Duration::from_secs(30), "the deadline did not hold: {:?}", t.elapsed());
    let huge = fake_registry(false);
    b.run(&["image", "pull", &format!("{huge}/app:1"), "--plain-http"]).expect_berth_error(&["over the", "limit for JSON documents"]);
    assert_eq!(store_state(&b), (0, 0));
}

/// containerd (started by the test, berth's shim on its PATH) and the
/// registry, for the interop tests.
fn containerd_with_shim() -> (berth_tests::containerd::Containerd, tempfile::TempDir) {
    let bin = Path::new(env!("CARGO_BIN_EXE_berth")).parent().unwrap().to_path_buf();
    assert!(bin.join("containerd-shim-berth-v1").exists(), "the shim is not built beside berth: run `cargo build --workspace` (./test.sh builds it)");
    let root = tempfile::tempdir().unwrap();
    let c = berth_tests::containerd::Containerd::start_with(&[&bin], &[("BERTH_ROOT", root.path().to_str().unwrap())]);
    (c, root)
}

#[test]
fn containerd_pulls_what_berth_pushes_and_berth_pulls_what_containerd_pushes() {
    let reg = Registry::plain();
    let f = reg.flags();
    let (c, _root) = containerd_with_shim();
    // berth -> registry -> containerd -> berth's shim.
    let b = Berth::new();
    let name = format!("{}/interop/hello:1", reg.addr);
    b.run(&["image", "build", guests::HELLO_P2, "-t", &name]).expect_code(0);
    run(&b, &["image", "push", &name], &f).expect_code(0);
    let o = c.ctr(&["image", "pull", "--plain-http", &name]);
    assert!(o.status.success(), "ctr pull: {}", String::from_utf8_lossy(&o.stderr));
    let o = c.ctr(&["run", "--rm", "--runtime", "io.containerd.berth.v1", &name, "interop1"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("(p2 component)"), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // containerd -> registry -> berth.
    let archive = c.dir.path().join("from-ctr.tar");
    b.run(&["image", "build", guests::HELLO_P1, "-t", "example.com/from-ctr:1", "-o", archive.to_str().unwrap()]).expect_code(0);
    let o = c.ctr(&["image", "import", "--platform", "wasi/wasm", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let remote = format!("{}/interop/from-ctr:1", reg.addr);
    let o = c.ctr(&["image", "push", "--plain-http", "--platform", "wasi/wasm", &remote, "example.com/from-ctr:1"]);
    assert!(o.status.success(), "ctr push: {}", String::from_utf8_lossy(&o.stderr));
    let edge = Berth::new();
    let o = run(&edge, &["run", "--pull", "missing"], &f.iter().cloned().chain([remote]).collect::<Vec<_>>());
    o.expect_code(0);
    assert!(o.stdout.contains("(p1 module)"), "{}\n{}", o.stdout, o.stderr);
}
