//! `berth image build/import/ls/inspect/rm` and `berth run IMAGE`, end to
//! end through the `berth` binary, plus the compat archive imported into a
//! real containerd.
mod common;
use berth_tests::oci::{self, Archive};
use common::{guests, Berth};
use std::path::Path;

fn build(b: &Berth, module: &str, name: &str, extra: &[&str], out: &Path) -> String {
    let mut args = vec!["image", "build", module, "-t", name, "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = b.run(&args);
    o.expect_code(0);
    o.stdout.split_whitespace().nth(1).expect("digest printed").to_string()
}

fn import(b: &Berth, path: &Path, extra: &[&str]) -> common::Out {
    let mut args = vec!["image", "import", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    b.run(&args)
}

#[test]
fn built_images_run_in_both_forms() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    for (module, want) in [(guests::HELLO_P1, "(p1 module)"), (guests::HELLO_P2, "(p2 component)")] {
        for artifact in [false, true] {
            let name = format!("example.com/hello-{}:{}", if artifact { "art" } else { "compat" }, if module == guests::HELLO_P1 { "p1" } else { "p2" });
            let out = dir.path().join("img.tar");
            build(&b, module, &name, if artifact { &["--artifact"] } else { &[] }, &out);
            import(&b, &out, &[]).expect_code(0);
            let o = b.run(&["run", &name]);
            o.expect_code(0);
            assert!(o.stdout.contains(want), "{name}: {}", o.stdout);
        }
    }
    // Without -o the image goes straight into the store; args reach the guest.
    let o = b.run(&["image", "build", guests::ARGS_ENV_P1, "-t", "args:1"]);
    o.expect_code(0);
    let o = b.run(&["run", "-e", "GREETING=hi", "args:1", "one", "two words", "--exit", "9"]);
    o.expect_code(9);
    assert!(o.stdout.contains("two words") && o.stdout.contains("GREETING=hi"), "{}", o.stdout);
}

#[test]
fn builds_are_reproducible() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let static_dir = dir.path().join("static");
    common::write(&static_dir.join("index.html"), "<h1>hi</h1>");
    for extra in [&[][..], &["--artifact"][..], &["--add", &format!("{}:/static", static_dir.display())][..]] {
        let (a, c) = (dir.path().join("a.tar"), dir.path().join("c.tar"));
        let d1 = build(&b, guests::HELLO_P2, "example.com/r:1", extra, &a);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let d2 = build(&b, guests::HELLO_P2, "example.com/r:1", extra, &c);
        assert_eq!(d1, d2, "{extra:?}");
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap(), "archives differ for {extra:?}");
        let d3 = build(&b, guests::HELLO_P1, "example.com/r:1", extra.get(..1).filter(|e| e == &["--artifact"]).unwrap_or(&[]), &c);
        assert_ne!(d1, d3);
    }
}

#[test]
fn added_files_are_readable_and_the_rootfs_is_read_only() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    common::write(&dir.path().join("static/a.txt"), "static file");
    let add = format!("{}:/static", dir.path().join("static").display());
    b.run(&["image", "build", guests::FILE_TOOL_P1, "-t", "site:1", "--add", &add]).expect_code(0);
    let o = b.run(&["run", "site:1", "read", "/static/a.txt"]);
    o.expect_code(0);
    assert_eq!(o.stdout.trim(), "static file");
    let o = b.run(&["run", "site:1", "write", "/static/a.txt", "changed"]);
    assert_ne!(o.code, 0, "the image's rootfs must be read-only: {o:?}");
    let o = b.run(&["run", "site:1", "read", "/static/a.txt"]);
    assert_eq!(o.stdout.trim(), "static file");
    // --dir grants a writable directory on top of the image.
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    b.run(&["run", "--dir", &format!("{}:/work", work.display()), "site:1", "write", "/work/out.txt", "made"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(work.join("out.txt")).unwrap(), "made");
}

#[test]
fn native_images_build_from_a_rootfs() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    common::write(&root.join("bin/tool"), b"\x7fELF\x02\x01\x01 not really");
    std::os::unix::fs::symlink("tool", root.join("bin/alias")).unwrap();
    let root_s = root.to_str().unwrap();
    b.run(&["image", "build", "--rootfs", root_s, "--entrypoint", "/bin/tool", "--entrypoint", "-v", "-t", "example.com/native:1"]).expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&b.run(&["image", "inspect", "example.com/native:1"]).stdout).unwrap();
    assert_eq!(v["config"]["os"], "linux");
    assert_eq!(v["config"]["config"]["Entrypoint"], serde_json::json!(["/bin/tool", "-v"]));
    // berth runs wasm only (native entrypoints come with the native runtime): a clear error.
    b.run(&["run", "example.com/native:1"]).expect_berth_error(&["/bin/tool", "native ELF executable"]);
    b.run(&["image", "build", "--rootfs", root_s, "-t", "x:1"]).expect_berth_error(&["--entrypoint"]);
    b.run(&["image", "build", "-t", "x:1"]).expect_code(125);
}

