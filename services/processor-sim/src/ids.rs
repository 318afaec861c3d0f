//! Opaque object IDs: a prefix (`auth`, `rf`, `ntf`) and 24 random hex digits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of randomness per ID: 96 bits make collisions a non-issue.
const ID_RANDOM_BYTES: usize = 12;

pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; ID_RANDOM_BYTES];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to unique-but-guessable IDs rather than
        // refusing to work (a test tool, not a security boundary).
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        return format!("{prefix}_{:016x}{count:08x}", nanos as u64);
    }
    format!("{prefix}_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = super::new_id("auth");
        let b = super::new_id("auth");
        assert!(a.starts_with("auth_"));
        assert_eq!(a.len(), "auth_".len() + 24);
        assert_ne!(a, b);
    }
}
