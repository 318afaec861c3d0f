//! Validates a platform configuration (the file named by `SNAKEPAY_CONFIG`
//! plus `SNAKEPAY_…` overrides) the way the services will at start-up, so a
//! bad value is caught before a deployment rather than by a crash loop.
//! Exits 0 when valid, 64 with the key at fault otherwise.

use snakepay_config::sections::PlatformConfig;

fn main() {
    let config: PlatformConfig = snakepay_config::load_or_exit("snakepay-config-check");
    eprintln!(
        "snakepay-config-check: configuration valid (region {} #{}, {} shard(s))",
        config.region.code,
        config.region.number,
        config.database.shard_urls.len()
    );
}
