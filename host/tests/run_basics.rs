//! `berth run` of modules and components: output, args, env, exit codes,
//! named exports.
mod common;
use common::{guests, Berth};

#[test]
fn hello_p1_module() {
    let out = Berth::new().run(&["run", guests::HELLO_P1]);
    out.expect_code(0);
    assert_eq!(out.stdout, "hello from a berth guest (p1 module)\n");
}

#[test]
fn hello_p2_component() {
    let out = Berth::new().run(&["run", guests::HELLO_P2]);
    out.expect_code(0);
    assert_eq!(out.stdout, "hello from a berth guest (p2 component)\n");
}

#[test]
fn args_env_and_exit_codes_round_trip_p1() {
    let b = Berth::new();
    let out = b.run(&["run", "-e", "GREETING=hi there", "-e", "EMPTY=", guests::ARGS_ENV_P1, "a", "b c", "--exit", "42"]);
    out.expect_code(42);
    let want = format!("arg[0]={}\narg[1]=a\narg[2]=b c\narg[3]=--exit\narg[4]=42\nenv EMPTY=\nenv GREETING=hi there\n", guests::ARGS_ENV_P1);
    assert!(out.stdout.starts_with(&want), "got:\n{}", out.stdout);
    for code in ["0", "1", "7", "125"] {
        b.run(&["run", guests::ARGS_ENV_P1, "--exit", code]).expect_code(code.parse().unwrap());
    }
}

#[test]
fn no_host_environment_leaks_into_the_guest() {
    let out = Berth::new().cmd().env("BERTH_SECRET_TOKEN", "s3cret").args(["run", guests::ARGS_ENV_P1]).output().unwrap();
    let out = common::Out::from(out);
    out.expect_code(0);
    assert!(!out.stdout.contains("env "), "guest saw host env:\n{}", out.stdout);
    // `-e NAME` passes one host variable on purpose
    let out = Berth::new().cmd().env("BERTH_SECRET_TOKEN", "s3cret").args(["run", "-e", "BERTH_SECRET_TOKEN", guests::ARGS_ENV_P1]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("env BERTH_SECRET_TOKEN=s3cret"));
}

#[test]
fn args_env_and_exit_status_p2() {
    let b = Berth::new();
    let out = b.run(&["run", "-e", "K=V", guests::ARGS_ENV_P2, "x", "y"]);
    out.expect_code(0);
    assert!(out.stdout.contains("arg[1]=x\narg[2]=y\nenv K=V\n"), "{}", out.stdout);
    // Rust std on wasip2 reports failure as status 1
    b.run(&["run", guests::ARGS_ENV_P2, "--exit", "3"]).expect_code(1);
}

#[test]
fn named_exports() {
    let b = Berth::new();
    let answer = format!("{}#answer", guests::WAT_EXPORTS);
    assert_eq!(b.run(&["run", &answer]).expect_code(0).stdout, "42\n");
    let add = format!("{}#add", guests::WAT_EXPORTS);
    assert_eq!(b.run(&["run", &add, "40", "2"]).expect_code(0).stdout, "42\n");
    b.run(&["run", &add, "1"]).expect_berth_error(&["add", "takes 2 argument(s), 1 given"]);
    b.run(&["run", &add, "1", "two"]).expect_berth_error(&["\"two\"", "i32"]);
    let nope = format!("{}#nope", guests::WAT_EXPORTS);
    b.run(&["run", &nope]).expect_berth_error(&["no export \"nope\"", "answer", "add"]);
    b.run(&["run", guests::WAT_EXPORTS]).expect_berth_error(&["no export \"_start\"", "#NAME"]);
}
