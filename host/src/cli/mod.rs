//! `berth` command-line interface (clap derive).
mod compile;
mod image;
mod install;
mod logging;
mod native;
mod registry;
mod run;
mod serve;
mod size;

use clap::{Parser, Subcommand};

/// Exit status when berth itself fails (as docker and podman use it).
pub const EXIT_BERTH_ERROR: i32 = 125;

#[derive(Parser, Debug)]
#[command(name = "berth", version, about = "Run WebAssembly modules and components as capability-scoped containers")]
struct Cli {
    /// Log output format (filter with BERTH_LOG, e.g. BERTH_LOG=debug).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a wasm module or component, an imported image, or an OCI bundle.
    Run(run::RunArgs),
    /// Serve a wasi:http component over HTTP, a fresh instance per request.
    Serve(serve::ServeArgs),
    /// Build, import, list and remove OCI images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Register berth with a container runtime (containerd).
    #[command(subcommand)]
    Install(install::InstallCommand),
    /// Precompile modules into the cache (or to a file with -o).
    Compile(compile::CompileArgs),
}

/// Runs the command line; returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BERTH_ERROR } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    logging::init(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Compile(args) => compile::compile(args),
        Command::Image(cmd) => image::image(cmd),
        Command::Serve(args) => serve::serve(args),
        Command::Install(cmd) => install::install(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!(error = ?e, "command failed");
            eprintln!("berth: error: {}", crate::error::chain(&*e));
            EXIT_BERTH_ERROR
        }
    }
}
