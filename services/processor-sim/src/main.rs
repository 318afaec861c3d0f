//! The `snakepay-processor-sim` binary: loads the configuration, sets up
//! logging and runs the simulator until SIGTERM or SIGINT.

use snakepay_processor_sim::SimConfig;

const SERVICE: &str = "snakepay-processor-sim";

#[tokio::main]
async fn main() {
    let config: SimConfig = snakepay_config::load_or_exit(SERVICE);
    let telemetry = config.telemetry.clone();
    let result = snakepay_telemetry::run_instrumented("processor-sim", &telemetry, async {
        let result = snakepay_processor_sim::run(config).await;
        if let Err(error) = &result {
            tracing::error!(error = format!("{error:#}"), "{SERVICE} failed");
        }
        result
    })
    .await;
    if result.is_err() {
        std::process::exit(1);
    }
}
