//! Native bundles through `berth run --bundle` (the same libcontainer path
//! the shim takes), and attacks of the classes that hit runc and youki,
//! made from inside the container. Needs root (namespaces, cgroups).
mod common;
use berth_tests::busybox;
use common::Berth;
use std::os::unix::process::CommandExt;
use std::path::Path;

fn run(b: &Berth, bundle: &Path) -> common::Out {
    b.run(&["run", "--bundle", bundle.to_str().unwrap()])
}

#[test]
fn a_native_bundle_runs_as_a_container_with_its_exit_code() {
    let b = Berth::new();
    let d = tempfile::tempdir().unwrap();
    busybox::bundle(d.path(), &["sh", "-c", "echo hello from $(hostname) as pid $$; exit 7"], |s| {
        s.set_hostname(Some("boxed".into()));
    });
    let o = run(&b, d.path());
    o.expect_code(7);
    assert_eq!(o.stdout, "hello from boxed as pid 1\n", "{}", o.stderr);
    // Killed by a signal from outside: 128+signal, as a shell reports it.
    let k = d.path().join("k");
    busybox::bundle(&k, &["sleep", "100"], |_| {});
    let mut child = b.cmd().args(["run", "--bundle", k.to_str().unwrap()]).spawn().unwrap();
    let container = wait_for_child_of(child.id(), "sleep");
    // SAFETY: SIGKILL to the container process this test started.
    unsafe { libc::kill(container, libc::SIGKILL) };
    assert_eq!(child.wait().unwrap().code(), Some(137));
}

/// The first child process of `parent` whose command line holds `arg` (the
/// container berth started; not the helper that set it up).
fn wait_for_child_of(parent: u32, arg: &str) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)).and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&str> = cmdline.split('\0').collect();
            if ppid == Some(parent) && args.contains(&arg) && !args.contains(&berth_host::helper::ARG) {
                return pid;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no container process under berth {parent}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn linux_resources_are_applied_to_the_cgroup() {
    let b = Berth::new();
    let d = tempfile::tempdir().unwrap();
    // The default spec mounts the container's cgroups read-only at /sys/fs/cgroup.
    busybox::bundle(d.path(), &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max"], |s| {
        let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
            .memory(oci_spec::runtime::LinuxMemoryBuilder::default().limit(64i64 << 20).build().unwrap())
            .pids(oci_spec::runtime::LinuxPidsBuilder::default().limit(42i64).build().unwrap())
            .build()
            .unwrap();
        let mut linux = s.linux().clone().unwrap();
        linux.set_resources(Some(resources));
        s.set_linux(Some(linux));
    });
    let o = run(&b, d.path());
    assert_eq!(o.stdout, format!("{}\n42\n", 64u64 << 20), "{o:?}");
}