#[test]
fn ls_inspect_and_rm() {
    let b = Berth::new();
    b.run(&["image", "build", guests::HELLO_P1, "-t", "example.com/one:1"]).expect_code(0);
    b.run(&["image", "build", guests::HELLO_P2, "-t", "two", "--artifact"]).expect_code(0);
    let o = b.run(&["image", "ls"]);
    o.expect_code(0);
    assert!(o.stdout.contains("example.com/one:1") && o.stdout.contains("wasi/wasm"), "{}", o.stdout);
    assert!(o.stdout.contains("docker.io/library/two:latest") && o.stdout.contains("wasip2/wasm"), "{}", o.stdout);
    let o = b.run(&["image", "inspect", "example.com/one:1"]);
    o.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["config"]["config"]["Labels"]["berth.dev/wasi"], "p1");
    assert_eq!(v["config"]["os"], "wasi");
    let v: serde_json::Value = serde_json::from_str(&b.run(&["image", "inspect", "two"]).stdout).unwrap();
    assert!(v["config"]["component"]["exports"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().starts_with("wasi:cli/run@")), "{v}");
    b.run(&["run", "example.com/one:1"]).expect_code(0);
    // By digest prefix.
    let digest = v["digest"].as_str().unwrap().trim_start_matches("sha256:")[..16].to_string();
    b.run(&["run", &digest]).expect_code(0);
    b.run(&["image", "rm", "example.com/one:1", "two"]).expect_code(0);
    let blobs = std::fs::read_dir(b.root.path().join("images/blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "rm left blobs behind");
    let rootfs = std::fs::read_dir(b.root.path().join("images/../rootfs")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(rootfs, 0, "rm left an unpacked rootfs behind");
    b.run(&["run", "example.com/one:1"]).expect_berth_error(&["example.com/one:1", "image ls"]);
    b.run(&["image", "rm", "example.com/one:1"]).expect_berth_error(&["no image named", "image ls"]);
}

fn hello_archive(os: &str) -> (Archive, serde_json::Value) {
    let mut a = Archive::default();
    let wasm = std::fs::read(guests::HELLO_P1).unwrap();
    let d = a.image(os, "wasm", &["/app.wasm"], &[oci::file_layer("app.wasm", &wasm, 0o755)]);
    (a, d)
}

fn write_archive(dir: &Path, name: &str, a: &Archive) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, a.tar()).unwrap();
    p
}

#[test]
fn platforms_are_chosen_from_multi_platform_indexes() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut a, wasm) = hello_archive("wasi");
    let native = a.image("linux", "amd64", &["/bin/true"], &[oci::file_layer("bin/true", b"\x7fELF", 0o755)]);
    let arm = a.image("linux", "arm64", &["/bin/true"], &[oci::file_layer("bin/true", b"\x7fELF\x02", 0o755)]);
    a.index(&[(Some("example.com/multi:1"), native), (Some("example.com/multi:1"), wasm), (Some("example.com/multi:1"), arm)]);
    let p = write_archive(dir.path(), "multi.tar", &a);
    let o = import(&b, &p, &[]);
    o.expect_code(0);
    assert!(o.stdout.contains("wasi/wasm"), "{}", o.stdout);
    assert!(b.run(&["run", "example.com/multi:1"]).stdout.contains("hello from a berth guest"));
    let o = import(&b, &p, &["--platform", "linux/arm64", "--name", "example.com/arm:1"]);
    o.expect_code(0);
    assert!(o.stdout.contains("example.com/arm:1") && o.stdout.contains("linux/arm64"), "{}", o.stdout);
    import(&b, &p, &["--platform", "linux/s390x"]).expect_berth_error(&["linux/s390x", "wasi/wasm", "linux/amd64", "--platform"]);
    import(&b, &p, &["--platform", "nonsense"]).expect_berth_error(&["nonsense", "OS/ARCH"]);
}

