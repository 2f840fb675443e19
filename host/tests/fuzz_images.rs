//! Property tests (fuzzing) of the image code: random layers unpacked into
//! a sandbox never panic and never touch anything outside the rootfs;
//! random and mutated archives and JSON documents are imported or refused,
//! never panic, and never leave a half-imported image.
//!
//! More cases: `PROPTEST_CASES=20000 cargo test -p berth-host --test fuzz_images`.
use berth_host::oci::image::import::{import, ImportOptions};
use berth_host::oci::image::store::Store;
use berth_host::oci::image::unpack::{unpack_layer, Limits, Stats};
use berth_tests::oci::{self, Archive};
use berth_tests::rawtar::{Kind, RawTar};
use berth_tests::tree::snapshot;
use proptest::prelude::*;
use serde_json::{json, Value};

/// `PROPTEST_CASES` when set, else the suite's default.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default)
}

#[derive(Debug, Clone)]
enum Op {
    File(String, u32),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
    Device(String),
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("a".to_string()),
        3 => Just("b".to_string()),
        1 => Just("sub".to_string()),
        1 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just("".to_string()),
        1 => Just(".wh.a".to_string()),
        1 => Just(".wh..wh..opq".to_string()),
        1 => Just("HOST".to_string()),
        1 => "[a-c]{1,3}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 1..5)).prop_map(|(abs, c)| format!("{}{}", if abs { "/" } else { "" }, c.join("/")))
}

/// Link targets, biased toward the host side of the sandbox.
fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("HOST".to_string()),
        Just("HOST/a".to_string()),
        Just("../host".to_string()),
        Just("../../host/sub".to_string()),
        Just("/".to_string()),
        Just("a".to_string()),
        path(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (path(), prop_oneof![Just(0o644u32), Just(0o4755), Just(0o000)]).prop_map(|(p, m)| Op::File(p, m)),
        path().prop_map(Op::Dir),
        (path(), link_target()).prop_map(|(p, t)| Op::Symlink(p, t)),
        (path(), link_target()).prop_map(|(p, t)| Op::Hardlink(p, t)),
        path().prop_map(Op::Device),
    ]
}

/// Paths fit the 100-byte ustar name field; `HOST` becomes the absolute
/// path of the sandbox's host side.
fn layer(ops: &[Op], host: &str) -> Vec<u8> {
    let fix = |p: &str| {
        let p = p.replace("HOST", host);
        p[..p.len().min(99)].to_string()
    };
    let mut t = RawTar::default();
    for op in ops {
        match op {
            Op::File(p, m) => t.entry(&fix(p), Kind::File(b"data"), *m),
            Op::Dir(p) => t.entry(&fix(p), Kind::Dir, 0o755),
            Op::Symlink(p, target) => t.entry(&fix(p), Kind::Symlink(&fix(target)), 0o777),
            Op::Hardlink(p, target) => t.entry(&fix(p), Kind::Hardlink(&fix(target)), 0o644),
            Op::Device(p) => t.entry(&fix(p), Kind::CharDevice(1, 3), 0o666),
        };
    }
    t.finish()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(192), ..ProptestConfig::default() })]

    #[test]
    fn random_layers_stay_inside_the_rootfs(layers in prop::collection::vec(prop::collection::vec(op(), 1..12), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(dir.path().join("host/sub")).unwrap();
        std::fs::write(dir.path().join("host/a"), b"host a").unwrap();
        std::fs::write(dir.path().join("host/sub/b"), b"host b").unwrap();
        let host = dir.path().join("host").display().to_string();
        let skip = |p: &str| p == "rootfs";
        let before = snapshot(dir.path(), &skip);
        let mut stats = Stats::default();
        for ops in &layers {
            // Refusals are fine; panics and escapes are not.
            let _ = unpack_layer(&root, &layer(ops, &host)[..], &Limits::default(), &mut stats);
        }
        prop_assert_eq!(before, snapshot(dir.path(), &skip));
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("mediaType"),
        Just("digest"),
        Just("size"),
        Just("manifests"),
        Just("layers"),
        Just("config"),
        Just("platform"),
        Just("annotations"),
        Just("os"),
        Just("architecture"),
        Just("schemaVersion"),
        Just("io.containerd.image.name"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("application/vnd.oci.image.manifest.v1+json".to_string()),
            Just("application/vnd.oci.image.index.v1+json".to_string()),
            Just("sha256:0000000000000000000000000000000000000000000000000000000000000000".to_string()),
            Just("wasi".to_string()),
            Just("example.com/x:1".to_string()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

fn try_import(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("images")).unwrap();
    let p = dir.path().join("in.tar");
    std::fs::write(&p, bytes).unwrap();
    let opts = ImportOptions { platform: None, name: Some("example.com/fuzz:1".into()) };
    let result = import(&store, &p, &opts, &|f| Box::new(f));
    let listed = store.list().unwrap();
    match result {
        Ok(images) => assert_eq!(listed.len(), images.iter().map(|i| &i.name).collect::<std::collections::BTreeSet<_>>().len()),
        Err(_) => assert!(listed.is_empty(), "a failed import left {listed:?}"),
    }
    assert_eq!(std::fs::read_dir(dir.path().join("images/ingest")).unwrap().count(), 0, "staging left behind");
}

fn valid_archive() -> Vec<u8> {
    let mut a = Archive::default();
    let d = a.image("wasi", "wasm", &["/app.wasm"], &[oci::file_layer("app.wasm", b"\0asm\x01\0\0\0", 0o755)]);
    a.index(&[(Some("example.com/ok:1"), d)]);
    a.tar()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), ..ProptestConfig::default() })]

    #[test]
    fn random_index_documents_never_panic(index in json_value(), manifest in json_value()) {
        let mut a = Archive::default();
        let m = a.blob("application/vnd.oci.image.manifest.v1+json", manifest.to_string().as_bytes());
        a.add("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
        let mut index = index;
        if let Some(obj) = index.as_object_mut() {
            // Half the time, point the index at the random manifest.
            obj.entry("manifests").or_insert_with(|| json!([m]));
        }
        a.add("index.json", index.to_string());
        try_import(&a.tar());
    }

    #[test]
    fn mutated_archives_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>(), truncate in any::<bool>()) {
        let mut bytes = valid_archive();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        try_import(&bytes);
    }
}

#[test]
fn the_unmutated_archive_imports() {
    // The baseline the mutations start from is itself valid.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("images")).unwrap();
    let p = dir.path().join("in.tar");
    std::fs::write(&p, valid_archive()).unwrap();
    let got = import(&store, &p, &ImportOptions { platform: None, name: None }, &|f| Box::new(f)).unwrap();
    assert_eq!(got[0].name, "example.com/ok:1");
}
