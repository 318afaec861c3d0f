//! The waiter registry: which requests of this instance wait for news of
//! which object (an intent or a refund, by ID).
//!
//! A request registers before its transaction commits, so a reply that
//! arrives the moment after the commit is never missed: each object has a
//! counter that every reply bumps, and a waiter sees any bump made after it
//! registered. The latest reply's answer, if it carried one for some
//! request, rides along ([`Waiter::answer_for`]). Entries are removed when their last waiter is dropped —
//! whether the request finished, gave up, or was cancelled by the request
//! timeout or a client that went away — so nothing accumulates under load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use snakepay_bus::reply::ReplyAnswer;
use tokio::sync::watch;

/// The most requests of one instance that may wait at once. Beyond it a
/// request answers as phase 1 left it (`processing`): the clients are told
/// the truth, and the memory of the registry stays bounded.
pub const MAX_WAITERS: usize = 10_000;

#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// Waiters over all slots, for [`MAX_WAITERS`].
    waiters: usize,
}

#[derive(Debug)]
struct Slot {
    wake: watch::Sender<News>,
    waiters: usize,
}

/// What the waiters of an object last heard.
#[derive(Debug, Default)]
struct News {
    /// Bumped by every reply.
    replies: u64,
    /// The final answer the latest reply carried, for the request it names.
    answer: Option<Arc<ReplyAnswer>>,
}

impl Registry {
    /// Waits for news of `object`, or `None` when [`MAX_WAITERS`] already wait.
    pub fn register(self: &Arc<Self>, object: &str) -> Option<Waiter> {
        let mut inner = self.lock();
        if inner.waiters >= MAX_WAITERS {
            return None;
        }
        inner.waiters += 1;
        let slot = inner
            .slots
            .entry(object.to_owned())
            .or_insert_with(|| Slot {
                wake: watch::channel(News::default()).0,
                waiters: 0,
            });
        slot.waiters += 1;
        let wake = slot.wake.subscribe();
        Some(Waiter {
            registry: Arc::clone(self),
            object: object.to_owned(),
            wake,
        })
    }

    /// Wakes every waiter of `object`, with the final answer the reply
    /// carried, if any; false when none waits (the reply was for a request
    /// that already answered, or for another instance's era).
    pub fn wake(&self, object: &str, answer: Option<Arc<ReplyAnswer>>) -> bool {
        let inner = self.lock();
        match inner.slots.get(object) {
            Some(slot) => {
                slot.wake.send_modify(|news| {
                    news.replies = news.replies.wrapping_add(1);
                    news.answer = answer;
                });
                true
            }
            None => false,
        }
    }

    /// How many requests wait now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiters
    }

    /// How many objects are waited for now.
    #[cfg(test)]
    fn objects(&self) -> usize {
        self.lock().slots.len()
    }

    fn deregister(&self, object: &str) {
        let mut inner = self.lock();
        inner.waiters = inner.waiters.saturating_sub(1);
        let empty = match inner.slots.get_mut(object) {
            Some(slot) => {
                slot.waiters = slot.waiters.saturating_sub(1);
                slot.waiters == 0
            }
            None => false,
        };
        if empty {
            inner.slots.remove(object);
        }
    }

    /// The map stays consistent even if a holder panicked: every critical
    /// section is a few counter updates that cannot be left half done.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request's registration; dropping it deregisters.
#[derive(Debug)]
pub struct Waiter {
    registry: Arc<Registry>,
    object: String,
    wake: watch::Receiver<News>,
}

impl Waiter {
    /// Returns once a reply for the object arrived since registration or
    /// since the previous call returned.
    pub async fn woken(&mut self) {
        if self.wake.changed().await.is_err() {
            // The sender lives as long as this registration: cannot happen.
            // Never return, rather than spin; the caller's deadline ends it.
            std::future::pending::<()>().await;
        }
    }

    /// The final answer for `request_id` that the latest reply carried. A
    /// later reply without one replaces it; the caller then reloads, as for
    /// any wake-up.
    pub fn answer_for(&self, request_id: &str) -> Option<Arc<ReplyAnswer>> {
        let news = self.wake.borrow();
        news.answer
            .as_ref()
            .filter(|answer| answer.request_id == request_id)
            .cloned()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.registry.deregister(&self.object);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_reply_that_arrives_before_the_wait_begins_is_not_missed() {
        let registry = Arc::new(Registry::default());
        let mut waiter = registry.register("pi_1").unwrap();
        assert!(registry.wake("pi_1", None));
        tokio::time::timeout(Duration::from_secs(5), waiter.woken())
            .await
            .unwrap();
        // Seen once: the next wait needs a new reply.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiter.woken())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn replies_wake_only_the_waiters_of_their_object() {
        let registry = Arc::new(Registry::default());
        let mut first = registry.register("pi_1").unwrap();
        let mut second = registry.register("pi_1").unwrap();
        let mut other = registry.register("re_1").unwrap();
        assert!(registry.wake("pi_1", None));
        assert!(!registry.wake("pi_unknown", None));
        let wait = Duration::from_secs(5);
        tokio::time::timeout(wait, first.woken()).await.unwrap();
        tokio::time::timeout(wait, second.woken()).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), other.woken())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_replys_answer_reaches_only_the_request_it_names() {
        let registry = Arc::new(Registry::default());
        let mut mine = registry.register("pi_1").unwrap();
        let mut other = registry.register("pi_1").unwrap();
        let answer = ReplyAnswer {
            request_id: "req_mine".into(),
            status: 200,
            body: "{}".into(),
        };
        assert!(registry.wake("pi_1", Some(Arc::new(answer.clone()))));
        let wait = Duration::from_secs(5);
        tokio::time::timeout(wait, mine.woken()).await.unwrap();
        tokio::time::timeout(wait, other.woken()).await.unwrap();
        assert_eq!(mine.answer_for("req_mine").as_deref(), Some(&answer));
        assert_eq!(other.answer_for("req_other"), None);
        // A later reply without an answer is a plain wake-up.
        assert!(registry.wake("pi_1", None));
        tokio::time::timeout(wait, mine.woken()).await.unwrap();
        assert_eq!(mine.answer_for("req_mine"), None);
    }

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let registry = Arc::new(Registry::default());
        let waiters: Vec<Waiter> = (0..100)
            .map(|i| registry.register(&format!("pi_{}", i % 7)).unwrap())
            .collect();
        assert_eq!((registry.waiting(), registry.objects()), (100, 7));
        drop(waiters);
        assert_eq!((registry.waiting(), registry.objects()), (0, 0));
        assert!(!registry.wake("pi_1", None));
    }

    #[test]
    fn registrations_beyond_the_limit_are_refused_until_one_ends() {
        let registry = Arc::new(Registry::default());
        let mut waiters: Vec<Waiter> = (0..MAX_WAITERS)
            .map(|i| registry.register(&format!("pi_{i}")).unwrap())
            .collect();
        assert!(registry.register("pi_more").is_none());
        waiters.pop();
        assert!(registry.register("pi_more").is_some());
    }
}