#[test]
fn single_platform_exports_of_multi_platform_images_import() {
    // As `ctr image export` writes them: a nested index naming every
    // platform, the content of one; and a layout directory, not a tarball.
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut a, wasm) = hello_archive("wasi");
    let absent = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": oci::digest(b"not in the archive"),
        "size": 18,
        "platform": { "os": "linux", "architecture": "arm64" },
    });
    let nested = serde_json::json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [absent, wasm] });
    let idx = a.blob("application/vnd.oci.image.index.v1+json", nested.to_string().as_bytes());
    a.index(&[(Some("example.com/exported:1"), idx)]);
    let layout = dir.path().join("layout");
    for (p, bytes) in &a.files {
        common::write(&layout.join(p), bytes);
    }
    import(&b, &layout, &[]).expect_code(0);
    assert!(b.run(&["run", "example.com/exported:1"]).stdout.contains("hello from a berth guest"));
    // Asking for the platform whose content is missing names it.
    import(&b, &layout, &["--platform", "linux/arm64"]).expect_berth_error(&["linux/arm64"]);
}

#[test]
fn malformed_archives_are_refused_with_clear_errors() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let named = |a: &mut Archive, d: serde_json::Value| {
        a.index(&[(Some("example.com/bad:1"), d)]);
    };
    // Blob content that does not match its name.
    let (mut a, d) = hello_archive("wasi");
    named(&mut a, d);
    let i = a.files.iter().position(|(p, _)| p.starts_with("blobs/")).unwrap();
    a.files[i].1.push(b'!');
    import(&b, &write_archive(dir.path(), "tampered.tar", &a), &[]).expect_berth_error(&["blob sha256:", "corrupt or was tampered"]);
    // A descriptor whose size is wrong.
    let (mut a, mut d) = hello_archive("wasi");
    d["size"] = serde_json::json!(d["size"].as_u64().unwrap() + 1);
    named(&mut a, d);
    import(&b, &write_archive(dir.path(), "size.tar", &a), &[]).expect_berth_error(&["bytes where its descriptor says"]);
    // A manifest described as an index.
    let (mut a, mut d) = hello_archive("wasi");
    d["mediaType"] = serde_json::json!("application/vnd.oci.image.index.v1+json");
    named(&mut a, d);
    import(&b, &write_archive(dir.path(), "mt.tar", &a), &[]).expect_berth_error(&["media type", "index"]);
    // A document that is both an index and a manifest.
    let mut a = Archive::default();
    let both = serde_json::json!({ "schemaVersion": 2, "manifests": [], "layers": [], "config": {} });
    let d = a.blob("application/vnd.oci.image.manifest.v1+json", both.to_string().as_bytes());
    named(&mut a, d);
    import(&b, &write_archive(dir.path(), "amb.tar", &a), &[]).expect_berth_error(&["ambiguous between an index and a manifest"]);
    // Two manifests for the same platform under one name.
    let (mut a, d1) = hello_archive("wasi");
    let d2 = a.image("wasip1", "wasm", &["/other.wasm"], &[oci::file_layer("other.wasm", b"\0asm\x01\0\0\0", 0o644)]);
    a.index(&[(Some("example.com/two:1"), d1), (Some("example.com/two:1"), d2)]);
    import(&b, &write_archive(dir.path(), "two.tar", &a), &[]).expect_berth_error(&["several manifests match", "ambiguous"]);
    // Oversize index.json.
    let mut a = Archive::default();
    a.add("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
    a.add("index.json", vec![b' '; 5 << 20]);
    import(&b, &write_archive(dir.path(), "big.tar", &a), &[]).expect_berth_error(&["index.json", "limit"]);
    // Not an image at all; a missing file; an unnamed image.
    let mut a = Archive::default();
    a.add("readme.txt", "hello");
    import(&b, &write_archive(dir.path(), "plain.tar", &a), &[]).expect_berth_error(&["neither an OCI image layout", "docker save"]);
    import(&b, &dir.path().join("missing.tar"), &[]).expect_berth_error(&["missing.tar", "No such file"]);
    let (mut a, d) = hello_archive("wasi");
    a.index(&[(None, d)]);
    let p = write_archive(dir.path(), "unnamed.tar", &a);
    import(&b, &p, &[]).expect_berth_error(&["without a name", "--name"]);
    import(&b, &p, &["--name", "named:1"]).expect_code(0);
    // Nothing of the failed imports is visible or left staged.
    let o = b.run(&["image", "ls"]);
    assert_eq!(o.stdout.lines().count(), 2, "{}", o.stdout);
    assert_eq!(std::fs::read_dir(b.root.path().join("images/ingest")).unwrap().count(), 0);
}

