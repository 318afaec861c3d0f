use snakepay_external_api::{ExternalApiConfig, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config: ExternalApiConfig = snakepay_config::load_or_exit("snakepay-external-api");
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("snakepay-external-api: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
