//! Whether what a client saw agrees with how a payment ended.
//!
//! A client that got a response saw the intent in some status; later the
//! intent may only have moved along the PaymentIntent state machine
//! (crates/domain/src/payment_intent.rs). So the final status must be
//! reachable from every status the client saw, and, read in order, each
//! status the client saw must be reachable from the one before. A client that
//! saw `succeeded` and a final `requires_payment_method`, or two intents
//! under one idempotency key, is a violation.

use std::collections::BTreeSet;

use snakepay_domain::payment_intent::PaymentIntentStatus;

/// The transitions of the state machine, each through one command or
/// processor outcome (see the diagram in crates/domain's payment_intent.rs).
/// `authorized` tells the two kinds of `processing` apart: a confirmation at
/// the processor (it may end anywhere) and a capture or cancel of an
/// authorization (it ends `succeeded`, `canceled`, or back in
/// `requires_capture` when the processor refused).
pub fn next_statuses(
    from: PaymentIntentStatus,
    authorized: bool,
) -> &'static [PaymentIntentStatus] {
    use PaymentIntentStatus as S;
    match from {
        S::RequiresPaymentMethod => &[S::RequiresConfirmation, S::Processing, S::Canceled],
        S::RequiresConfirmation => &[S::Processing, S::Canceled, S::RequiresPaymentMethod],
        S::Processing if authorized => &[S::Succeeded, S::Canceled, S::RequiresCapture],
        S::Processing => &[
            S::Succeeded,
            S::RequiresCapture,
            S::RequiresAction,
            S::RequiresPaymentMethod,
            S::Canceled,
        ],
        // The 3-D Secure outcome arrives later and is applied to the intent.
        S::RequiresAction => &[
            S::Processing,
            S::Succeeded,
            S::RequiresCapture,
            S::RequiresPaymentMethod,
            S::Canceled,
        ],
        S::RequiresCapture => &[S::Processing],
        S::Succeeded | S::Canceled => &[],
    }
}

/// Whether `to` can follow `from` (zero or more transitions).
pub fn reachable(from: PaymentIntentStatus, to: PaymentIntentStatus) -> bool {
    let start = (from, from == PaymentIntentStatus::RequiresCapture);
    let mut seen = BTreeSet::from([(start.0 as u8, start.1)]);
    let mut frontier = vec![start];
    while let Some((status, authorized)) = frontier.pop() {
        if status == to {
            return true;
        }
        for next in next_statuses(status, authorized) {
            // Once authorized, an intent stays so until it is final.
            let next_authorized = authorized || *next == PaymentIntentStatus::RequiresCapture;
            if seen.insert((*next as u8, next_authorized)) {
                frontier.push((*next, next_authorized));
            }
        }
    }
    false
}

/// One answer a client got: the intent and its status as the body showed
/// them (a 402's body carries the intent in `error.payment_intent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub intent_id: String,
    pub status: PaymentIntentStatus,
    /// For the report: which request and HTTP status.
    pub what: String,
}

/// A client's observations of one payment that contradict its final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inconsistency {
    pub intent_id: String,
    pub reason: String,
}

/// Checks what one client saw of one payment (in the order it saw it)
/// against each intent's final status, `final_status(intent_id)` (`None`:
/// the intent does not exist).
pub fn check_payment(
    seen: &[Seen],
    final_status: impl Fn(&str) -> Option<PaymentIntentStatus>,
) -> Vec<Inconsistency> {
    let mut problems = Vec::new();
    let ids: BTreeSet<&str> = seen.iter().map(|s| s.intent_id.as_str()).collect();
    if ids.len() > 1 {
        problems.push(Inconsistency {
            intent_id: ids.iter().copied().collect::<Vec<_>>().join(","),
            reason: format!("one payment's requests named {} intents", ids.len()),
        });
    }
    for pair in seen.windows(2) {
        if let [before, after] = pair
            && before.intent_id == after.intent_id
            && !reachable(before.status, after.status)
        {
            problems.push(Inconsistency {
                intent_id: after.intent_id.clone(),
                reason: format!(
                    "saw {} ({}) and then {} ({})",
                    before.status, before.what, after.status, after.what
                ),
            });
        }
    }
    for id in &ids {
        let Some(end) = final_status(id) else {
            problems.push(Inconsistency {
                intent_id: (*id).to_owned(),
                reason: "a client saw it, but it does not exist".to_owned(),
            });
            continue;
        };
        for seen in seen.iter().filter(|s| s.intent_id == *id) {
            if !reachable(seen.status, end) {
                problems.push(Inconsistency {
                    intent_id: (*id).to_owned(),
                    reason: format!(
                        "saw {} ({}), but it ended {end}, which cannot follow",
                        seen.status, seen.what
                    ),
                });
            }
        }
    }
    problems
}

