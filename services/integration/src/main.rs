//! The integration service's binary: configuration, then [`run`].

use snakepay_integration::{IntegrationConfig, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: IntegrationConfig = snakepay_config::load_or_exit("integration");
    run(config).await
}
