//! The `snakepay-processor-sim` binary: loads the configuration, sets up
//! logging and runs the simulator until SIGTERM or SIGINT.

use snakepay_config::sections::{LogFormat, TelemetryConfig};
use snakepay_processor_sim::SimConfig;
use tracing_subscriber::EnvFilter;

const SERVICE: &str = "snakepay-processor-sim";

fn init_logging(telemetry: &TelemetryConfig) {
    // The level was validated with the configuration; fall back to `info`
    // rather than run blind.
    let filter =
        EnvFilter::try_new(&telemetry.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match telemetry.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

#[tokio::main]
async fn main() {
    let config: SimConfig = snakepay_config::load_or_exit(SERVICE);
    init_logging(&config.telemetry);
    if let Err(error) = snakepay_processor_sim::run(config).await {
        tracing::error!(error = format!("{error:#}"), "{SERVICE} failed");
        std::process::exit(1);
    }
}