/// Every intent of the region and its status now, read from each shard.
pub async fn final_statuses(
    store: &snakepay_store::Store,
) -> anyhow::Result<std::collections::BTreeMap<String, PaymentIntentStatus>> {
    let mut statuses = std::collections::BTreeMap::new();
    for (_, pool) in store.shards() {
        let rows: Vec<(String, String)> = sqlx::query_as("select id, status from payment_intents")
            .fetch_all(pool)
            .await?;
        for (id, status) in rows {
            let status = PaymentIntentStatus::parse(&status)
                .ok_or_else(|| anyhow::anyhow!("{id}: unknown status {status}"))?;
            statuses.insert(id, status);
        }
    }
    Ok(statuses)
}

/// Waits until no intent is `processing` (every payment has an outcome) and
/// every outbox is drained — the quiet system `verify` expects (a relay
/// may still be in its back-off just after a broker link healed); returns
/// how long that took, or what was still in flight at `deadline`.
pub async fn wait_settled(
    store: &snakepay_store::Store,
    limit: std::time::Duration,
) -> anyhow::Result<Result<std::time::Duration, Vec<String>>> {
    let started = std::time::Instant::now();
    loop {
        let mut in_flight: Vec<String> = match final_statuses(store).await {
            Ok(statuses) => statuses
                .into_iter()
                .filter(|(_, status)| *status == PaymentIntentStatus::Processing)
                .map(|(id, _)| id)
                .collect(),
            // The database may be the dependency that was just restarted.
            Err(error) => vec![format!("(database: {error})")],
        };
        for (shard, pool) in store.shards() {
            let unpublished: Result<i64, _> = sqlx::query_scalar("select count(*) from outbox")
                .fetch_one(pool)
                .await;
            match unpublished {
                Ok(0) => {}
                Ok(rows) => in_flight.push(format!("(shard {shard} outbox: {rows} unpublished)")),
                Err(error) => in_flight.push(format!("(database: {error})")),
            }
        }
        if in_flight.is_empty() {
            return Ok(Ok(started.elapsed()));
        }
        if started.elapsed() > limit {
            return Ok(Err(in_flight));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentIntentStatus as S;

    fn seen(id: &str, status: S) -> Seen {
        Seen {
            intent_id: id.to_owned(),
            status,
            what: "create 200".to_owned(),
        }
    }

    #[test]
    fn final_statuses_lead_nowhere_and_an_authorization_is_never_declined() {
        for status in S::ALL {
            assert!(reachable(status, status));
            if status.is_final() {
                assert!(
                    S::ALL
                        .iter()
                        .all(|to| *to == status || !reachable(status, *to))
                );
            }
        }
        assert!(reachable(S::Processing, S::Succeeded));
        assert!(reachable(S::RequiresCapture, S::Canceled));
        assert!(reachable(S::RequiresPaymentMethod, S::Succeeded));
        assert!(!reachable(S::Succeeded, S::Processing));
        assert!(!reachable(S::RequiresCapture, S::RequiresPaymentMethod));
    }

    #[test]
    fn what_the_state_machine_allows_is_consistent() {
        let observations = [seen("pi_1", S::Processing), seen("pi_1", S::Succeeded)];
        assert!(check_payment(&observations, |_| Some(S::Succeeded)).is_empty());
        let manual = [
            seen("pi_2", S::RequiresCapture),
            seen("pi_2", S::Processing),
        ];
        assert!(check_payment(&manual, |_| Some(S::Succeeded)).is_empty());
        assert!(check_payment(&[], |_| None).is_empty());
    }

    #[test]
    fn a_client_that_saw_success_of_a_payment_that_failed_is_reported() {
        let problems = check_payment(&[seen("pi_1", S::Succeeded)], |_| {
            Some(S::RequiresPaymentMethod)
        });
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].reason.contains("cannot follow"), "{problems:?}");
    }

    #[test]
    fn a_decline_replaced_by_a_success_is_reported_when_seen_out_of_order() {
        let problems = check_payment(
            &[
                seen("pi_1", S::Succeeded),
                seen("pi_1", S::RequiresPaymentMethod),
            ],
            |_| Some(S::RequiresPaymentMethod),
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn two_intents_under_one_key_and_an_intent_that_vanished_are_reported() {
        let problems = check_payment(
            &[seen("pi_1", S::Processing), seen("pi_2", S::Processing)],
            |id| (id == "pi_1").then_some(S::Succeeded),
        );
        let reasons: Vec<&str> = problems.iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(problems.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("2 intents"), "{reasons:?}");
        assert!(reasons[1].contains("does not exist"), "{reasons:?}");
    }
}
