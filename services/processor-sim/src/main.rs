//! The `snakepay-processor-sim` binary: loads the configuration, sets up
//! logging and runs the simulator until SIGTERM or SIGINT.

use snakepay_processor_sim::SimConfig;

const SERVICE: &str = "snakepay-processor-sim";

#[tokio::main]
async fn main() {
    let config: SimConfig = snakepay_config::load_or_exit(SERVICE);
    snakepay_telemetry::init_logging(&config.telemetry);
    if let Err(error) = snakepay_processor_sim::run(config).await {
        tracing::error!(error = format!("{error:#}"), "{SERVICE} failed");
        std::process::exit(1);
    }
}
