//! Operator refunds with maker-checker, the payment's story and the ledger.

use serde_json::json;
use snakepay_internal_api::tokens::Role;
use sqlx::PgPool;

use crate::support::{TestApi, external_api, merchant_with_key, succeeded_payment};

/// Refund commands waiting in the shard's outbox for the integration
/// service, i.e. refunds on their way to the processor.
async fn refund_commands(pool: &PgPool, intent: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from outbox where routing_key = 'command.refund' and payload::text like '%' || $1 || '%'",
    )
    .bind(intent)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn refunds_of(pool: &PgPool, intent: &str) -> i64 {
    sqlx::query_scalar("select count(*) from refunds where payment_intent_id = $1")
        .bind(intent)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_refund_above_the_threshold_is_not_sent_until_a_different_operator_approves_it() {
    let api = TestApi::start_with("refund_approval_threshold = 1000", "").await;
    let external = external_api(&api).await;
    let (merchant, key) = merchant_with_key(&api, 1).await;
    let payment = succeeded_payment(&api, &external, merchant, &key, 5_000).await;
    let pool = api.db.store.shard(merchant.shard()).unwrap().clone();
    let olga = api.token(Role::Operator, "olga");
    let oscar = api.token(Role::Operator, "oscar");
    let viewer = api.token(Role::Viewer, "victor");

    // Under the threshold: sent at once.
    let small = api
        .post(
            &olga,
            &format!("/v1/payments/{payment}/refunds"),
            json!({ "amount": 500, "reason": "requested_by_customer" }),
        )
        .await;
    assert_eq!(small.status, 200, "{}", small.body);
    assert_eq!(small.body["refund_request"]["status"], "executed");
    assert_eq!(small.body["refund"]["status"], "pending");
    assert_eq!(small.body["refund"]["amount"], 500);
    assert_eq!(refund_commands(&pool, &payment).await, 1);

    // Above it: parked, nothing created, nothing sent.
    let large = api
        .post(
            &olga,
            &format!("/v1/payments/{payment}/refunds"),
            json!({ "amount": 3_000 }),
        )
        .await;
    assert_eq!(large.status, 200, "{}", large.body);
    assert_eq!(large.body["refund_request"]["status"], "pending_approval");
    assert!(large.body["refund"].is_null());
    let request = large.body["refund_request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(refunds_of(&pool, &payment).await, 1);
    assert_eq!(refund_commands(&pool, &payment).await, 1);

    // The maker cannot approve; a viewer cannot either.
    let own = api
        .post(
            &olga,
            &format!("/v1/refund_requests/{request}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(own.status, 403, "{}", own.body);
    let by_viewer = api
        .post(
            &viewer,
            &format!("/v1/refund_requests/{request}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(by_viewer.status, 403, "{}", by_viewer.body);
    assert_eq!(refunds_of(&pool, &payment).await, 1);
    assert_eq!(refund_commands(&pool, &payment).await, 1);

    // The checker approves: now the refund exists and is on its way.
    let approved = api
        .post(
            &oscar,
            &format!("/v1/refund_requests/{request}/approve"),
            json!({ "note": "customer complaint #77" }),
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.body["refund_request"]["status"], "executed");
    assert_eq!(approved.body["refund_request"]["decided_by"], "oscar");
    assert_eq!(approved.body["refund"]["amount"], 3_000);
    assert_eq!(approved.body["refund"]["metadata"]["approved_by"], "oscar");
    assert_eq!(approved.body["refund"]["metadata"]["requested_by"], "olga");
    assert_eq!(refunds_of(&pool, &payment).await, 2);
    assert_eq!(refund_commands(&pool, &payment).await, 2);
    // Approving twice does nothing more.
    let twice = api
        .post(
            &oscar,
            &format!("/v1/refund_requests/{request}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(twice.status, 400, "{}", twice.body);
    assert_eq!(refunds_of(&pool, &payment).await, 2);

    // More than what is left is refused before any request is made.
    let too_much = api
        .post(
            &olga,
            &format!("/v1/payments/{payment}/refunds"),
            json!({ "amount": 1_501 }),
        )
        .await;
    assert_eq!(too_much.status, 400, "{}", too_much.body);

    // A rejected request is never sent.
    let third = api
        .post(
            &oscar,
            &format!("/v1/payments/{payment}/refunds"),
            json!({ "amount": 1_500 }),
        )
        .await;
    let third_id = third.body["refund_request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rejected = api
        .post(
            &olga,
            &format!("/v1/refund_requests/{third_id}/reject"),
            json!({ "note": "duplicate of #77" }),
        )
        .await;
    assert_eq!(rejected.status, 200, "{}", rejected.body);
    assert_eq!(rejected.body["refund_request"]["status"], "rejected");
    assert_eq!(refunds_of(&pool, &payment).await, 2);

    let pending = api
        .get(&viewer, "/v1/refund_requests?status=executed")
        .await;
    assert_eq!(pending.body["data"].as_array().unwrap().len(), 2);

    // The story tells all of it, and the ledger still balances.
    let story = api.get(&viewer, &format!("/v1/payments/{payment}")).await;
    assert_eq!(story.status, 200, "{}", story.body);
    assert_eq!(story.body["payment_intent"]["id"], payment.as_str());
    assert!(story.body["payment_intent"].get("client_secret").is_none());
    assert_eq!(story.body["attempts"][0]["status"], "approved");
    assert_eq!(story.body["refunds"].as_array().unwrap().len(), 2);
    assert_eq!(story.body["card"]["last4"], "4242");
    assert!(!story.body["ledger"].as_array().unwrap().is_empty());
    let events: Vec<&str> = story.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"refund.created"), "{events:?}");

    let trial = api.get(&viewer, "/v1/ledger/trial_balance").await;
    assert_eq!(trial.status, 200, "{}", trial.body);
    assert_eq!(trial.body["balanced"], true, "{}", trial.body);
    let balances = api
        .get(
            &viewer,
            &format!("/v1/ledger/merchants/{merchant}/balances"),
        )
        .await;
    assert_eq!(balances.status, 200, "{}", balances.body);
    let lines = balances.body["balances"].as_array().unwrap();
    assert!(!lines.is_empty());
    let net: i64 = lines.iter().map(|b| b["balance"].as_i64().unwrap()).sum();
    assert_eq!(net, 0, "{}", balances.body);
}

#[tokio::test]
async fn the_trial_balance_flags_an_unbalanced_region() {
    let api = TestApi::start().await;
    let viewer = api.token(Role::Viewer, "victor");
    let empty = api.get(&viewer, "/v1/ledger/trial_balance").await;
    assert_eq!(empty.body["balanced"], true);
    // The database refuses an unbalanced journal; only a line written
    // around its check (as a corrupted restore could) unbalances the books.
    let pool = api
        .db
        .store
        .shard(snakepay_domain::ids::ShardNumber(0))
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    for sql in [
        "set constraints all immediate",
        "alter table journal_lines disable trigger journal_lines_balanced",
        "alter table journals disable trigger journals_have_lines",
        "insert into journals (merchant_id, livemode, description) values ('acct_x', false, 'corrupt')",
        "insert into journal_lines (journal_id, merchant_id, livemode, account, currency, side, amount)
         select max(id), 'acct_x', false, 'merchant_payable', 'usd', 'credit', 7 from journals",
        "alter table journal_lines enable trigger journal_lines_balanced",
        "alter table journals enable trigger journals_have_lines",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let trial = api.get(&viewer, "/v1/ledger/trial_balance").await;
    assert_eq!(trial.body["balanced"], false, "{}", trial.body);
    assert_eq!(trial.body["totals"][0]["net"], -7);
}
