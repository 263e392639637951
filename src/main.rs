use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = imageql::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("imageql: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(imageql::cli::run(cli))
}
