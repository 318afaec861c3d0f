//! PCI DSS 7.2 and 10.2 on the running platform: the services connect as
//! their own database roles, and every opening of a card and every failed
//! API-key authentication lands in the hash-chained audit trail.

use std::time::Duration;

use snakepay_store::audit;

use crate::support::{Pipeline, WAIT, id};

#[tokio::test]
async fn services_run_on_their_own_roles_and_card_openings_and_failed_authentications_are_audited()
{
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let intent = pipeline
        .pay(&merchant, "4242424242424242", 1_000, "automatic")
        .await;
    let intent = pipeline.settled(&merchant, &id(&intent)).await;
    assert_eq!(intent["status"], "succeeded", "{intent}");
    let payment_method = intent["payment_method"].as_str().unwrap().to_owned();
    let control = pipeline.db.store.control();

    // A wrong key: 401, audited with the client's address and the key
    // shown only as the refusal shows it.
    let wrong_key = "sk_test_0000000000000000000000000000wxyz";
    let response = pipeline
        .client
        .get(format!("{}/v1/payment_intents", pipeline.api.url()))
        .bearer_auth(wrong_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    pipeline
        .integration
        .as_ref()
        .unwrap()
        .pipeline()
        .audit
        .flush()
        .await
        .unwrap();
    // The payment went through with every service on its own role (pools
    // are lazy: by now each has used both kinds of database).
    let names: Vec<String> = pipeline
        .db
        .urls()
        .iter()
        .map(|url| url.rsplit('/').next().unwrap().to_owned())
        .collect();
    let users: Vec<String> = sqlx::query_scalar(
        "select distinct usename::text from pg_stat_activity
         where datname = any($1) and usename is not null order by 1",
    )
    .bind(&names)
    .fetch_all(control)
    .await
    .unwrap();
    for role in [
        snakepay_store::roles::EXTERNAL_API,
        snakepay_store::roles::INTEGRATION,
    ] {
        assert!(users.iter().any(|u| u == role), "{role} not in {users:?}");
    }

    let opened = audit::query(
        control,
        &audit::AuditQuery {
            action: Some("card.open".into()),
            resource: Some(payment_method.clone()),
            limit: 10,
            ..audit::AuditQuery::default()
        },
    )
    .await
    .unwrap()
    .0;
    assert_eq!(
        opened.len(),
        1,
        "one authorization, one opening: {opened:?}"
    );
    let entry = &opened[0];
    assert_eq!(entry.outcome, "allowed");
    assert_eq!(entry.actor_subject, snakepay_store::roles::INTEGRATION);
    assert_eq!(entry.details_json()["cvc"], true);
    assert!(
        entry.details_json()["payment_attempt"]
            .as_str()
            .unwrap()
            .starts_with("pa_")
    );
    assert!(!entry.details.contains("4242424242424242"));

    // The External API's buffer is written within a fraction of a second;
    // poll (bounded) rather than reach into the server.
    let deadline = tokio::time::Instant::now() + WAIT;
    let failure = loop {
        let (rows, _) = audit::query(
            control,
            &audit::AuditQuery {
                action: Some("api_key.authenticate".into()),
                limit: 10,
                ..audit::AuditQuery::default()
            },
        )
        .await
        .unwrap();
        if let Some(row) = rows.into_iter().next() {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no audit row for the failure"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failure.outcome, "unauthenticated");
    assert_eq!(failure.origin.as_deref(), Some("127.0.0.1"));
    assert_eq!(failure.details_json()["reason"], "invalid");
    let shown = failure.resource.clone().unwrap();
    assert!(
        shown.starts_with("sk_test_") && shown.ends_with("wxyz"),
        "{shown}"
    );
    assert!(
        !shown.contains(&wrong_key[8..36]),
        "the whole key is never stored: {shown}"
    );

    let verification = audit::verify_chain(control).await.unwrap();
    let rows = audit::query(
        control,
        &audit::AuditQuery {
            limit: 50,
            ..audit::AuditQuery::default()
        },
    )
    .await
    .unwrap()
    .0;
    assert!(verification.intact(), "{verification:?} {rows:#?}");
}
