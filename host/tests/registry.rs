//! `berth image pull/push/tag/login` and `berth run REF` against a real
//! registry: Debian's docker-registry (the CNCF distribution registry),
//! started by each test on 127.0.0.1 with a temp config and storage, over
//! plain HTTP or over TLS (a CA the test makes) with htpasswd auth. The
//! interop tests push and pull with containerd's `ctr` against the same
//! registry and run the images through berth's shim.
mod common;
use berth_tests::{guests, oci};
use common::fake_registry::{artifact, artifact_registry, http, tiny_server, Artifact};
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

/// How a registry the tests start authenticates its clients.
enum Auth<'a> {
    None,
    /// Basic auth against an htpasswd file with this user.
    Htpasswd(&'a str, &'a str),
    /// Bearer tokens from a token service at `realm`, signed by the key of
    /// `cert`, as Docker Hub and most hosted registries do.
    Token {
        realm: String,
        cert: &'a Path,
    },
}

/// How a registry the tests start does TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tls {
    None,
    /// A server certificate signed by a CA of the test's (`ca.pem`).
    CaSigned,
    /// One self-signed certificate, made as Docker's registry docs make it
    /// (`openssl req -x509 ... -addext subjectAltName`): its own CA.
    SelfSigned,
}

impl Registry {
    /// A plain-HTTP registry without auth.
    fn plain() -> Registry {
        Self::start(Tls::None, Auth::None)
    }

    /// A TLS registry (a CA of the test's) with htpasswd user `user`.
    fn tls_with_user(user: &str, password: &str) -> Registry {
        Self::start(Tls::CaSigned, Auth::Htpasswd(user, password))
    }

    fn start(kind: Tls, auth: Auth) -> Registry {
        let tls = kind != Tls::None;
        let bin = need("docker-registry", "docker-registry");
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let mut config = format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n", d.display());
        let o = |args: &[&str]| sh(Command::new(need("openssl", "openssl")).current_dir(d).args(args));
        if kind == Tls::SelfSigned {
            o(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-keyout",
                "server.key",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName = IP:127.0.0.1",
            ]);
            std::fs::copy(d.join("server.pem"), d.join("ca.pem")).unwrap();
            config += &format!("  tls:\n    certificate: {0}/server.pem\n    key: {0}/server.key\n", d.display());
        }
        if kind == Tls::CaSigned {
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
        match auth {
            Auth::None => {}
            Auth::Htpasswd(u, p) => {
                let o = Command::new(need("htpasswd", "apache2-utils")).args(["-Bbn", u, p]).output().unwrap();
                assert!(o.status.success());
                std::fs::write(d.join("htpasswd"), o.stdout).unwrap();
                config += &format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}/htpasswd\n", d.display());
            }
            Auth::Token { realm, cert } => {
                config += &format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: berth-test\n    issuer: berth-test-issuer\n    rootcertbundle: {}\n",
                    cert.display()
                );
            }
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

/// `berth image login` to `reg` as alice, the password on stdin.
fn login_alice(b: &Berth, reg: &Registry, password: &str) -> Out {
    let mut c = b.cmd();
    c.args(["image", "login", &reg.addr, "-u", "alice", "--password-stdin"])
        .args(reg.flags())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    Out::from(child.wait_with_output().unwrap())
}

fn run(b: &Berth, args: &[&str], extra: &[String]) -> Out {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    b.run(&all)
}

/// Puts an image index, its manifests and their blobs into a plain-HTTP
/// registry through the distribution API, as another tool (buildx, oras)
/// would push them: blobs by POST then PUT, manifests by digest, the index
/// under `tag`.
fn upload_index(reg: &Registry, repo: &str, tag: &str, a: &oci::Archive, manifests: &[serde_json::Value]) {
    let base = format!("http://{}/v2/{repo}", reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let put = |url: &str, content_type: &str, bytes: &[u8]| {
        let file = tmp.path().join("body");
        std::fs::write(&file, bytes).unwrap();
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-f", "-X", "PUT", "-H", &format!("Content-Type: {content_type}"), "--data-binary"]).arg(format!("@{}", file.display())).arg(url);
        sh(&mut cmd);
    };
    for (path, bytes) in &a.files {
        let Some(hex) = path.strip_prefix("blobs/sha256/") else { continue };
        let o = Command::new("curl").args(["-sS", "-f", "-D", "-", "-o", "/dev/null", "-X", "POST"]).arg(format!("{base}/blobs/uploads/")).output().unwrap();
        let head = String::from_utf8_lossy(&o.stdout);
        let loc = head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.trim().to_string()));
        let loc = loc.unwrap_or_else(|| panic!("the registry gave no upload location: {head}"));
        let url = if loc.starts_with("http") { loc } else { format!("http://{}{loc}", reg.addr) };
        let sep = if url.contains('?') { '&' } else { '?' };
        put(&format!("{url}{sep}digest=sha256:{hex}"), "application/octet-stream", bytes);
    }
    for m in manifests {
        let digest = m["digest"].as_str().unwrap();
        let bytes = &a.files.iter().find(|(p, _)| p.ends_with(digest.trim_start_matches("sha256:"))).unwrap().1;
        put(&format!("{base}/manifests/{digest}"), m["mediaType"].as_str().unwrap(), bytes);
    }
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests });
    put(&format!("{base}/manifests/{tag}"), "application/vnd.oci.image.index.v1+json", index.to_string().as_bytes());
}

