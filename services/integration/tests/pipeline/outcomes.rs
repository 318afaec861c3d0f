//! An authorization outcome commits in one statement, without a row lock,
//! only while the intent is as it was read; what it writes is what the
//! locked path would have written, snapshots of its events included.

use serde_json::Value;
use snakepay_domain::ids::PaymentIntentId;
use snakepay_domain::payment_intent::{
    self, AuthorizationOutcome, IntentCommand, PendingOperation,
};
use snakepay_store::attempts::{AttemptStatus, AuthorizationRecord};
use snakepay_store::effects::{self, EffectContext};
use snakepay_store::events::EventSource;
use snakepay_store::{charges, intents, objects};

use crate::support::{Pipeline, id};

/// The objects of the intent's events of `event_type`.
async fn snapshots(pool: &sqlx::PgPool, object_id: &str, event_type: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "select object from events where object->>'id' = $1 and type = $2 order by created, id",
    )
    .bind(object_id)
    .bind(event_type)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn count(pool: &sqlx::PgPool, sql: &str, intent: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(intent)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn attempt_status(pool: &sqlx::PgPool, intent: &str) -> String {
    sqlx::query_scalar("select status from payment_attempts where payment_intent_id = $1")
        .bind(intent)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_authorization_commits_at_once_only_while_the_intent_is_at_the_version_it_was_read_at() {
    let mut pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    // No integration service: the payment stays in flight for the test to
    // answer by hand.
    pipeline.stop_integration().await;
    let intent_id = id(&pipeline
        .pay(&merchant, "4242424242424242", 1_200, "automatic")
        .await);
    let pool = pipeline.shard_of(&merchant);
    let parsed = PaymentIntentId::parse(&intent_id).unwrap();
    let read = intents::load_by_id(&pool, parsed).await.unwrap().unwrap();
    let Some(PendingOperation::Authorize { attempt, .. }) = read.intent.pending else {
        panic!("not awaiting its authorization: {:?}", read.intent.pending);
    };
    let t = payment_intent::apply(
        &read.intent,
        IntentCommand::AuthorizationResult {
            attempt,
            outcome: AuthorizationOutcome::Approved,
            now: snakepay_store::unix_now(),
        },
    )
    .unwrap();
    let mut after = read.clone();
    after.intent = t.intent;
    let answer = AuthorizationRecord {
        attempt,
        status: AttemptStatus::Approved,
        processor_reference: Some("auth_by_hand"),
        error: None,
    };
    let before = charges::find(
        &pool,
        after.intent.latest_charge.unwrap(),
        merchant.id,
        false,
    )
    .await
    .unwrap()
    .unwrap();
    // What the integration service reads with the intent and its card is
    // that charge, without a read of its own.
    let with_card = intents::load_by_id_with_card(&pool, parsed, attempt)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(with_card.charge.as_ref(), Some(&before));
    assert!(with_card.card.is_some());
    let charge = before
        .after_authorization(
            &intents::IntentRecord {
                version: read.version + 1,
                ..after.clone()
            },
            &answer,
        )
        .unwrap();
    let context = EffectContext {
        source: EventSource {
            merchant_id: merchant.id,
            livemode: false,
            api_version: "2024-06-20",
            request_id: None,
            created: snakepay_store::unix_now(),
        },
        reply_to: None,
        answer_to: None,
        description: "processor outcome",
    };
    let commit = |version: i64| {
        let intent = intents::IntentRecord {
            version,
            ..after.clone()
        };
        let (pool, effects, charge) = (&pool, &t.effects, &charge);
        async move {
            effects::commit_at_once(
                pool,
                &effects::AuthorizationOutcome {
                    intent: &intent,
                    effects,
                    context,
                    attempt: answer,
                    charge: Some(charge),
                    answer: None,
                },
            )
            .await
            .unwrap()
            .map(|committed| committed.version)
        }
    };
    let events =
        "select count(*) from events where object->>'id' = $1 or object->>'payment_intent' = $1";
    let journals = "select count(*) from journals where payment_intent_id = $1";
    let cvcs = "select count(*) from payment_methods m join payment_attempts a
                on a.payment_method_id = m.id
                where a.payment_intent_id = $1 and m.cvc_ciphertext is not null";
    let before = count(&pool, events, &intent_id).await;

    // Someone else changed the intent since it was read: nothing is written.
    assert_eq!(commit(read.version - 1).await, None);
    let status = attempt_status(&pool, &intent_id).await;
    assert_eq!(status, "pending");
    assert_eq!(count(&pool, events, &intent_id).await, before);
    assert_eq!(count(&pool, journals, &intent_id).await, 0);
    assert_eq!(count(&pool, cvcs, &intent_id).await, 1);

    // As read: all of it, in one statement.
    assert_eq!(commit(read.version).await, Some(read.version + 1));
    let now = intents::load_by_id(&pool, parsed).await.unwrap().unwrap();
    assert_eq!(now.intent.status.as_str(), "succeeded");
    assert_eq!(now.version, read.version + 1);
    let status = attempt_status(&pool, &intent_id).await;
    assert_eq!(status, "approved");
    assert_eq!(
        count(&pool, cvcs, &intent_id).await,
        0,
        "the CVC is forgotten"
    );
    assert_eq!(count(&pool, journals, &intent_id).await, 1);
    let charge_id = now.intent.latest_charge.unwrap();
    let read_back = charges::find(&pool, charge_id, merchant.id, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read_back, charge,
        "the charge as computed before the commit"
    );
    assert_eq!(
        snapshots(&pool, &charge_id.to_string(), "charge.succeeded").await,
        [objects::charge(&read_back)]
    );
    assert_eq!(
        snapshots(&pool, &intent_id, "payment_intent.succeeded").await,
        [objects::payment_intent(&now)]
    );
    // Committed once: the same answer again finds the intent moved on.
    assert_eq!(commit(read.version).await, None);
    assert_eq!(count(&pool, journals, &intent_id).await, 1);
    pipeline.discard().await;
}

#[tokio::test]
async fn the_charge_in_an_outcomes_events_is_the_charge_the_api_shows() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let pool = pipeline.shard_of(&merchant);
    for (number, event_type) in [
        ("4242424242424242", "charge.succeeded"),
        ("4000000000000002", "charge.failed"),
        ("4000000000009995", "charge.failed"),
    ] {
        let intent = pipeline.pay(&merchant, number, 700, "automatic").await;
        let intent = pipeline.settled(&merchant, &id(&intent)).await;
        let charge_id = intent["latest_charge"].as_str().unwrap().to_owned();
        let shown = pipeline
            .get(&merchant, &format!("/v1/charges/{charge_id}"))
            .await;
        assert_eq!(
            snapshots(&pool, &charge_id, event_type).await,
            [shown],
            "{number}"
        );
        assert_eq!(
            snapshots(&pool, &id(&intent), intent_event(&intent)).await,
            std::slice::from_ref(&intent),
            "{number}"
        );
    }
    pipeline.finish().await;
}

fn intent_event(intent: &Value) -> &'static str {
    match intent["status"].as_str() {
        Some("succeeded") => "payment_intent.succeeded",
        _ => "payment_intent.payment_failed",
    }
}
