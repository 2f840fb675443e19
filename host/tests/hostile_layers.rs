//! Hostile layers: every entry of these hand-made tarballs tries to
//! create, change or read something outside the rootfs it is unpacked
//! into. Each is refused or contained, and the tree around the rootfs
//! (a stand-in for the host, with a victim file and directory, reachable
//! by relative and absolute paths) is byte-for-byte unchanged afterwards.
use berth_host::oci::image::unpack::{unpack_layer, Limits, Stats, UnpackError};
use berth_tests::rawtar::{Kind, RawTar};
use berth_tests::tree::snapshot;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs")).unwrap();
        std::fs::create_dir_all(dir.path().join("host/dir")).unwrap();
        std::fs::write(dir.path().join("host/victim"), b"host data").unwrap();
        std::fs::write(dir.path().join("host/dir/inner"), b"inner data").unwrap();
        Sandbox { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
    /// Absolute host path of the victim directory.
    fn host(&self) -> String {
        self.dir.path().join("host").display().to_string()
    }
    /// Unpacks the layers in order; checks the host side is unchanged and
    /// returns the result of the first failing layer.
    fn unpack(&self, layers: &[Vec<u8>], limits: Limits) -> Result<Stats, UnpackError> {
        let skip = |p: &str| p == "rootfs";
        let before = snapshot(self.dir.path(), &skip);
        let mut stats = Stats::default();
        let mut result = Ok(());
        for l in layers {
            result = unpack_layer(&self.root(), &l[..], &limits, &mut stats);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(before, snapshot(self.dir.path(), &skip), "the host side of the sandbox changed");
        result.map(|()| stats)
    }
}

fn layer(f: impl FnOnce(&mut RawTar)) -> Vec<u8> {
    let mut t = RawTar::default();
    f(&mut t);
    t.finish()
}

fn refused(r: Result<Stats, UnpackError>, needle: &str) {
    let e = r.expect_err("the layer must be refused");
    let msg = format!("{e:#}");
    assert!(
        msg.contains(needle) || e.to_string().contains(needle) || std::error::Error::source(&e).is_some_and(|s| s.to_string().contains(needle)),
        "error {msg:?} lacks {needle:?}"
    );
}

#[test]
fn dot_dot_paths_are_refused() {
    for name in ["../escape", "a/../../escape", "./../escape", "/../escape", "a/b/../../../escape"] {
        let s = Sandbox::new();
        refused(
            s.unpack(
                &[layer(|t| {
                    t.entry(name, Kind::File(b"x"), 0o644);
                })],
                Limits::default(),
            ),
            "'..'",
        );
        assert!(!s.dir.path().join("escape").exists());
    }
}

#[test]
fn absolute_paths_land_inside_the_rootfs() {
    let s = Sandbox::new();
    let host_victim = format!("{}/victim", s.host());
    s.unpack(
        &[layer(|t| {
            t.entry(&host_victim, Kind::File(b"pwned"), 0o644);
            t.entry("/etc/passwd", Kind::File(b"root"), 0o644);
        })],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(s.root().join(host_victim.trim_start_matches('/'))).unwrap(), b"pwned");
    assert_eq!(std::fs::read(s.root().join("etc/passwd")).unwrap(), b"root");
}

#[test]
fn writes_through_symlinks_stay_inside() {
    let s = Sandbox::new();
    let abs = s.host();
    // Parent directory is a symlink out (absolute and relative), then a
    // file is written beneath it.
    let l = layer(|t| {
        t.entry("abs", Kind::Symlink(&abs), 0o777);
        t.entry("rel", Kind::Symlink("../host"), 0o777);
        t.entry("deep", Kind::Symlink("../../../../../../../../host"), 0o777);
    });
    s.unpack(std::slice::from_ref(&l), Limits::default()).unwrap();
    for via in ["abs/victim", "rel/victim", "deep/victim", "abs/planted", "rel/dir/planted"] {
        let s = Sandbox::new();
        let r = s.unpack(
            &[
                l.clone(),
                layer(|t| {
                    t.entry(via, Kind::File(b"pwned"), 0o644);
                }),
            ],
            Limits::default(),
        );
        // Either refused (the re-rooted target does not exist) or written
        // inside the rootfs; never outside (checked by `unpack`).
        if r.is_ok() {
            let inside = std::fs::read(s.root().join(via.replacen("abs", abs.trim_start_matches('/'), 1)));
            assert!(inside.is_ok() || std::fs::read(s.root().join(via)).is_ok(), "{via}: no error and no file inside");
        }
    }
    // A symlink to a directory inside the rootfs is followed, inside.
    let s = Sandbox::new();
    s.unpack(
        &[layer(|t| {
            t.entry("usr/bin/", Kind::Dir, 0o755);
            t.entry("bin", Kind::Symlink("/usr/bin"), 0o777);
            t.entry("bin/sh", Kind::File(b"sh"), 0o755);
        })],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(s.root().join("usr/bin/sh")).unwrap(), b"sh");
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let s = Sandbox::new();
    let victim = format!("{}/victim", s.host());
    s.unpack(
        &[
            layer(|t| {
                t.entry("x", Kind::Symlink(&victim), 0o777);
            }),
            layer(|t| {
                t.entry("x", Kind::File(b"pwned"), 0o644);
            }),
        ],
        Limits::default(),
    )
    .unwrap();
    let meta = std::fs::symlink_metadata(s.root().join("x")).unwrap();
    assert!(meta.is_file(), "the symlink is replaced by a regular file");
    // The same within one layer, and for a directory entry.
    let s = Sandbox::new();
    let host = s.host();
    s.unpack(
        &[layer(|t| {
            t.entry("d", Kind::Symlink(&host), 0o777);
            t.entry("d/", Kind::Dir, 0o700);
            t.entry("d/f", Kind::File(b"f"), 0o644);
        })],
        Limits::default(),
    )
    .unwrap();
    assert!(std::fs::symlink_metadata(s.root().join("d")).unwrap().is_dir());
}

#[test]
fn hardlinks_cannot_reach_outside() {
    let s = Sandbox::new();
    let victim = format!("{}/victim", s.host());
    refused(
        s.unpack(
            &[layer(|t| {
                t.entry("hl", Kind::Hardlink("../host/victim"), 0o644);
            })],
            Limits::default(),
        ),
        "'..'",
    );
    // An absolute target is re-rooted: the host file is not there.
    refused(
        s.unpack(
            &[layer(|t| {
                t.entry("hl", Kind::Hardlink(&victim), 0o644);
            })],
            Limits::default(),
        ),
        "not in the rootfs",
    );
    // Through a symlinked directory pointing out.
    let host = s.host();
    refused(
        s.unpack(
            &[layer(|t| {
                t.entry("out", Kind::Symlink(&host), 0o777);
                t.entry("hl", Kind::Hardlink("out/victim"), 0o644);
            })],
            Limits::default(),
        ),
        "not in the rootfs",
    );
    assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 1, "no new link to the host file");
    // A hard link to a symlink links the symlink itself, not its target.
    let s = Sandbox::new();
    s.unpack(
        &[layer(|t| {
            t.entry("ln", Kind::Symlink(&victim), 0o777);
            t.entry("hl", Kind::Hardlink("ln"), 0o644);
        })],
        Limits::default(),
    )
    .unwrap();
    assert!(std::fs::symlink_metadata(s.root().join("hl")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 1);
    // Hard links inside the rootfs work.
    let s = Sandbox::new();
    s.unpack(
        &[layer(|t| {
            t.entry("a", Kind::File(b"same"), 0o644);
            t.entry("b", Kind::Hardlink("a"), 0o644);
        })],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::metadata(s.root().join("b")).unwrap().ino(), std::fs::metadata(s.root().join("a")).unwrap().ino());
}

#[test]
fn whiteouts_only_remove_inside() {
    let s = Sandbox::new();
    let host = s.host();
    let base = layer(|t| {
        t.entry("keep/", Kind::Dir, 0o755);
        t.entry("keep/a", Kind::File(b"a"), 0o644);
        t.entry("gone", Kind::File(b"g"), 0o644);
        t.entry("opq/", Kind::Dir, 0o755);
        t.entry("opq/old", Kind::File(b"o"), 0o644);
        t.entry("out", Kind::Symlink(&host), 0o777);
        t.entry("rel", Kind::Symlink("../host"), 0o777);
    });
    let upper = layer(|t| {
        t.entry(".wh.gone", Kind::File(b""), 0o644);
        t.entry("out/.wh.victim", Kind::File(b""), 0o644);
        t.entry("rel/.wh.victim", Kind::File(b""), 0o644);
        t.entry("out/dir/.wh..wh..opq", Kind::File(b""), 0o644);
        t.entry("rel/.wh..wh..opq", Kind::File(b""), 0o644);
        t.entry("opq/.wh..wh..opq", Kind::File(b""), 0o644);
        t.entry("opq/new", Kind::File(b"n"), 0o644);
    });
    s.unpack(&[base, upper], Limits::default()).unwrap();
    assert!(!s.root().join("gone").exists());
    assert!(s.root().join("keep/a").exists());
    assert!(!s.root().join("opq/old").exists() && s.root().join("opq/new").exists());
    assert!(std::path::Path::new(&format!("{host}/victim")).exists());
    refused(
        s.unpack(
            &[layer(|t| {
                t.entry("../.wh.host", Kind::File(b""), 0o644);
            })],
            Limits::default(),
        ),
        "'..'",
    );
    refused(
        s.unpack(
            &[layer(|t| {
                t.entry(".wh...", Kind::File(b""), 0o644);
            })],
            Limits::default(),
        ),
        "whiteout",
    );
}

#[test]
fn devices_are_skipped_and_setuid_dropped() {
    let s = Sandbox::new();
    let stats = s
        .unpack(
            &[layer(|t| {
                t.entry("dev/null", Kind::CharDevice(1, 3), 0o666);
                t.entry("dev/sda", Kind::CharDevice(8, 0), 0o666);
                t.entry("fifo", Kind::Fifo, 0o644);
                t.entry("suid", Kind::File(b"#!"), 0o4755);
                t.entry("sgid-dir/", Kind::Dir, 0o2755);
            })],
            Limits::default(),
        )
        .unwrap();
    assert_eq!(stats.skipped, 3);
    assert!(!s.root().join("dev/null").exists() && !s.root().join("fifo").exists());
    assert_eq!(std::fs::metadata(s.root().join("suid")).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::metadata(s.root().join("sgid-dir")).unwrap().permissions().mode() & 0o7000, 0);
    assert_eq!(stats.stripped, 2);
}

#[test]
fn pax_records_cannot_smuggle_paths() {
    let s = Sandbox::new();
    let r = s.unpack(
        &[layer(|t| {
            t.pax(&[("path", "../../pax-escape")]);
            t.entry("innocent", Kind::File(b"x"), 0o644);
        })],
        Limits::default(),
    );
    refused(r, "'..'");
    let victim = format!("{}/victim", s.host());
    let r = s.unpack(
        &[layer(|t| {
            t.pax(&[("linkpath", "../host/victim")]);
            t.entry("hl", Kind::Hardlink("ok"), 0o644);
        })],
        Limits::default(),
    );
    refused(r, "'..'");
    // An absolute PAX path is re-rooted like any other.
    s.unpack(
        &[layer(|t| {
            t.pax(&[("path", &victim)]);
            t.entry("x", Kind::File(b"inside"), 0o644);
        })],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(s.root().join(victim.trim_start_matches('/'))).unwrap(), b"inside");
    // A PAX size far beyond the data.
    refused(
        s.unpack(
            &[layer(|t| {
                t.pax(&[("size", "1099511627776")]);
                t.entry("big", Kind::File(b"x"), 0o644);
            })],
            Limits::default(),
        ),
        "",
    );
}

#[test]
fn sizes_and_counts_are_capped() {
    let s = Sandbox::new();
    let small = Limits { max_bytes: 1000, max_entries: 100 };
    let r = s.unpack(
        &[layer(|t| {
            t.lying_file("huge", 1 << 40, b"tiny");
        })],
        small,
    );
    assert!(matches!(r, Err(UnpackError::TooLarge { .. })), "{r:?}");
    let r = s.unpack(
        &[layer(|t| {
            t.entry("a", Kind::File(&[7; 600]), 0o644);
            t.entry("b", Kind::File(&[7; 600]), 0o644);
        })],
        small,
    );
    assert!(matches!(r, Err(UnpackError::TooLarge { .. })), "{r:?}");
    let r = s.unpack(
        &[layer(|t| {
            for i in 0..101 {
                t.entry(&format!("f{i}"), Kind::File(b""), 0o644);
            }
        })],
        small,
    );
    assert!(matches!(r, Err(UnpackError::TooManyEntries { .. })), "{r:?}");
    // A header that promises more data than the stream has.
    refused(
        Sandbox::new().unpack(
            &[layer(|t| {
                t.lying_file("short", 5000, b"only this");
            })],
            Limits::default(),
        ),
        "",
    );
}

#[test]
fn symlink_loops_and_odd_names_fail_cleanly() {
    let s = Sandbox::new();
    let r = s.unpack(
        &[layer(|t| {
            t.entry("a", Kind::Symlink("b"), 0o777);
            t.entry("b", Kind::Symlink("a"), 0o777);
            t.entry("a/x", Kind::File(b"x"), 0o644);
        })],
        Limits::default(),
    );
    assert!(r.is_err());
    // A file where a directory is needed.
    let r = s.unpack(
        &[layer(|t| {
            t.entry("f", Kind::File(b""), 0o644);
            t.entry("f/x", Kind::File(b""), 0o644);
        })],
        Limits::default(),
    );
    refused(r, "not a directory");
    // Proc magic links are not followed.
    let r = Sandbox::new().unpack(
        &[layer(|t| {
            t.entry("p", Kind::Symlink("/proc/self/root/tmp"), 0o777);
            t.entry("p/x", Kind::File(b""), 0o644);
        })],
        Limits::default(),
    );
    assert!(r.is_err(), "{r:?}");
}