#[test]
fn a_multi_platform_index_is_pulled_for_the_right_platform_with_every_layer() {
    let reg = Registry::plain();
    let f = reg.flags();
    let mut a = oci::Archive::default();
    let wasm = std::fs::read(guests::HELLO_P1).unwrap();
    let native = a.image("linux", "amd64", &["/bin/true"], &[oci::file_layer("bin/true", b"\x7fELF", 0o755)]);
    // The wasm image in three layers, pulled several at a time.
    let layers =
        [oci::file_layer("app.wasm", &wasm, 0o755), oci::file_layer("data/a.txt", b"layer two", 0o644), oci::file_layer("data/b.txt", b"layer three", 0o644)];
    let guest = a.image("wasi", "wasm", &["/app.wasm"], &layers);
    let arm = a.image("linux", "arm64", &["/bin/true"], &[oci::file_layer("bin/true", b"\x7fELF\x02", 0o755)]);
    upload_index(&reg, "team/multi", "1", &a, &[native, guest, arm]);
    let name = format!("{}/team/multi:1", reg.addr);

    let edge = Berth::new();
    let o = run(&edge, &["image", "pull", &name], &f);
    o.expect_code(0);
    assert!(o.stdout.contains("wasi/wasm"), "{}", o.stdout);
    let o = edge.run(&["run", &name]);
    o.expect_code(0);
    assert!(o.stdout.contains("hello from a berth guest"), "{}", o.stdout);
    // Every layer landed: the rootfs holds the files of layers two and three.
    let rootfs = std::fs::read_dir(edge.root.path().join("rootfs"))
        .unwrap()
        .flatten()
        .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .expect("an unpacked rootfs");
    assert_eq!(std::fs::read_to_string(rootfs.path().join("data/a.txt")).unwrap(), "layer two");
    assert_eq!(std::fs::read_to_string(rootfs.path().join("data/b.txt")).unwrap(), "layer three");

    let other = Berth::new();
    let o = run(&other, &["image", "pull", "--platform", "linux/arm64", &name], &f);
    o.expect_code(0);
    assert!(o.stdout.contains("linux/arm64"), "{}", o.stdout);
    run(&other, &["image", "pull", "--platform", "linux/s390x", &name], &f).expect_berth_error(&["linux/s390x", "wasi/wasm", "linux/amd64"]);
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
        // The tag moves to another guest: --pull missing keeps what is
        // stored, --pull always fetches what the tag names now.
        let mut rebuild = vec!["image", "build", guests::HELLO_P2, "-t", &name];
        if artifact {
            rebuild.push("--artifact");
        }
        pusher.run(&rebuild).expect_code(0);
        run(&pusher, &["image", "push", &name], &f).expect_code(0);
        let o = run(&edge, &["run", "--pull", "missing"], &f.iter().cloned().chain([name.clone()]).collect::<Vec<_>>());
        assert!(o.stdout.contains("(p1 module)"), "--pull missing fetched again: {}\n{}", o.stdout, o.stderr);
        let o = run(&edge, &["run", "--pull", "always"], &f.iter().cloned().chain([name.clone()]).collect::<Vec<_>>());
        assert!(o.stdout.contains("(p2 component)"), "--pull always ran the stored image: {}\n{}", o.stdout, o.stderr);
    }
    // `tag` names the image for another repository, which push fills and a
    // pull from it finds whole.
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
    let login = |b: &Berth, password: &str| login_alice(b, &reg, password);
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
    // A credential helper the Docker config names (credHelpers) is asked
    // for this registry: `docker-credential-NAME get`, the registry on stdin.
    let helpers = tempfile::tempdir().unwrap();
    let asked = helpers.path().join("asked");
    let helper = helpers.path().join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat > '{}'\necho '{{\"Username\":\"alice\",\"Secret\":\"s3cret\"}}'\n", asked.display()),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let with_helper = tempfile::tempdir().unwrap();
    std::fs::write(with_helper.path().join("config.json"), format!("{{\"credHelpers\": {{\"{}\": \"berthtest\"}}}}", reg.addr)).unwrap();
    let path = format!("{}:{}", helpers.path().display(), std::env::var("PATH").unwrap_or_default());
    let third = Berth::new();
    third.run_env(&["image", "pull", &name, "--ca-file", &ca], &[("DOCKER_CONFIG", with_helper.path().to_str().unwrap()), ("PATH", &path)]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&asked).unwrap().trim(), reg.addr, "the helper was not asked for this registry");
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
    // A plain-HTTP registry on this machine pulled without --plain-http:
    // the TLS handshake meets HTTP, and the error says what to add.
    edge.run(&["image", "pull", &name]).expect_berth_error(&[&reg.addr, "TLS handshake", "add --plain-http"]);
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

