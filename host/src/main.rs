//! The `berth` command. Exit status: the guest's own code; 134 when the
//! guest traps; 128+N when stopped by signal N (130 SIGINT, 143 SIGTERM);
//! 124 when its timeout runs out; 125 when berth itself fails (bad flags,
//! bad input) before or instead of running the guest.
fn main() {
    // Re-executed as the helper (see berth_host::helper).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(berth_host::helper::ARG) {
        std::process::exit(berth_host::helper_main::main(&args[2..]));
    }
    std::process::exit(berth_host::cli::main());
}
