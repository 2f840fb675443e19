//! berth on a kernel without openat2 (before Linux 5.6, or a seccomp
//! filter that refuses it, or qemu-user, which does not emulate it): images
//! still unpack and run. The `berth` under test runs under a seccomp filter
//! that answers openat2 with ENOSYS, as such a kernel does.
mod common;
use common::{guests, Berth};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `cmd` run where openat2 fails with ENOSYS.
fn without_openat2(cmd: &mut Command) -> &mut Command {
    // Load the syscall number; openat2 -> ENOSYS; anything else -> allow.
    let filter = [
        libc::sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k: 0 },
        libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, jt: 0, jf: 1, k: libc::SYS_openat2 as u32 },
        libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32 },
        libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    // SAFETY: the closure runs in the forked child before exec and makes
    // only the prctl system calls (async-signal-safe); `filter` was built
    // before the fork and is moved into the closure, which owns it.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[test]
fn images_unpack_and_run_where_the_kernel_lacks_openat2() {
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    common::write(&site.join("sub/dir/a.txt"), "nested and found");
    let archive = dir.path().join("img.tar");
    let add = format!("{}:/static", site.display());
    b.run(&["image", "build", guests::FILE_TOOL_P1, "-t", "example.com/files:1", "--add", &add, "-o", archive.to_str().unwrap()]).expect_code(0);

    // The filter works: a program of the same filter sees openat2 refused.
    let probe = without_openat2(&mut Command::new("python3"))
        .args([
            "-c",
            &format!("import ctypes,os; r=ctypes.CDLL(None,use_errno=True).syscall({}, -100, b'/', 0, 0); print(r, ctypes.get_errno())", libc::SYS_openat2),
        ])
        .output()
        .expect("python3 runs the probe");
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), format!("-1 {}", libc::ENOSYS), "the filter does not refuse openat2");

    let run = |args: &[&str]| common::Out::from(without_openat2(&mut b.cmd()).args(args).output().unwrap());
    run(&["image", "import", archive.to_str().unwrap()]).expect_code(0);
    let o = run(&["run", "example.com/files:1", "read", "/static/sub/dir/a.txt"]);
    o.expect_code(0);
    assert_eq!(o.stdout, "nested and found");
    let o = run(&["run", guests::HELLO_P1]);
    o.expect_code(0);
    assert!(o.stdout.contains("hello from a berth guest"), "{}", o.stdout);
}