/// A TCP proxy on loopback in front of `upstream` that cuts the first
/// response to a GET of blob `digest` after `cut` bytes (a dropped
/// download) and records every request head it forwards.
fn cutting_proxy(upstream: String, digest: String, cut: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let armed = Arc::new(AtomicBool::new(true));
    let h = heads.clone();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
            let (h, armed, digest) = (h.clone(), armed.clone(), digest.clone());
            // Set when this connection's last request was the blob's first GET.
            let cutting = Arc::new(AtomicBool::new(false));
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let c2 = cutting.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if text.starts_with("GET ")
                        || text.starts_with("HEAD ")
                        || text.starts_with("PUT ")
                        || text.starts_with("POST ")
                        || text.starts_with("PATCH ")
                    {
                        let head = text.split("\r\n\r\n").next().unwrap_or("").to_lowercase();
                        if head.starts_with("get ") && head.contains(&format!("/blobs/{digest}")) && armed.swap(false, Ordering::SeqCst) {
                            c2.store(true, Ordering::SeqCst);
                        }
                        h.lock().unwrap().push(head);
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let mut sent = 0usize;
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let n = if cutting.load(Ordering::SeqCst) { n.min(cut.saturating_sub(sent)) } else { n };
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    if cutting.load(Ordering::SeqCst) && sent >= cut {
                        // The connection drops mid-body.
                        let _ = c_out.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[test]
fn a_dropped_layer_download_is_resumed_where_it_stopped() {
    let reg = Registry::plain();
    let b = Berth::new();
    // A layer big enough to be cut in the middle: the module plus a 2 MiB
    // custom section of incompressible bytes.
    let dir = tempfile::tempdir().unwrap();
    let mut module = std::fs::read(guests::HELLO_P1).unwrap();
    let payload = common::noise(2 << 20);
    let name = b"pad";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    module.push(0);
    let mut len = section.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        module.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    module.extend_from_slice(&section);
    let path = dir.path().join("big.wasm");
    std::fs::write(&path, &module).unwrap();
    let image = format!("{}/big:1", reg.addr);
    b.run(&["image", "build", path.to_str().unwrap(), "-t", &image, "--artifact"]).expect_code(0);
    b.run(&["image", "push", &image, "--plain-http"]).expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&b.run(&["image", "inspect", &image]).stdout).unwrap();
    let layer = v["manifest"]["layers"][0]["digest"].as_str().unwrap().to_string();
    // Through the proxy, the layer's first download stops after 1 MiB.
    let (proxy, heads) = cutting_proxy(reg.addr.clone(), layer.clone(), 1 << 20);
    let via = format!("{proxy}/big:1");
    let edge = Berth::new();
    let o = edge.run(&["run", "--pull", "missing", "--plain-http", &via]);
    o.expect_code(0);
    assert!(o.stdout.contains("(p1 module)"), "{}\n{}", o.stdout, o.stderr);
    let heads = heads.lock().unwrap().clone();
    let gets: Vec<&String> = heads.iter().filter(|h| h.starts_with("get ") && h.contains(&format!("/blobs/{layer}"))).collect();
    assert_eq!(gets.len(), 2, "one cut download and one resumed: {gets:#?}");
    assert!(gets[1].contains("range: bytes="), "the second download asked for the rest only: {}", gets[1]);
    assert!(!gets[0].contains("range:"), "{}", gets[0]);
}

#[test]
fn a_redirect_to_another_host_gets_no_credentials() {
    let Artifact { manifest, config_d, config, layer, .. } = artifact();
    // Blob storage on another host (127.0.0.2), as a registry's CDN is.
    let (cdn, cdn_heads) = tiny_server("127.0.0.2:0", move |head| {
        let body = if head.contains(&config_d) { config.clone() } else { layer.clone() };
        http("200 OK", &[("content-type", "application/octet-stream")], &body)
    });
    // The registry: basic auth, blobs redirected to the other host.
    let (reg, reg_heads) = tiny_server("127.0.0.1:0", move |head| {
        if !head.contains("authorization: basic ") {
            return http("401 Unauthorized", &[("www-authenticate", "Basic realm=\"berth-test\"")], b"");
        }
        if head.contains("/manifests/") {
            return http("200 OK", &[("content-type", "application/vnd.oci.image.manifest.v1+json")], &manifest);
        }
        let digest = head.split("/blobs/").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("").to_string();
        http("307 Temporary Redirect", &[("location", &format!("http://{cdn}/store/{digest}"))], b"")
    });
    let edge = Berth::new();
    let auth = format!("{{\"auths\": {{\"{reg}\": {{\"auth\": \"YWxpY2U6czNjcmV0\"}}}}}}");
    common::write(&edge.root.path().join("auth/config.json"), auth);
    let o = edge.run(&["image", "pull", &format!("{reg}/app:1"), "--plain-http"]);
    o.expect_code(0);
    let reg_heads = reg_heads.lock().unwrap().clone();
    assert!(reg_heads.iter().any(|h| h.contains("/blobs/") && h.contains("authorization: basic ")), "the registry never got the credentials: {reg_heads:#?}");
    let cdn_heads = cdn_heads.lock().unwrap().clone();
    assert_eq!(cdn_heads.len(), 2, "config and layer from the other host: {cdn_heads:#?}");
    assert!(cdn_heads.iter().all(|h| !h.contains("authorization")), "credentials went to another host: {cdn_heads:#?}");
    let o = edge.run(&["run", "--pull", "never", &format!("{reg}/app:1")]);
    assert!(o.stdout.contains("(p1 module)"), "{}", o.stderr);
}

#[test]
fn a_registry_that_trickles_a_layer_is_cut_off_as_stalled() {
    let a = artifact();
    let layer_d = a.layer_d.clone();
    // Every read of the layer gets a byte within the read timeout, so only
    // its rate shows the stall. Each connection stops by itself after 300.
    let reg = artifact_registry(a, |s, layer| {
        for byte in layer.iter().take(300) {
            std::thread::sleep(Duration::from_millis(200));
            if s.write_all(&[*byte]).is_err() {
                return;
            }
        }
    });
    let edge = Berth::new();
    let t = Instant::now();
    let o = edge.run(&["image", "pull", &format!("{reg}/app:1"), "--plain-http", "--registry-timeout", "1s"]);
    o.expect_berth_error(&["stalled", &layer_d]);
    assert!(t.elapsed() < Duration::from_secs(30), "the stall was not cut off: {:?}", t.elapsed());
    assert_eq!(store_state(&edge), (0, 0));
}

/// Runs `cmd` with its stderr on a terminal (a pty, 80x24) and its stdout
/// discarded; its exit code and everything drawn on the terminal.
fn on_a_terminal(mut cmd: Command) -> (i32, String) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes the two descriptors it opens into the ints; a
    // null name and termios are allowed, and `size` outlives the call.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened here and nothing else owns them.
    let (mut master, slave) = unsafe { (std::fs::File::from_raw_fd(master), std::os::fd::OwnedFd::from_raw_fd(slave)) };
    cmd.stdout(Stdio::null()).stderr(Stdio::from(slave));
    let mut child = cmd.spawn().unwrap();
    // The command holds a copy of the terminal's other end: once it and the
    // child are gone, reading the master ends (EIO).
    drop(cmd);
    let mut drawn = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = master.read(&mut buf) {
        drawn.extend_from_slice(&buf[..n]);
    }
    (child.wait().unwrap().code().unwrap_or(-1), String::from_utf8_lossy(&drawn).into_owned())
}

#[test]
fn a_pull_on_a_terminal_shows_its_progress_unless_quiet() {
    let a = artifact();
    // The bar's name for the layer: the first 12 hex digits of its digest.
    let bar = a.layer_d.trim_start_matches("sha256:")[..12].to_string();
    // The layer comes in two halves, 700 ms apart: a download in progress.
    let reg = artifact_registry(a, |s, layer| {
        let half = layer.len() / 2;
        if s.write_all(&layer[..half]).is_ok() {
            std::thread::sleep(Duration::from_millis(700));
            let _ = s.write_all(&layer[half..]);
        }
    });
    let pull = |b: &Berth, quiet: bool| {
        let mut cmd = b.cmd();
        cmd.args(["image", "pull", &format!("{reg}/app:1"), "--plain-http"]);
        if quiet {
            cmd.arg("--quiet");
        }
        cmd
    };
    let shown = Berth::new();
    let (code, drawn) = on_a_terminal(pull(&shown, false));
    assert_eq!(code, 0, "{drawn}");
    assert!(drawn.contains(&bar) && drawn.contains("B/"), "no progress bar for layer {bar} on the terminal: {drawn:?}");
    let quiet = Berth::new();
    let (code, drawn) = on_a_terminal(pull(&quiet, true));
    assert_eq!(code, 0, "{drawn}");
    assert!(!drawn.contains(&bar), "--quiet drew a progress bar: {drawn:?}");
    // Not on a terminal (a log, a pipe): no bar either.
    let piped = Berth::new();
    let o = Out::from(pull(&piped, false).output().unwrap());
    o.expect_code(0);
    assert!(!o.stderr.contains(&bar), "a progress bar went to a pipe: {}", o.stderr);
    // Each pulled the image whole.
    for b in [&shown, &quiet, &piped] {
        assert!(b.run(&["run", "--pull", "never", &format!("{reg}/app:1")]).stdout.contains("(p1 module)"));
    }
}

/// A token service, as hosted registries have, for user `alice` with
/// password `s3cret`: a GET with her basic credentials gets a JWT (RS256,
/// its certificate in `x5c`) granting pull and push on repository `app`;
/// anything else gets 401. Returns its realm and its certificate's path.
fn token_service(dir: &Path) -> (String, PathBuf) {
    use base64::Engine as _;
    let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let openssl = need("openssl", "openssl");
    sh(Command::new(&openssl).current_dir(dir).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "token.key",
        "-out",
        "token.pem",
        "-days",
        "2",
        "-subj",
        "/CN=berth test tokens",
    ]));
    let der = Command::new(&openssl).current_dir(dir).args(["x509", "-in", "token.pem", "-outform", "DER"]).output().unwrap().stdout;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5c": [base64::engine::general_purpose::STANDARD.encode(&der)] });
    let claims = serde_json::json!({
        "iss": "berth-test-issuer", "sub": "alice", "aud": "berth-test", "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": "berth-test-1",
        "access": [{ "type": "repository", "name": "app", "actions": ["pull", "push"] }],
    });
    let signed = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    std::fs::write(dir.join("signed"), &signed).unwrap();
    let sig = Command::new(&openssl).current_dir(dir).args(["dgst", "-sha256", "-sign", "token.key", "signed"]).output().unwrap();
    assert!(sig.status.success() && !sig.stdout.is_empty(), "signing the token: {}", String::from_utf8_lossy(&sig.stderr));
    let token = format!("{signed}.{}", b64url(&sig.stdout));
    let good = format!("authorization: basic {}", base64::engine::general_purpose::STANDARD.encode("alice:s3cret")).to_lowercase();
    let (addr, _) = tiny_server("127.0.0.1:0", move |head| {
        if head.contains(&good) {
            let body = serde_json::json!({ "token": token, "access_token": token, "expires_in": 3600 }).to_string();
            http("200 OK", &[("content-type", "application/json")], body.as_bytes())
        } else {
            http("401 Unauthorized", &[("www-authenticate", "Basic realm=\"berth-test\"")], b"")
        }
    });
    (format!("http://{addr}/token"), dir.join("token.pem"))
}

