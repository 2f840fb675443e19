//! Bad input gets a one-line error naming the object and the fix (exit
//! 125, no panic); the precompile cache is used and never trusted blindly.
mod common;
use common::{guests, Berth};

#[test]
fn not_wasm_malformed_missing_oversize() {
    let t = tempfile::tempdir().unwrap();
    let b = Berth::new();
    let elf = t.path().join("native.bin");
    common::write(&elf, b"\x7fELF\x02\x01\x01\0rest-of-binary");
    b.run(&["run", elf.to_str().unwrap()]).expect_berth_error(&["native.bin", "is not WebAssembly", "native ELF"]);
    let text = t.path().join("notes.txt");
    common::write(&text, "just some text");
    b.run(&["run", text.to_str().unwrap()]).expect_berth_error(&["notes.txt", "is not WebAssembly"]);
    let bad = t.path().join("bad.wasm");
    common::write(&bad, b"\0asm\x01\0\0\0\x01\xff\xff\xff");
    b.run(&["run", bad.to_str().unwrap()]).expect_berth_error(&["bad.wasm", "is not valid WebAssembly"]);
    let bad_wat = t.path().join("bad.wat");
    common::write(&bad_wat, "(module (func (export \"_start\") i32.add))");
    b.run(&["run", bad_wat.to_str().unwrap()]).expect_berth_error(&["bad.wat", "not valid WebAssembly"]);
    b.run(&["run", "/no/such/module.wasm"]).expect_berth_error(&["/no/such/module.wasm", "No such file"]);
    b.run(&["run", t.path().to_str().unwrap()]).expect_berth_error(&["not a regular file"]);
    b.run(&["run", "--max-module-size", "1KiB", guests::HELLO_P1]).expect_berth_error(&["hello.wasm", "module size limit", "--max-module-size"]);
}

#[test]
fn bad_flags() {
    let b = Berth::new();
    b.run(&["run"]).expect_berth_error(&["no module given"]);
    b.run(&["run", "--dir", "/nonexistent-dir:/x", guests::HELLO_P1]).expect_berth_error(&["/nonexistent-dir", "not usable"]);
    b.run(&["run", "--dir", "/tmp:relative", guests::HELLO_P1]).expect_berth_error(&["--dir", "absolute"]);
    b.run(&["run", "--timeout", "soon", guests::HELLO_P1]).expect_berth_error(&["--timeout", "soon"]);
    b.run(&["run", "-e", "=x", guests::HELLO_P1]).expect_berth_error(&["--env", "=x"]);
    let out = b.run(&["run", "--no-such-flag", guests::HELLO_P1]);
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(out.stderr.contains("--no-such-flag"));
}

#[test]
fn precompiled_input_needs_opt_in() {
    let t = tempfile::tempdir().unwrap();
    let cwasm = t.path().join("hello.cwasm");
    let b = Berth::new();
    b.run(&["compile", guests::HELLO_P1, "-o", cwasm.to_str().unwrap()]).expect_code(0);
    b.run(&["run", cwasm.to_str().unwrap()]).expect_berth_error(&["hello.cwasm", "precompiled", "--allow-precompiled"]);
    let out = b.run(&["run", "--allow-precompiled", cwasm.to_str().unwrap()]);
    assert_eq!(out.expect_code(0).stdout, "hello from a berth guest (p1 module)\n");
    // corrupt precompiled input is refused, not executed
    let mut bytes = std::fs::read(&cwasm).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&cwasm, bytes).unwrap();
    let out = b.run(&["run", "--allow-precompiled", cwasm.to_str().unwrap()]);
    assert_eq!(out.code, 125, "{}", out.stderr);
}

fn debug_run(b: &Berth, module: &str) -> common::Out {
    common::Out::from(b.cmd().env("BERTH_LOG", "berth_host=debug").args(["run", module]).output().unwrap())
}

#[test]
fn second_run_loads_from_cache() {
    let b = Berth::new();
    let first = debug_run(&b, guests::HELLO_P2);
    first.expect_code(0);
    assert!(first.stderr.contains("compiled"), "{}", first.stderr);
    assert!(!first.stderr.contains("loaded precompiled code from cache"));
    let second = debug_run(&b, guests::HELLO_P2);
    second.expect_code(0);
    assert!(second.stderr.contains("loaded precompiled code from cache"), "{}", second.stderr);
    assert!(!second.stderr.contains(" compiled "), "second run compiled again: {}", second.stderr);
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn berth_compile_fills_the_cache() {
    let b = Berth::new();
    let out = b.run(&["compile", guests::HELLO_P1, guests::WAT_TRAP]);
    out.expect_code(0);
    assert!(out.stdout.contains("compiled"), "{}", out.stdout);
    let run = debug_run(&b, guests::HELLO_P1);
    assert!(run.stderr.contains("loaded precompiled code from cache"), "{}", run.stderr);
    assert!(b.run(&["compile", guests::HELLO_P1]).stdout.contains("already cached"));
}

#[test]
fn corrupt_cache_entry_is_recompiled() {
    let b = Berth::new();
    b.run(&["compile", guests::HELLO_P1]).expect_code(0);
    let entries = entries(&b);
    assert_eq!(entries.len(), 1);
    // flip bytes in the middle of the machine code
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&entries[0], bytes).unwrap();
    let run = debug_run(&b, guests::HELLO_P1);
    assert_eq!(run.expect_code(0).stdout, "hello from a berth guest (p1 module)\n");
    assert!(run.stderr.contains("corrupt precompile cache entry"), "{}", run.stderr);
    assert!(debug_run(&b, guests::HELLO_P1).stderr.contains("loaded precompiled code from cache"));
}

