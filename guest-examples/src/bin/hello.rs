//! Prints a greeting naming the WASI level it was built for.
fn main() {
    let level = if cfg!(target_env = "p2") { "p2 component" } else { "p1 module" };
    println!("hello from a berth guest ({level})");
}