#[test]
fn token_auth_as_hosted_registries_do_it() {
    let tokens = tempfile::tempdir().unwrap();
    let (realm, cert) = token_service(tokens.path());
    let reg = Registry::start(Tls::None, Auth::Token { realm, cert: &cert });
    let name = format!("{}/app:1", reg.addr);
    let pusher = Berth::new();
    pusher.run(&["image", "build", guests::HELLO_P1, "-t", &name]).expect_code(0);
    pusher.run(&["image", "push", &name, "--plain-http"]).expect_berth_error(&["app:1", "berth image login"]);
    let login = |b: &Berth, password: &str| login_alice(b, &reg, password);
    login(&pusher, "wrong").expect_berth_error(&["wrong user name or password"]);
    login(&pusher, "s3cret").expect_code(0);
    pusher.run(&["image", "push", &name, "--plain-http"]).expect_code(0);
    let edge = Berth::new();
    edge.run(&["image", "pull", &name, "--plain-http"]).expect_berth_error(&["app:1"]);
    login(&edge, "s3cret").expect_code(0);
    let o = edge.run(&["run", "--pull", "missing", "--plain-http", &name]);
    o.expect_code(0);
    assert!(o.stdout.contains("(p1 module)"), "{}\n{}\n{}", o.stdout, o.stderr, reg.log());
}

