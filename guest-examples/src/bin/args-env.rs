//! Prints its arguments and environment, then exits with the code given by
//! `--exit N` (default 0). Used to check that args, env and exit codes
//! round-trip exactly.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    for (i, a) in args.iter().enumerate() {
        println!("arg[{i}]={a}");
    }
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    for (k, v) in &env {
        println!("env {k}={v}");
    }
    match std::env::current_dir() {
        Ok(d) => println!("cwd={}", d.display()),
        Err(e) => println!("cwd-error={e}"),
    }
    let code = args
        .windows(2)
        .find(|w| w[0] == "--exit")
        .map(|w| w[1].parse::<i32>().expect("--exit takes an integer"))
        .unwrap_or(0);
    std::process::exit(code);
}
