use clap::Parser;
use snakepay_admin::{AdminConfig, Cli, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config: AdminConfig = snakepay_config::load_or_exit("snakepay-admin");
    let error_exit_code = cli.command.error_exit_code();
    match run(&config, cli.command, &mut std::io::stdout()).await {
        Ok(finished) => std::process::ExitCode::from(finished.exit_code()),
        Err(error) => {
            eprintln!("snakepay-admin: {error:#}");
            std::process::ExitCode::from(error_exit_code)
        }
    }
}