/// A fresh certs.d directory with the (empty) directory of registry
/// `addr` in it: the directory to pass as `--certs-dir`, and the host's.
fn certs_d(addr: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join(addr);
    std::fs::create_dir(&host).unwrap();
    (dir, host)
}

#[test]
fn registry_certificates_are_read_where_docker_and_containerd_keep_them() {
    let reg = Registry::start(Tls::CaSigned, Auth::None);
    let b = Berth::new();
    let name = format!("{}/certs/hello:1", reg.addr);
    b.run(&["image", "build", guests::HELLO_P1, "-t", &name]).expect_code(0);
    // Not trusted: one line that names the registry and the fix, and no
    // line of the TLS library's before it.
    let empty = tempfile::tempdir().unwrap();
    let certs = empty.path().to_str().unwrap();
    b.run(&["image", "push", &name, "--certs-dir", certs]).expect_berth_error(&[&reg.addr, "not signed by a CA berth trusts", "--ca-file", "certs.d"]);
    // docker's layout: certs.d/HOST/ca.crt.
    let (docker, host_dir) = certs_d(&reg.addr);
    std::fs::copy(reg.ca(), host_dir.join("ca.crt")).unwrap();
    b.run(&["image", "push", &name, "--certs-dir", docker.path().to_str().unwrap()]).expect_code(0);
    // containerd's: hosts.toml naming the CA, relative to its directory.
    let (ctrd, host_dir) = certs_d(&reg.addr);
    std::fs::copy(reg.ca(), host_dir.join("registry-ca.pem")).unwrap();
    std::fs::write(host_dir.join("hosts.toml"), format!("server = \"https://{0}\"\n[host.\"https://{0}\"]\n  ca = \"registry-ca.pem\"\n", reg.addr)).unwrap();
    let edge = Berth::new();
    let o = edge.run(&["run", "--pull", "missing", "--certs-dir", ctrd.path().to_str().unwrap(), &name]);
    o.expect_code(0);
    assert!(o.stdout.contains("(p1 module)"), "{}", o.stderr);
    // A CA file that holds no certificate is named, not skipped.
    std::fs::write(host_dir.join("registry-ca.pem"), "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n").unwrap();
    Berth::new().run(&["image", "pull", &name, "--certs-dir", ctrd.path().to_str().unwrap()]).expect_berth_error(&["registry-ca.pem", "PEM"]);
}

