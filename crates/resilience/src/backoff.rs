//! Retry pauses.

/// "Equal jitter": half the capped exponential delay (`initial_ms` doubled
/// per failure after the first, at most `max_ms`) plus a random part of the
/// other half, so clients that failed together do not retry together and
/// never retry with no pause at all.
pub fn equal_jitter_backoff_ms(initial_ms: u64, max_ms: u64, failures: u32) -> u64 {
    let exponent = failures.saturating_sub(1).min(20);
    let ceiling = initial_ms.saturating_mul(1_u64 << exponent).min(max_ms);
    let half = ceiling / 2;
    let mut random = [0_u8; 8];
    let jitter = match getrandom::fill(&mut random) {
        Ok(()) => u64::from_le_bytes(random) % (half + 1),
        Err(_) => half,
    };
    half + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_is_capped_and_never_below_half() {
        for failures in 1..40 {
            let ms = equal_jitter_backoff_ms(100, 10_000, failures);
            let ceiling = (100_u64 << (failures - 1).min(20)).min(10_000);
            assert!(ms <= ceiling && ms >= ceiling / 2, "{failures}: {ms}");
        }
    }
}