#[test]
fn unknown_fields_are_tolerated() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Archive::default();
    let wasm = std::fs::read(guests::HELLO_P1).unwrap();
    let layer = oci::file_layer("app.wasm", &wasm, 0o755);
    let l = a.blob("application/vnd.oci.image.layer.v1.tar", &layer);
    let config = serde_json::json!({ "architecture": "wasm", "os": "wasi", "future": {"x": 1}, "config": { "Entrypoint": ["/app.wasm"], "NewKnob": true }, "rootfs": { "type": "layers", "diff_ids": [oci::digest(&layer)] } });
    let c = a.blob("application/vnd.oci.image.config.v1+json", config.to_string().as_bytes());
    let m = serde_json::json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": c, "layers": [l], "subject": null, "extra": "field" });
    let d = a.blob("application/vnd.oci.image.manifest.v1+json", m.to_string().as_bytes());
    a.index(&[(Some("example.com/future:1"), d)]);
    import(&b, &write_archive(dir.path(), "f.tar", &a), &[]).expect_code(0);
    assert!(b.run(&["run", "example.com/future:1"]).stdout.contains("hello from a berth guest"));
}

#[test]
fn docker_save_archives_and_compressed_layers_import() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guests::HELLO_P1).unwrap();
    let layer = oci::file_layer("app.wasm", &wasm, 0o755);
    let config = serde_json::json!({ "architecture": "wasm", "os": "wasi", "config": { "Entrypoint": ["/app.wasm"] }, "rootfs": { "type": "layers", "diff_ids": [oci::digest(&layer)] } }).to_string();
    let mut a = Archive::default();
    let cfg_name = format!("{}.json", oci::digest(config.as_bytes()).trim_start_matches("sha256:"));
    a.add(&cfg_name, config.clone());
    a.add("abc123/layer.tar", layer.clone());
    a.add("manifest.json", serde_json::json!([{ "Config": cfg_name, "RepoTags": ["docker-style:1"], "Layers": ["abc123/layer.tar"] }]).to_string());
    import(&b, &write_archive(dir.path(), "docker.tar", &a), &[]).expect_code(0);
    assert!(b.run(&["run", "docker-style:1"]).stdout.contains("hello from a berth guest"));
    // The manifest berth makes for it is the sorted-key JSON of the OCI
    // manifest over those files: the same archive always imports as the
    // same digest.
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": oci::digest(config.as_bytes()), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": oci::digest(&layer), "size": layer.len() }],
    });
    let v: serde_json::Value = serde_json::from_str(&b.run(&["image", "inspect", "docker-style:1"]).stdout).unwrap();
    assert_eq!(v["digest"], oci::digest(&serde_json::to_vec(&manifest).unwrap()), "{v}");

    // gzip and zstd layers, and a gzip-compressed archive.
    for (name, packed) in [
        ("gz", {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &layer).unwrap();
            e.finish().unwrap()
        }),
        ("zst", zstd::encode_all(&layer[..], 3).unwrap()),
    ] {
        let mut a = Archive::default();
        let l = a.blob(&format!("application/vnd.oci.image.layer.v1.tar+{}", if name == "gz" { "gzip" } else { "zstd" }), &packed);
        let c = a.blob("application/vnd.oci.image.config.v1+json", config.as_bytes());
        let m = serde_json::json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": c, "layers": [l] });
        let d = a.blob("application/vnd.oci.image.manifest.v1+json", m.to_string().as_bytes());
        let image = format!("example.com/{name}:1");
        a.index(&[(Some(&image), d)]);
        let tar = a.tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let p = dir.path().join(format!("{name}.tar.gz"));
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        import(&b, &p, &[]).expect_code(0);
        assert!(b.run(&["run", &image]).stdout.contains("hello from a berth guest"), "{name}");
    }
}

#[test]
fn a_hostile_image_is_refused_at_run_and_the_host_is_unchanged() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let mut t = berth_tests::rawtar::RawTar::default();
    t.entry("../../escaped", berth_tests::rawtar::Kind::File(b"pwned"), 0o644);
    let mut a = Archive::default();
    let d = a.image("wasi", "wasm", &["/app.wasm"], &[t.finish()]);
    a.index(&[(Some("example.com/evil:1"), d)]);
    import(&b, &write_archive(dir.path(), "evil.tar", &a), &[]).expect_code(0);
    let before = berth_tests::tree::snapshot(b.root.path(), &|p| p == "cache");
    b.run(&["run", "example.com/evil:1"]).expect_berth_error(&["escaped", "'..'"]);
    assert_eq!(before, berth_tests::tree::snapshot(b.root.path(), &|p| p == "cache" || p == "rootfs"), "state outside rootfs/ changed");
    let left: Vec<_> = std::fs::read_dir(b.root.path().join("rootfs")).unwrap().collect();
    assert!(left.is_empty(), "a refused unpack left {left:?}");
}