#[test]
fn a_self_signed_registry_certificate_as_dockers_docs_make_it_gets_a_clear_answer() {
    // The certificate Docker's docs make for a registry is its own CA
    // (basicConstraints CA:TRUE). Go's TLS accepts it as a trusted leaf;
    // rustls' verifier refuses a CA as a server certificate.
    let reg = Registry::start(Tls::SelfSigned, Auth::None);
    let b = Berth::new();
    let name = format!("{}/self/hello:1", reg.addr);
    b.run(&["image", "build", guests::HELLO_P1, "-t", &name]).expect_code(0);
    let o = b.run(&["image", "push", &name, "--ca-file", &reg.ca()]);
    assert!(!o.stderr.contains("  "), "the error reads as one sentence: {}", o.stderr);
    o.expect_berth_error(&[&reg.addr, "CA certificate serving as the registry's own", "basicConstraints", "skip_verify"]);
    // skip_verify in containerd's hosts.toml, as containerd takes it.
    let (ctrd, host_dir) = certs_d(&reg.addr);
    std::fs::write(host_dir.join("hosts.toml"), "skip_verify = true\n").unwrap();
    let o = b.run(&["image", "push", &name, "--certs-dir", ctrd.path().to_str().unwrap()]);
    o.expect_code(0);
    assert!(o.stderr.contains("skip_verify"), "the unchecked certificate is warned of: {}", o.stderr);
}
