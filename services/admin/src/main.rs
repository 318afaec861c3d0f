use clap::Parser;
use snakepay_admin::{AdminConfig, Cli, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config: AdminConfig = snakepay_config::load_or_exit("snakepay-admin");
    match run(&config, cli.command, &mut std::io::stdout()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("snakepay-admin: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
