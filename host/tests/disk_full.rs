//! A full disk under BERTH_ROOT: an import or a first run that runs out of
//! space fails with a clear error, and every image stored before it still
//! lists and runs. BERTH_ROOT is a small tmpfs that the test mounts (it
//! needs root, as the rest of the end-to-end suites do).
mod common;
use common::{guests, noise, Berth};
use std::path::Path;
use std::process::Command;

/// A tmpfs of `mib` MiB mounted on `dir` for as long as it lives.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, mib: u32) -> Self {
        assert!(rustix::process::geteuid().is_root(), "this test mounts a tmpfs as BERTH_ROOT: run it as root (./test.sh does)");
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "berth-test", dir.to_str().unwrap()]).status().unwrap();
        assert!(st.success(), "mounting a tmpfs on {}", dir.display());
        Tmpfs(dir)
    }

    fn free_bytes(&self) -> u64 {
        let st = rustix::fs::statvfs(self.0).unwrap();
        st.f_bavail * st.f_frsize
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// Builds an image archive of the hello guest with a builder of its own
/// (on the ordinary disk); with `noise_bytes` bytes that do not compress in
/// `/data/noise` when not 0.
fn archive(name: &str, noise_bytes: usize, out: &Path) {
    let builder = Berth::new();
    let data = builder.root.path().join("data");
    let mut args = vec!["image", "build", guests::HELLO_P1, "-t", name, "-o", out.to_str().unwrap()];
    let add = format!("{}:/data", data.display());
    if noise_bytes > 0 {
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("noise"), noise(noise_bytes)).unwrap();
        args.extend(["--add", &add]);
    }
    builder.run(&args).expect_code(0);
}

fn hello_runs(b: &Berth, image: &str) {
    let o = b.run(&["run", image]);
    o.expect_code(0);
    assert!(o.stdout.contains("hello from a berth guest"), "{}", o.stdout);
}

#[test]
fn an_import_that_fills_the_disk_fails_clearly_and_keeps_earlier_images() {
    let b = Berth::new();
    let work = tempfile::tempdir().unwrap();
    let small = work.path().join("hello.tar");
    archive("example.com/hello:1", 0, &small);
    let big = work.path().join("big.tar");
    archive("example.com/big:1", 24 << 20, &big);

    let fs = Tmpfs::mount(b.root.path(), 16);
    b.run(&["image", "import", small.to_str().unwrap()]).expect_code(0);
    hello_runs(&b, "example.com/hello:1");
    let free_before = fs.free_bytes();

    let o = b.run(&["image", "import", big.to_str().unwrap()]);
    o.expect_berth_error(&["No space left on device"]);
    assert!(o.stderr.contains(big.to_str().unwrap()) || o.stderr.contains("sha256:"), "the error names neither the archive nor the blob: {}", o.stderr);

    // Nothing half-stored: the failed import's staging is gone and the
    // space it took is free again.
    assert_eq!(fs.free_bytes(), free_before, "the failed import left data behind");
    let ls = b.run(&["image", "ls"]);
    ls.expect_code(0);
    assert!(ls.stdout.contains("example.com/hello:1"), "{}", ls.stdout);
    assert!(!ls.stdout.contains("example.com/big:1"), "a half-imported image is listed:\n{}", ls.stdout);
    hello_runs(&b, "example.com/hello:1");
}

#[test]
fn a_first_run_on_a_full_disk_fails_clearly_and_runs_once_there_is_room() {
    let b = Berth::new();
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img.tar");
    archive("example.com/withdata:1", 2 << 20, &img);

    let fs = Tmpfs::mount(b.root.path(), 16);
    b.run(&["image", "import", img.to_str().unwrap()]).expect_code(0);
    // Fill what is left, so unpacking the rootfs at the first run fails.
    let filler = b.root.path().join("filler");
    let free = fs.free_bytes();
    let _ = std::fs::write(&filler, vec![0u8; free as usize]);
    assert!(fs.free_bytes() < 1 << 20, "the disk did not fill up");

    let o = b.run(&["run", "example.com/withdata:1"]);
    o.expect_berth_error(&["No space left on device"]);
    // No partial rootfs is left to be taken for a whole one later.
    let unpacked: Vec<_> = std::fs::read_dir(b.root.path().join("rootfs")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(unpacked.iter().all(|n| n.to_string_lossy().starts_with('.')), "a partial rootfs was kept: {unpacked:?}");

    std::fs::remove_file(&filler).unwrap();
    hello_runs(&b, "example.com/withdata:1");
    // And the next run uses the rootfs the last one unpacked.
    hello_runs(&b, "example.com/withdata:1");
}
