//! Idempotency keys: one stored answer per key, and one worker per key at a
//! time.
//!
//! A request first [`claim`](Keys::claim)s its key. If the key is done, the
//! stored answer is replayed (or 422 if the request differs); if another
//! request holds it, this one waits for that request to finish and then looks
//! again; otherwise it gets a [`Claim`] and does the work. A claim dropped
//! without [`Keys::complete`] (a failure before the work) frees the key, so a
//! retry does the work for real.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;

use crate::model::StoredResponse;

/// The longest key we accept (Stripe's limit too).
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;
/// How long a request waits for another request with the same key before it
/// gives up with 409. The slow-approval card holds a key for `slow_ms`.
pub const IN_PROGRESS_WAIT_MS: u64 = 10_000;

/// Whether `key` is an acceptable idempotency key: 1–255 printable ASCII
/// characters (it appears in URLs and logs).
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_MAX_CHARS
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Builds request fingerprints: HMAC-SHA256 under a key derived from the API
/// key, so the journal holds nothing a card number could be recovered from
/// by trying all numbers with a given last four.
#[derive(Clone)]
pub struct Fingerprinter {
    key: Vec<u8>,
}

impl Fingerprinter {
    pub fn new(api_key: &str) -> Fingerprinter {
        let mut key = b"snakepay-processor-sim request fingerprint v1:".to_vec();
        key.extend_from_slice(api_key.as_bytes());
        Fingerprinter { key }
    }

    /// Fingerprints a request given as its fields, in a fixed order. Each
    /// field is length-prefixed so `("ab", "c")` and `("a", "bc")` differ.
    pub fn fingerprint(&self, fields: &[&[u8]]) -> String {
        // HMAC accepts keys of any length; this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        for field in fields {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

enum Slot {
    InProgress {
        fingerprint: String,
        finished: watch::Receiver<()>,
    },
    Done(Arc<StoredResponse>),
}

/// The answer to a claim.
pub enum ClaimResult {
    /// Do the work; complete or drop the claim.
    Claimed(Claim),
    /// Done before with the same request: replay this.
    Replay(Arc<StoredResponse>),
    /// Done or in progress with a different request.
    Mismatch,
    /// Another request with this key did not finish in time.
    Busy,
}

#[derive(Clone, Default)]
pub struct Keys {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

/// The right to do the work for one key. Dropping it without completing
/// frees the key and wakes the waiters.
pub struct Claim {
    keys: Keys,
    key: String,
    // Dropped with the claim: closing the channel is what wakes waiters.
    _finished: watch::Sender<()>,
    completed: bool,
}

impl Claim {
    #[cfg(test)]
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.completed {
            let mut slots = self.keys.lock();
            if matches!(slots.get(&self.key), Some(Slot::InProgress { .. })) {
                slots.remove(&self.key);
            }
        }
    }
}

impl Keys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads an answer read back from the journal.
    pub fn restore(&self, key: String, response: StoredResponse) {
        self.lock().insert(key, Slot::Done(Arc::new(response)));
    }

    /// The stored answer for `key`, if the work was done.
    pub fn get(&self, key: &str) -> Option<Arc<StoredResponse>> {
        match self.lock().get(key) {
            Some(Slot::Done(stored)) => Some(Arc::clone(stored)),
            _ => None,
        }
    }

    /// Whether a request holding `key` is still working on it.
    pub fn is_in_progress(&self, key: &str) -> bool {
        matches!(self.lock().get(key), Some(Slot::InProgress { .. }))
    }

    pub async fn claim(&self, key: &str, fingerprint: &str) -> ClaimResult {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(IN_PROGRESS_WAIT_MS);
        loop {
            let mut finished = {
                let mut slots = self.lock();
                match slots.get(key) {
                    Some(Slot::Done(stored)) => {
                        return if stored.fingerprint == fingerprint {
                            ClaimResult::Replay(Arc::clone(stored))
                        } else {
                            ClaimResult::Mismatch
                        };
                    }
                    Some(Slot::InProgress {
                        fingerprint: holder,
                        finished,
                    }) => {
                        if holder != fingerprint {
                            return ClaimResult::Mismatch;
                        }
                        finished.clone()
                    }
                    None => {
                        let (sender, receiver) = watch::channel(());
                        slots.insert(
                            key.to_owned(),
                            Slot::InProgress {
                                fingerprint: fingerprint.to_owned(),
                                finished: receiver,
                            },
                        );
                        return ClaimResult::Claimed(Claim {
                            keys: self.clone(),
                            key: key.to_owned(),
                            _finished: sender,
                            completed: false,
                        });
                    }
                }
            };
            // Nothing is ever sent: `changed` returns when the holder drops
            // its sender, i.e. completes or abandons the claim.
            let woke = tokio::time::timeout_at(deadline, finished.changed()).await;
            if woke.is_err() {
                return ClaimResult::Busy;
            }
        }
    }

    /// Stores the answer for a claimed key; waiters replay it.
    pub fn complete(&self, mut claim: Claim, response: StoredResponse) {
        claim.completed = true;
        self.lock()
            .insert(claim.key.clone(), Slot::Done(Arc::new(response)));
        // Dropping the claim now closes the channel and wakes the waiters.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OperationKind;

    fn stored(fingerprint: &str) -> StoredResponse {
        StoredResponse {
            kind: OperationKind::Void,
            fingerprint: fingerprint.to_owned(),
            status: 200,
            body: serde_json::json!({"ok": true}),
            authorization_id: None,
            at: 0,
        }
    }

    #[tokio::test]
    async fn waiters_replay_the_holders_answer() {
        let keys = Keys::default();
        let ClaimResult::Claimed(claim) = keys.claim("k", "f").await else {
            panic!("first claim");
        };
        let waiter = {
            let keys = keys.clone();
            tokio::spawn(async move { keys.claim("k", "f").await })
        };
        assert!(matches!(
            keys.claim("k", "other").await,
            ClaimResult::Mismatch
        ));
        keys.complete(claim, stored("f"));
        assert!(matches!(waiter.await.unwrap(), ClaimResult::Replay(_)));
        assert!(matches!(
            keys.claim("k", "other").await,
            ClaimResult::Mismatch
        ));
    }

    #[tokio::test]
    async fn an_abandoned_claim_frees_the_key() {
        let keys = Keys::default();
        let ClaimResult::Claimed(claim) = keys.claim("k", "f").await else {
            panic!("first claim");
        };
        let waiter = {
            let keys = keys.clone();
            tokio::spawn(async move { keys.claim("k", "f").await })
        };
        drop(claim);
        let ClaimResult::Claimed(second) = waiter.await.unwrap() else {
            panic!("the waiter should get the key");
        };
        assert_eq!(second.key(), "k");
    }

    #[test]
    fn fingerprints_separate_fields() {
        let f = Fingerprinter::new("key");
        assert_ne!(f.fingerprint(&[b"ab", b"c"]), f.fingerprint(&[b"a", b"bc"]));
        assert_eq!(f.fingerprint(&[b"x"]), f.fingerprint(&[b"x"]));
        assert_ne!(
            Fingerprinter::new("other").fingerprint(&[b"x"]),
            f.fingerprint(&[b"x"])
        );
    }
}