#[test]
fn json_logs() {
    let b = Berth::new();
    let out = common::Out::from(b.cmd().env("BERTH_LOG", "debug").args(["--log-format", "json", "run", guests::HELLO_P1]).output().unwrap());
    out.expect_code(0);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(!lines.is_empty());
    for l in lines {
        assert!(l.starts_with('{') && l.ends_with('}') && l.contains("\"level\""), "not a JSON log line: {l}");
    }
}

#[test]
fn fifo_or_device_as_module_is_refused_without_hanging() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("pipe.wasm");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let b = Berth::new();
    for module in [fifo.to_str().unwrap(), "/dev/zero"] {
        let mut child = b.cmd().args(["run", module]).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let t0 = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > std::time::Duration::from_secs(20) {
                child.kill().unwrap();
                panic!("berth hung opening {module}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        common::Out::from(child.wait_with_output().unwrap()).expect_berth_error(&[module, "not a regular file"]);
    }
}

#[test]
fn compiling_precompiled_code_says_so() {
    let t = tempfile::tempdir().unwrap();
    let cwasm = t.path().join("hello.cwasm");
    let b = Berth::new();
    b.run(&["compile", guests::HELLO_P1, "-o", cwasm.to_str().unwrap()]).expect_code(0);
    let again = t.path().join("again.cwasm");
    b.run(&["compile", cwasm.to_str().unwrap(), "-o", again.to_str().unwrap()]).expect_berth_error(&[
        "hello.cwasm",
        "precompiled wasmtime code",
        "--allow-precompiled",
    ]);
    assert!(!again.exists());
}

/// The `.cwasm` entries in `b`'s cache.
fn entries(b: &Berth) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(b.cache_dir()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "cwasm")).collect()
}

#[test]
fn code_planted_in_a_cache_others_can_write_is_not_run() {
    use std::os::unix::fs::PermissionsExt;
    let b = Berth::new();
    b.run(&["compile", guests::HELLO_P1]).expect_code(0);
    let hello = entries(&b).pop().unwrap();
    b.run(&["compile", guests::ARGS_ENV_P1]).expect_code(0);
    let other = entries(&b).into_iter().find(|p| *p != hello).unwrap();
    // Another user, given a cache others can write, plants the other
    // module's code (with its matching sidecar) under hello's name.
    std::fs::set_permissions(b.cache_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy(&other, &hello).unwrap();
    std::fs::copy(other.with_extension("sha256"), hello.with_extension("sha256")).unwrap();
    let run = b.run(&["run", guests::HELLO_P1]);
    assert_eq!(run.expect_code(0).stdout, "hello from a berth guest (p1 module)\n", "planted code ran");
    assert!(run.stderr.contains("precompile cache not used") && run.stderr.contains("chmod go-w"), "{}", run.stderr);
}

#[test]
fn a_state_root_under_another_users_directory_gets_no_cache() {
    let t = tempfile::tempdir().unwrap();
    // As a /tmp/.local made first by someone else would be (HOME unset).
    let theirs = t.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
    let root = theirs.join("berth");
    let run = |args: &[&str]| common::Out::from(Berth::new().cmd().env("BERTH_ROOT", &root).env("BERTH_LOG", "berth_host=debug").args(args).output().unwrap());
    run(&["run", guests::HELLO_P1]).expect_code(0);
    let second = run(&["run", guests::HELLO_P1]);
    assert_eq!(second.expect_code(0).stdout, "hello from a berth guest (p1 module)\n");
    assert!(!second.stderr.contains("loaded precompiled code from cache"), "{}", second.stderr);
    assert!(second.stderr.contains("uid 4242") && second.stderr.contains("chown"), "{}", second.stderr);
}

/// The wasm worker (the shim's process for a guest of another user)
/// reports why it could not run its plan with every cause, on the guest's
/// stderr: a module gone since create names the file and the io error.
#[test]
fn a_worker_whose_module_is_gone_says_which_and_why() {
    use berth_host::plan::{Entrypoint, ModuleSource, RunPlan};
    let t = tempfile::tempdir().unwrap();
    let gone = t.path().join("gone.wasm");
    let plan = RunPlan { entrypoint: Entrypoint { source: ModuleSource::File(gone), export: None }, ..Default::default() };
    let plan_path = t.path().join("plan.json");
    berth_host::wasm::worker::write_plan(&plan, &plan_path).unwrap();
    let stderr = t.path().join("stderr");
    let o = std::process::Command::new(common::berth_bin())
        .args([berth_host::helper::ARG, "wasm", "c1"])
        .arg(&plan_path)
        .args(["", ""])
        .arg(&stderr)
        .output()
        .unwrap();
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(o.status.code(), Some(125), "{said}");
    assert!(said.contains("berth: c1: opening module") && said.contains("gone.wasm"), "{said}");
    assert!(said.contains("No such file or directory"), "the io error, the cause, is said: {said}");
}
