//! Merchants, KYC and API keys, checked through the External API that the
//! merchants' keys are for.

use serde_json::json;
use snakepay_internal_api::tokens::Role;

use crate::support::{TestApi, external_api, external_api_with, redis_section};

async fn list_intents(client: &reqwest::Client, external: &str, key: &str) -> u16 {
    client
        .get(format!("{external}/v1/payment_intents"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_live_key_of_an_unverified_merchant_is_refused_until_kyc_verifies_it() {
    let api = TestApi::start().await;
    let external = external_api(&api).await;
    let operator = api.mfa_token(Role::Operator, "olga");

    let created = api
        .post(
            &operator,
            "/v1/merchants",
            json!({ "legal_name": "Kiosk GmbH", "country": "de", "shard": 1 }),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["kyc_status"], "pending");
    assert_eq!(created.body["shard"], 1);
    assert_eq!(created.body["country"], "DE");
    assert_eq!(created.body["home_region"], "eu-1");
    let merchant = created.body["id"].as_str().unwrap().to_owned();

    let key = api
        .post(
            &operator,
            &format!("/v1/merchants/{merchant}/keys"),
            json!({ "kind": "secret", "livemode": true }),
        )
        .await;
    assert_eq!(key.status, 200, "{}", key.body);
    let live_key = key.body["key"].as_str().unwrap().to_owned();
    assert!(live_key.starts_with("sk_live_"));
    assert_eq!(
        list_intents(&api.client, &external.url(), &live_key).await,
        403
    );

    // A rejection needs a reason; the decision records its reviewer.
    let no_reason = api
        .post(
            &operator,
            &format!("/v1/merchants/{merchant}/kyc"),
            json!({ "status": "rejected" }),
        )
        .await;
    assert_eq!(no_reason.status, 400, "{}", no_reason.body);
    let verified = api
        .post(
            &operator,
            &format!("/v1/merchants/{merchant}/kyc"),
            json!({ "status": "verified", "reason": "documents checked" }),
        )
        .await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verified.body["kyc_status"], "verified");
    assert_eq!(verified.body["kyc_reviewed_by"], "olga");
    assert_eq!(
        list_intents(&api.client, &external.url(), &live_key).await,
        200
    );

    // Verified cannot go back to pending; withdrawing it is a rejection.
    let back = api
        .post(
            &operator,
            &format!("/v1/merchants/{merchant}/kyc"),
            json!({ "status": "pending" }),
        )
        .await;
    assert_eq!(back.status, 400, "{}", back.body);
    let withdrawn = api
        .post(
            &operator,
            &format!("/v1/merchants/{merchant}/kyc"),
            json!({ "status": "rejected", "reason": "fraud signals" }),
        )
        .await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.body);
    assert_eq!(
        list_intents(&api.client, &external.url(), &live_key).await,
        403
    );
}

#[tokio::test]
async fn keys_are_shown_once_listed_masked_rolled_and_revoked_with_immediate_effect() {
    let api = TestApi::start().await;
    let external = external_api(&api).await;
    let operator = api.mfa_token(Role::Operator, "olga");
    let merchant = api.merchant_on(0).await;

    let created = api
        .post(
            &operator,
            &format!("/v1/merchants/{merchant}/keys"),
            json!({ "kind": "secret", "livemode": false }),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let first = created.body["key"].as_str().unwrap().to_owned();
    let first_id = created.body["api_key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        list_intents(&api.client, &external.url(), &first).await,
        200
    );

    let listed = api
        .get(&operator, &format!("/v1/merchants/{merchant}/keys"))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let text = listed.body.to_string();
    assert!(
        !text.contains(&first),
        "a listed key must be masked: {text}"
    );
    assert_eq!(
        listed.body["data"][0]["masked"],
        format!("sk_test_…{}", &first[first.len() - 4..])
    );

    let rolled = api
        .post(&operator, &format!("/v1/keys/{first_id}/roll"), json!({}))
        .await;
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    let second = rolled.body["key"].as_str().unwrap().to_owned();
    let second_id = rolled.body["api_key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        list_intents(&api.client, &external.url(), &first).await,
        401
    );
    assert_eq!(
        list_intents(&api.client, &external.url(), &second).await,
        200
    );
    let again = api
        .post(&operator, &format!("/v1/keys/{first_id}/roll"), json!({}))
        .await;
    assert_eq!(again.status, 400, "{}", again.body);

    let revoked = api
        .post(
            &operator,
            &format!("/v1/keys/{second_id}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(revoked.body["api_key"]["revoked_at"].is_i64());
    assert_eq!(
        list_intents(&api.client, &external.url(), &second).await,
        401
    );

    // The audit trail names the key operations, never the keys.
    let admin = api.token(Role::Admin, "ada");
    let trail = api
        .get(&admin, "/v1/audit/entries?actor=olga&limit=100")
        .await;
    let text = trail.body.to_string();
    assert!(!text.contains(&first) && !text.contains(&second), "{text}");
    assert!(text.contains(&second_id), "{text}");
}

#[tokio::test]
async fn merchants_are_listed_updated_and_keep_their_shard_and_region() {
    let api = TestApi::start().await;
    let operator = api.token(Role::Operator, "olga");
    let viewer = api.token(Role::Viewer, "victor");
    let created = api
        .post(
            &operator,
            "/v1/merchants",
            json!({ "legal_name": "A", "country": "FR" }),
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let updated = api
        .post(
            &operator,
            &format!("/v1/merchants/{id}"),
            json!({ "legal_name": "A SARL" }),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["legal_name"], "A SARL");
    assert_eq!(updated.body["country"], "FR");
    let moved = api
        .post(
            &operator,
            &format!("/v1/merchants/{id}"),
            json!({ "shard": 1 }),
        )
        .await;
    assert_eq!(moved.status, 400, "{}", moved.body);
    let elsewhere = api
        .post(
            &operator,
            "/v1/merchants",
            json!({ "legal_name": "B", "country": "US", "home_region": "us-1" }),
        )
        .await;
    assert_eq!(elsewhere.status, 400, "{}", elsewhere.body);

    let listed = api.get(&viewer, "/v1/merchants?kyc_status=pending").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["data"][0]["id"], id);
    let unknown = api.get(&viewer, "/v1/merchants/acct_nonsense").await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn revocations_and_kyc_changes_reach_the_external_apis_key_cache_at_once() {
    let api = TestApi::start_with("", &redis_section()).await;
    let external = external_api_with(&api, &redis_section()).await;
    let url = external.url();
    let operator = api.mfa_token(Role::Operator, "olga");
    let merchant = api.merchant_on(1).await;
    let verified = api
        .post(
            &operator,
            &format!("/v1/merchants/{merchant}/kyc"),
            json!({ "status": "verified" }),
        )
        .await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    let mut live = Vec::new();
    for _ in 0..3 {
        let key = api
            .post(
                &operator,
                &format!("/v1/merchants/{merchant}/keys"),
                json!({ "kind": "secret", "livemode": true }),
            )
            .await;
        live.push((
            key.body["key"].as_str().unwrap().to_owned(),
            key.body["api_key"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    for (key, _) in &live {
        assert_eq!(list_intents(&api.client, &url, key).await, 200);
    }

    // The cache is in play: a revocation the cache is not told about is
    // not seen while the entry lives.
    snakepay_store::merchants::revoke_api_key(api.db.store.control(), &live[0].1)
        .await
        .unwrap();
    assert_eq!(list_intents(&api.client, &url, &live[0].0).await, 200);

    // Through the Internal API, the next request is refused.
    let revoked = api
        .post(
            &operator,
            &format!("/v1/keys/{}/revoke", live[1].1),
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(list_intents(&api.client, &url, &live[1].0).await, 401);

    let rejected = api
        .post(
            &operator,
            &format!("/v1/merchants/{merchant}/kyc"),
            json!({ "status": "rejected", "reason": "sanctions hit" }),
        )
        .await;
    assert_eq!(rejected.status, 200, "{}", rejected.body);
    assert_eq!(list_intents(&api.client, &url, &live[2].0).await, 403);
}