#[test]
fn no_descriptor_of_berth_leaks_into_the_container() {
    let b = Berth::new();
    let d = tempfile::tempdir().unwrap();
    busybox::bundle(d.path(), &["sh", "-c", "ls /proc/$$/fd; true"], |_| {});
    // berth itself holds an extra inheritable descriptor (fd 7) on a host
    // file when it starts: the container must not get it.
    let secret = d.path().join("host-secret");
    std::fs::write(&secret, "secret").unwrap();
    let f = std::fs::File::open(&secret).unwrap();
    let mut cmd = b.cmd();
    cmd.args(["run", "--bundle", d.path().to_str().unwrap()]);
    use std::os::fd::AsRawFd;
    let raw = f.as_raw_fd();
    // SAFETY: dup2 in the child before exec, on a descriptor open in the parent.
    unsafe {
        cmd.pre_exec(move || if libc::dup2(raw, 7) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let o = cmd.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>(), ["0", "1", "2"], "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn masked_and_read_only_paths_hold() {
    let b = Berth::new();
    let d = tempfile::tempdir().unwrap();
    // The default spec masks /proc/timer_list (and others) and makes
    // /proc/sys read-only. On the host the file has content.
    assert!(!std::fs::read("/proc/timer_list").unwrap().is_empty());
    let script = "wc -c < /proc/timer_list; grep ' /proc/sys ' /proc/self/mountinfo";
    busybox::bundle(d.path(), &["sh", "-c", script], |_| {});
    let o = run(&b, d.path());
    let mut lines = o.stdout.lines();
    assert_eq!(lines.next(), Some("0"), "{o:?}");
    let sys = lines.next().unwrap_or_default();
    let opts = sys.split(' ').nth(5).unwrap_or_default();
    assert!(opts.split(',').any(|o| o == "ro"), "/proc/sys is not read-only: {sys}");
}

#[test]
fn the_working_directory_resolves_inside_the_rootfs() {
    let b = Berth::new();
    let d = tempfile::tempdir().unwrap();
    // A host directory with a marker, and a rootfs symlink that names it
    // absolutely: as the cwd, it must resolve inside the container.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("HOST-MARKER"), "x").unwrap();
    busybox::bundle(d.path(), &["sh", "-c", "ls; pwd"], |s| {
        let mut p = s.process().clone().unwrap();
        p.set_cwd("/escape".into());
        s.set_process(Some(p));
    });
    std::os::unix::fs::symlink(host.path(), d.path().join("rootfs/escape")).unwrap();
    let o = run(&b, d.path());
    assert!(!o.stdout.contains("HOST-MARKER"), "the host directory was reachable: {}", o.stdout);
    // It resolved to a new directory inside the rootfs, or was refused.
    if o.code == 0 {
        assert!(d.path().join("rootfs").join(host.path().strip_prefix("/").unwrap()).is_dir(), "{o:?}");
    }
}

#[test]
fn symlinked_mount_targets_and_swapped_proc_stay_inside() {
    let b = Berth::new();
    let d = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let victim = host.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("keep"), "host file").unwrap();
    // /proc in the rootfs is a symlink to the host directory: mounting proc
    // "there" must not cover the host directory.
    busybox::bundle(d.path(), &["true"], |_| {});
    let rootfs = d.path().join("rootfs");
    std::fs::remove_dir(rootfs.join("proc")).unwrap();
    std::os::unix::fs::symlink(&victim, rootfs.join("proc")).unwrap();
    // /dev/null swapped for a symlink to a host file.
    std::fs::create_dir_all(rootfs.join("dev")).unwrap();
    std::os::unix::fs::symlink(victim.join("keep"), rootfs.join("dev/null")).unwrap();
    let _ = run(&b, d.path());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(victim.to_str().unwrap()), "something was mounted on the host directory:\n{mounts}");
    assert_eq!(std::fs::read_to_string(victim.join("keep")).unwrap(), "host file");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1, "the host directory changed");
}

/// The class of CVE-2019-5736: the runtime's own binary, run inside the
/// container (here: process.args[0] = /proc/self/exe, which resolves to
/// whatever executable set the container up), is caught through
/// `/proc/PID/exe` and written through once nothing runs it. berth sets
/// containers up from a read-only bind mount of itself (in the helper's own
/// mount namespace), so the write must fail and the binary stay unchanged. The berth run here is a
/// copy, so a successful attack would change only the copy.
#[test]
fn the_runtime_binary_cannot_be_overwritten_through_proc_exe() {
    use std::io::Write;
    let b = Berth::new();
    let bin = tempfile::tempdir().unwrap();
    let berth = bin.path().join("berth");
    std::fs::copy(env!("CARGO_BIN_EXE_berth"), &berth).unwrap();
    let before = std::fs::read(&berth).unwrap();
    let d = tempfile::tempdir().unwrap();
    // The sandbox annotation makes it native without looking at args[0].
    busybox::bundle(d.path(), &["/proc/self/exe", "run", "/sleep.wat"], |s| {
        let mut a = std::collections::HashMap::new();
        a.insert("io.kubernetes.cri.container-type".to_string(), "sandbox".to_string());
        s.set_annotations(Some(a));
        let mut p = s.process().clone().unwrap();
        p.set_env(Some(vec!["PATH=/bin".into(), "BERTH_ROOT=/tmp/berth".into()]));
        s.set_process(Some(p));
    });
    std::fs::copy(berth_tests::guests::WAT_SLEEP, d.path().join("rootfs/sleep.wat")).unwrap();
    // The image brings the host's loader and libraries, so the runtime's
    // binary can run in it (as the original exploit's image did).
    let ldd = std::process::Command::new("ldd").arg(&berth).output().expect("ldd");
    for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = d.path().join("rootfs").join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dest).unwrap();
    }
    let mut cmd = std::process::Command::new(&berth);
    cmd.env("BERTH_ROOT", b.root.path()).args(["run", "--bundle", d.path().to_str().unwrap()]);
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let pid = wait_for_child_of(child.id(), "/sleep.wat");
    // The attacker's hold on the executable (from the host, which can do
    // more than anything inside the container).
    let exe = format!("/proc/{pid}/exe");
    let target = std::fs::read_link(&exe).unwrap();
    let held = std::fs::File::open(&exe).unwrap();
    // SAFETY: SIGKILL to the container process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = child.wait();
    use std::os::fd::AsRawFd;
    let reopened = std::fs::OpenOptions::new().append(true).open(format!("/proc/self/fd/{}", held.as_raw_fd()));
    let wrote = reopened.and_then(|mut f| f.write_all(b"PWNED"));
    assert!(wrote.is_err(), "wrote through the container's view of the runtime binary ({})", target.display());
    assert!(before == std::fs::read(&berth).unwrap(), "the berth binary changed");
}