#[test]
fn concurrent_imports_all_land() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.tar");
    build(&b, guests::HELLO_P1, "example.com/c:0", &[], &p);
    let children: Vec<_> = (0..6).map(|i| b.cmd().args(["image", "import", p.to_str().unwrap(), "--name", &format!("example.com/c:{i}")]).output()).collect();
    for c in children {
        let o = common::Out::from(c.unwrap());
        o.expect_code(0);
    }
    let o = b.run(&["image", "ls"]);
    assert_eq!(o.stdout.lines().count(), 7, "{}", o.stdout);
}

#[test]
fn an_interrupted_import_leaves_no_image_and_is_cleaned_up() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    // 16 MiB of incompressible data makes the import take a while.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("noise"), common::noise(16 << 20)).unwrap();
    let p = dir.path().join("big.tar");
    build(&b, guests::HELLO_P1, "example.com/big:1", &["--add", &format!("{}:/data", data.display())], &p);
    let mut child = b.cmd().args(["image", "import", p.to_str().unwrap()]).spawn().unwrap();
    let ingest = b.root.path().join("images/ingest");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Kill it once its staging area holds some of the blob.
    loop {
        let staged: u64 = walk_size(&ingest);
        if staged > 1 << 20 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the import never started staging");
        assert!(child.try_wait().unwrap().is_none(), "the import finished before it could be interrupted");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(walk_size(&ingest) > 0, "the killed import left nothing staged, so this test proved nothing");
    let o = b.run(&["image", "ls"]);
    assert_eq!(o.stdout.lines().count(), 1, "a killed import is visible:\n{}", o.stdout);
    b.run(&["run", "example.com/big:1"]).expect_berth_error(&["example.com/big:1"]);
    assert_eq!(std::fs::read_dir(b.root.path().join("images/blobs/sha256")).unwrap().count(), 0);
    // The next import removes the dead one's staging area and succeeds.
    import(&b, &p, &[]).expect_code(0);
    assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0);
    assert!(b.run(&["run", "example.com/big:1"]).stdout.contains("hello from a berth guest"));
}

fn walk_size(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p).map(|d| d.flatten().map(|e| walk_size(&e.path())).sum()).unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

#[test]
fn compat_archives_import_into_containerd() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hello.tar");
    build(&b, guests::HELLO_P1, "example.com/hello:1.0", &[], &p);
    let c = berth_tests::containerd::Containerd::start();
    let o = c.ctr(&["image", "import", "--platform", "wasi/wasm", p.to_str().unwrap()]);
    assert!(o.status.success(), "ctr image import: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let o = c.ctr(&["images", "ls"]);
    let ls = String::from_utf8_lossy(&o.stdout);
    let line = ls.lines().find(|l| l.starts_with("example.com/hello:1.0 ")).unwrap_or_else(|| panic!("image missing from ctr images ls:\n{ls}"));
    assert!(line.contains("wasi/wasm"), "{line}");
}

#[test]
fn image_rm_keeps_the_rootfs_a_running_guest_uses_until_it_ends() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "still here").unwrap();
    let add = format!("{}:/static", dir.path().display());
    b.run(&["image", "build", guests::FILE_TOOL_P1, "-t", "site:1", "--add", &add]).expect_code(0);
    b.run(&["image", "build", guests::HELLO_P1, "-t", "other:1"]).expect_code(0);
    let rootfs = b.root.path().join("rootfs");
    let unpacked = || std::fs::read_dir(&rootfs).map(|d| d.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.')).count()).unwrap_or(0);
    // The guest reads its rootfs only after its stdin closes.
    let mut child = b
        .cmd()
        .args(["run", "site:1", "read-after-stdin", "/static/a.txt"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while unpacked() == 0 {
        assert!(std::time::Instant::now() < deadline, "the rootfs was never unpacked");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Let the guest start (its lease is taken before the rootfs is used).
    std::thread::sleep(std::time::Duration::from_millis(500));
    b.run(&["image", "rm", "site:1"]).expect_code(0);
    let left = unpacked();
    assert_eq!(left, 1, "image rm removed the rootfs a running guest uses");
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "still here"));
    // Once it has ended, the next removal collects it.
    b.run(&["image", "rm", "other:1"]).expect_code(0);
    let left = unpacked();
    assert_eq!(left, 0, "the rootfs outlived its last guest and image");
}
