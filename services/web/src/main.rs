use snakepay_web::{WebConfig, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config: WebConfig = snakepay_config::load_or_exit("snakepay-web");
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("snakepay-web: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