#[test]
fn a_failed_native_create_is_reported_and_leaves_nothing() {
    let b = Berth::new();
    let d = tempfile::tempdir().unwrap();
    busybox::bundle(d.path(), &["/no/such/program"], |s| {
        let mut a = std::collections::HashMap::new();
        a.insert("io.kubernetes.cri.container-type".to_string(), "sandbox".to_string());
        s.set_annotations(Some(a));
    });
    let child = b
        .cmd()
        .args(["run", "--bundle", d.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = format!("berth-run-{}", child.id());
    let o = common::Out::from(child.wait_with_output().unwrap());
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("/no/such/program"), "the error names the program: {o:?}");
    assert!(!std::path::Path::new("/run/berth/native").join(&id).exists(), "state of {id} left behind");
    let lingering =
        std::fs::read_dir("/proc").unwrap().flatten().filter(|e| std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default().contains(&id)).count();
    assert_eq!(lingering, 0, "a process of {id} was left running");
}

#[test]
fn a_refused_oom_score_names_its_cause() {
    let b = Berth::new();
    let d = tempfile::tempdir().unwrap();
    // Out of range on every host: the kernel refuses it as it refuses a
    // negative score where that is not allowed.
    busybox::bundle(d.path(), &["true"], |s| {
        let mut p = s.process().clone().unwrap();
        p.set_oom_score_adj(Some(-1001));
        s.set_process(Some(p));
    });
    let o = run(&b, d.path());
    assert_eq!(o.code, 125, "{o:?}");
    for want in ["oomScoreAdj", "/proc/self/oom_score_adj", "Invalid argument", "-1000 to 1000"] {
        assert!(o.stderr.contains(want), "the error lacks {want:?}: {}", o.stderr);
    }
}

#[test]
fn the_helpers_read_only_binary_never_reaches_a_shared_host_mount() {
    // berth's binary on a shared mount (as `/` is on systemd hosts): the
    // read-only bind the native helper makes of it stays in the helper's
    // own mount namespace, and the host's mount table is unchanged.
    let b = Berth::new();
    let d = tempfile::tempdir().unwrap();
    let shared = d.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let sh = |args: &[&str]| assert!(std::process::Command::new(args[0]).args(&args[1..]).status().unwrap().success(), "{args:?}");
    let s = shared.to_str().unwrap();
    sh(&["mount", "--bind", s, s]);
    sh(&["mount", "--make-shared", s]);
    let exe = shared.join("berth");
    std::fs::copy(env!("CARGO_BIN_EXE_berth"), &exe).unwrap();
    let mounts = || std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(s)).count();
    let before = mounts();
    let bundle = d.path().join("b");
    busybox::bundle(&bundle, &["sh", "-c", "echo ran"], |_| {});
    let o = std::process::Command::new(&exe)
        .args(["run", "--bundle", bundle.to_str().unwrap()])
        .env("BERTH_ROOT", b.root.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let after = mounts();
    sh(&["umount", "-l", s]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n", "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(after, before, "the helper's mounts reached the host");
}
