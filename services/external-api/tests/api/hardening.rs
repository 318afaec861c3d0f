//! Fixes from the security and money-safety review, each pinned by a test.

use sha2::Digest;

use crate::support::TestApi;

const CARD_FORM: &[(&str, &str)] = &[
    ("amount", "1000"),
    ("currency", "usd"),
    ("payment_method_data[type]", "card"),
    ("payment_method_data[card][number]", "4000056655665556"),
    ("payment_method_data[card][exp_month]", "11"),
    ("payment_method_data[card][exp_year]", "2031"),
    ("payment_method_data[card][cvc]", "987"),
];

#[tokio::test]
async fn the_stored_request_fingerprint_is_keyed_so_the_card_cannot_be_brute_forced_from_it() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let reply = api
        .post(&m.secret_key, "/v1/payment_intents", CARD_FORM, Some("fp"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let canonical = snakepay_http::Params::from_form(crate::support::encode(CARD_FORM).as_bytes())
        .unwrap()
        .canonical();
    let plain = hex::encode(sha2::Sha256::digest(
        format!("POST /v1/payment_intents\n{canonical}").as_bytes(),
    ));
    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let stored: String =
        sqlx::query_scalar("select fingerprint from idempotency_keys where key = 'fp'")
            .fetch_one(shard)
            .await
            .unwrap();
    assert_eq!(stored.len(), 64);
    assert_ne!(
        stored, plain,
        "a plain hash of the parameters would be reversible"
    );
}

#[tokio::test]
async fn a_mistyped_card_is_a_validation_error_that_does_not_use_up_the_key() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let mut typo: Vec<(&str, &str)> = CARD_FORM.to_vec();
    typo[3] = ("payment_method_data[card][number]", "4000056655665557");
    let bad = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &typo,
            Some("card-key"),
        )
        .await;
    assert_eq!(
        (bad.status, bad.error("code")),
        (402, "incorrect_number".into())
    );
    let good = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            CARD_FORM,
            Some("card-key"),
        )
        .await;
    assert_eq!(good.status, 200, "{}", good.body);
    assert!(good.header("idempotent-replayed").is_none());
}

#[tokio::test]
async fn a_card_number_sent_as_an_id_is_never_echoed_back() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let reply = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", "4000056655665556"),
            ],
            Some("echo"),
        )
        .await;
    assert_eq!(reply.status, 404);
    assert!(
        !String::from_utf8_lossy(&reply.bytes).contains("4000056655665556"),
        "{}",
        reply.body
    );
    assert!(
        !api.dump_all_tables().await.contains("655665"),
        "nor stored with the idempotent response"
    );
}

#[tokio::test]
async fn a_publishable_key_can_neither_change_the_capture_method_nor_expand_objects() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("capture_method", "manual"),
            ],
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap();
    let secret = created.body["client_secret"].as_str().unwrap();
    let path = format!("/v1/payment_intents/{id}/confirm");
    let switched = api
        .post(
            &m.publishable_key,
            &path,
            &[
                ("client_secret", secret),
                ("payment_method", "pm_card_visa"),
                ("capture_method", "automatic"),
            ],
            None,
        )
        .await;
    assert_eq!(switched.status, 403);
    let expanded = api
        .get(
            &m.publishable_key,
            &format!("/v1/payment_intents/{id}?client_secret={secret}&expand[]=customer"),
        )
        .await;
    assert_eq!(expanded.status, 403);
    let fine = api
        .post(
            &m.publishable_key,
            &path,
            &[
                ("client_secret", secret),
                ("payment_method", "pm_card_visa"),
            ],
            None,
        )
        .await;
    assert_eq!(
        (fine.status, fine.body["capture_method"].as_str()),
        (200, Some("manual"))
    );
}

#[tokio::test]
async fn a_card_saved_to_one_customer_cannot_pay_for_another() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let alice = api
        .post(&m.secret_key, "/v1/customers", &[("name", "Alice")], None)
        .await;
    let bob = api
        .post(&m.secret_key, "/v1/customers", &[("name", "Bob")], None)
        .await;
    let mut form = CARD_FORM.to_vec();
    form.push(("customer", alice.body["id"].as_str().unwrap()));
    let paid = api
        .post(&m.secret_key, "/v1/payment_intents", &form, None)
        .await;
    let card = paid.body["payment_method"].as_str().unwrap();
    let for_bob = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "500"),
                ("currency", "usd"),
                ("customer", bob.body["id"].as_str().unwrap()),
                ("payment_method", card),
            ],
            None,
        )
        .await;
    assert_eq!(
        (for_bob.status, for_bob.error("param")),
        (400, "payment_method".into())
    );
    let for_alice = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "500"),
                ("currency", "usd"),
                ("customer", alice.body["id"].as_str().unwrap()),
                ("payment_method", card),
            ],
            None,
        )
        .await;
    assert_eq!(for_alice.status, 200, "{}", for_alice.body);
}

#[tokio::test]
async fn only_the_latest_charge_can_be_refunded_by_charge() {
    use snakepay_domain::payment_intent::{AuthorizationOutcome, CardErrorCode, PaymentError};
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "pm_card_chargeDeclined"),
            ],
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let declined = PaymentError {
        code: CardErrorCode::CardDeclined,
        decline_code: Some("generic_decline".into()),
        message: "declined".into(),
    };
    api.settle_authorization(&m, &id, AuthorizationOutcome::Declined(declined))
        .await;
    let failed_charge = api
        .get(&m.secret_key, &format!("/v1/payment_intents/{id}"))
        .await
        .body["latest_charge"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post(
        &m.secret_key,
        &format!("/v1/payment_intents/{id}/confirm"),
        &[("payment_method", "pm_card_visa")],
        None,
    )
    .await;
    api.settle_authorization(&m, &id, AuthorizationOutcome::Approved)
        .await;

    let refused = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[("charge", &failed_charge)],
            None,
        )
        .await;
    assert_eq!(
        (refused.status, refused.error("param")),
        (404, "charge".into())
    );
    let latest = api
        .get(&m.secret_key, &format!("/v1/payment_intents/{id}"))
        .await
        .body["latest_charge"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(latest, failed_charge);
    assert_eq!(
        api.post(&m.secret_key, "/v1/refunds", &[("charge", &latest)], None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn capture_errors_name_amount_to_capture() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("capture_method", "manual"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
            ],
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    api.settle_authorization(
        &m,
        &id,
        snakepay_domain::payment_intent::AuthorizationOutcome::Approved,
    )
    .await;
    let too_much = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}/capture"),
            &[("amount_to_capture", "1001")],
            None,
        )
        .await;
    assert_eq!(
        (
            too_much.status,
            too_much.error("code"),
            too_much.error("param")
        ),
        (400, "amount_too_large".into(), "amount_to_capture".into())
    );
}

#[tokio::test]
async fn a_request_timeout_longer_than_the_key_lock_is_refused_at_start_up() {
    let toml = crate::support::minimal_config_toml("request_timeout_ms = 120000");
    let error = snakepay_config::from_toml_str::<snakepay_external_api::ExternalApiConfig>(&toml)
        .unwrap_err();
    assert_eq!(
        error.key(),
        Some("external_api.request_timeout_ms"),
        "{error}"
    );
}
