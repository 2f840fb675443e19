//! `escape-prober RO RW [HOST_SECRET]`: tries to reach files outside its
//! grants (RO granted read-only, RW granted read-write) and reports each
//! attempt as `DENIED name: error` or `ESCAPED name: what happened`.
//!
//! The host prepares, next to the grants, an `outside/secret.txt` and these
//! links: `RO/abs-link` -> absolute host path of the secret,
//! `RO/rel-link` -> `../outside/secret.txt`, `RO/dir-link` -> `../outside`,
//! `RW/out-link` -> `../outside`. `RO/file.txt` is a read-only file.
//!
//! Exit code: the number of escapes (0 when everything was denied).
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::ffi::CString;

extern "C" {
    /// wasi-libc's `symlink(2)`; std's wrapper is not stable on WASI.
    fn symlink(target: *const std::ffi::c_char, link: *const std::ffi::c_char) -> i32;
}

fn symlink_path(target: &str, link: &str) -> std::io::Result<()> {
    let t = CString::new(target)?;
    let l = CString::new(link)?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe { symlink(t.as_ptr(), l.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

struct Prober {
    escaped: u32,
    denied: u32,
}

impl Prober {
    /// Records one attempt. `Ok(what)` means the guest got through.
    fn attempt(&mut self, name: &str, result: std::io::Result<String>) {
        match result {
            Ok(what) => {
                self.escaped += 1;
                println!("ESCAPED {name}: {what}");
            }
            Err(e) => {
                self.denied += 1;
                println!("DENIED {name}: {e}");
            }
        }
    }
}

fn read(p: &str) -> std::io::Result<String> {
    fs::read_to_string(p).map(|s| format!("read {} bytes: {s:?}", s.len()))
}

fn write(p: &str) -> std::io::Result<String> {
    fs::write(p, b"written by escape-prober").map(|_| format!("wrote {p}"))
}

fn list(p: &str) -> std::io::Result<String> {
    let names: Vec<String> = fs::read_dir(p)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    Ok(format!("listed {names:?}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (ro, rw) = match (args.get(1), args.get(2)) {
        (Some(ro), Some(rw)) => (ro.clone(), rw.clone()),
        _ => {
            eprintln!("usage: escape-prober RO RW [HOST_SECRET]");
            std::process::exit(100);
        }
    };
    let host_secret = args.get(3).cloned().unwrap_or_else(|| "/etc/passwd".into());
    let mut p = Prober { escaped: 0, denied: 0 };

    // `..` out of a grant.
    p.attempt("dotdot-read", read(&format!("{ro}/../outside/secret.txt")));
    p.attempt("dotdot-write", write(&format!("{rw}/../escaped.txt")));
    p.attempt("dotdot-list", list(&format!("{ro}/../..")));
    // Absolute paths of the host.
    p.attempt("absolute-host-read", read(&host_secret));
    p.attempt("absolute-etc-passwd", read("/etc/passwd"));
    p.attempt("absolute-proc", read("/proc/self/environ"));
    p.attempt("absolute-write", write("/tmp/berth-escape.txt"));
    // Symlinks the host planted inside the grants, pointing out.
    p.attempt("abs-symlink-read", read(&format!("{ro}/abs-link")));
    p.attempt("rel-symlink-read", read(&format!("{ro}/rel-link")));
    p.attempt("dir-symlink-trailing-slash-list", list(&format!("{ro}/dir-link/")));
    p.attempt("dir-symlink-read-through", read(&format!("{ro}/dir-link/secret.txt")));
    p.attempt("rw-dir-symlink-trailing-slash-write", write(&format!("{rw}/out-link/escaped.txt")));
    p.attempt(
        "rw-dir-symlink-trailing-slash-mkdir",
        fs::create_dir(format!("{rw}/out-link/newdir/")).map(|_| "created dir".into()),
    );
    // Symlinks the guest makes itself, then follows.
    let mk = |target: &str, link: &str| symlink_path(target, link);
    let abs_link = format!("{rw}/mk-abs");
    p.attempt(
        "guest-abs-symlink-read",
        mk(&host_secret, &abs_link).and_then(|_| read(&abs_link)),
    );
    let rel_link = format!("{rw}/mk-rel");
    p.attempt(
        "guest-rel-symlink-read",
        mk("../outside/secret.txt", &rel_link).and_then(|_| read(&rel_link)),
    );
    let rel_w = format!("{rw}/mk-rel-w");
    p.attempt(
        "guest-rel-symlink-write",
        mk("../outside/planted.txt", &rel_w).and_then(|_| write(&rel_w)),
    );
    let dir_link = format!("{rw}/mk-dir");
    p.attempt(
        "guest-dir-symlink-trailing-slash-write",
        mk("..", &dir_link).and_then(|_| write(&format!("{dir_link}/escaped.txt"))),
    );
    let cross = format!("{rw}/mk-cross");
    p.attempt(
        "guest-cross-grant-symlink-write",
        mk("../ro/file.txt", &cross).and_then(|_| write(&cross)),
    );
    // Read-only grant must stay read-only.
    let ro_file = format!("{ro}/file.txt");
    let hl = format!("{rw}/hardlink");
    p.attempt(
        "hardlink-ro-into-rw",
        fs::hard_link(&ro_file, &hl).map(|_| "linked the read-only file into the writable grant".into()),
    );
    p.attempt(
        "truncate-ro-file",
        OpenOptions::new().write(true).truncate(true).open(&ro_file).map(|_| "opened with O_TRUNC".into()),
    );
    p.attempt(
        "append-ro-file",
        OpenOptions::new()
            .append(true)
            .open(&ro_file)
            .and_then(|mut f| f.write_all(b"x"))
            .map(|_| "appended".into()),
    );
    p.attempt("create-in-ro", write(&format!("{ro}/new.txt")));
    p.attempt("mkdir-in-ro", fs::create_dir(format!("{ro}/newdir")).map(|_| "created".into()));
    p.attempt("unlink-ro-file", fs::remove_file(&ro_file).map(|_| "removed".into()));
    p.attempt(
        "symlink-in-ro",
        mk("file.txt", &format!("{ro}/new-link")).map(|_| "created".into()),
    );
    p.attempt(
        "rename-ro-to-rw",
        fs::rename(&ro_file, format!("{rw}/moved.txt")).map(|_| "moved".into()),
    );
    let staged = format!("{rw}/staged.txt");
    p.attempt(
        "rename-rw-into-ro",
        fs::write(&staged, b"x")
            .and_then(|_| fs::rename(&staged, format!("{ro}/staged.txt")))
            .map(|_| "moved".into()),
    );
    p.attempt(
        "set-times-ro-file",
        fs::File::open(&ro_file)
            .and_then(|f| f.set_modified(std::time::SystemTime::UNIX_EPOCH))
            .map(|_| "changed mtime".into()),
    );

    println!("summary escaped={} denied={}", p.escaped, p.denied);
    std::process::exit(p.escaped.min(99) as i32);
}
