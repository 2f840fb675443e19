//! The helper process's entry point (`argv[1]` = [`crate::helper::ARG`]):
//! what berth's binaries run instead of their own `main` when re-executed
//! as the helper. Single-threaded until the verb says otherwise.
//!
//! - `create`, `exec`, `start`, `delete`: native containers
//!   ([`crate::native::helper_verb`]); prints the new pid, if any.
//! - `compile KIND POOL_INSTANCES MAX_MEMORY_BYTES`: compiles wasm
//!   ([`crate::wasm::load::compile_main`]).
//! - `wasm ID PLAN_FILE STDIN STDOUT STDERR`: runs a wasm container, as
//!   the shim planned it, to its end under its `process.user`
//!   ([`crate::wasm::worker`]); exits with its status.
//!
//! On failure: one line on stderr and exit status 1 (`compile` has its own
//! statuses).
use crate::helper::Verb;
use std::path::Path;

pub fn main(args: &[String]) -> i32 {
    let (verb, rest) = match args.split_first().map(|(v, rest)| (Verb::parse(v), rest)) {
        Some((Some(v), rest)) => (v, rest),
        _ => {
            eprintln!("berth helper: unknown verb in {args:?}");
            return 1;
        }
    };
    match verb {
        Verb::Compile => crate::wasm::load::compile_main(rest),
        Verb::Wasm => {
            let [id, plan, i, o, e] = rest else {
                eprintln!("berth helper: usage: wasm ID PLAN_FILE STDIN STDOUT STDERR (got {rest:?})");
                return 1;
            };
            crate::wasm::worker::run_plan(id, Path::new(plan), [i, o, e])
        }
        Verb::Create | Verb::Exec | Verb::Start | Verb::Delete => {
            // libcontainer reports why a container could not be set up
            // through tracing: its errors go to stderr, which the caller
            // reads.
            let filter = std::env::var("BERTH_LOG").unwrap_or_else(|_| "error".into());
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .without_time()
                .try_init();
            match crate::native::helper_verb(verb, rest) {
                Ok(pid) => {
                    if let Some(pid) = pid {
                        println!("{pid}");
                    }
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            }
        }
    }
}
