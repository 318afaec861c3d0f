//! The `snakepay-bench` binary: parses its arguments and runs the benchmark
//! (the library does the work, so tests can drive it too).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = snakepay_bench::Args::parse();
    match snakepay_bench::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("snakepay-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
