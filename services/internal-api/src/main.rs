use snakepay_internal_api::{InternalApiConfig, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config: InternalApiConfig = snakepay_config::load_or_exit("snakepay-internal-api");
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("snakepay-internal-api: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
