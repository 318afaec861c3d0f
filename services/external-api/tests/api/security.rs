//! Card data at rest, shard routing and regions.

use crate::support::TestApi;

#[tokio::test]
async fn no_clear_card_number_or_cvc_is_stored_anywhere_after_a_confirmed_card_payment() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    // A Luhn-valid canary that is not a known test card, and a distinctive CVC.
    let (canary, cvc) = ("4000056655665556", "987");
    let reply = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "4200"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method_data[type]", "card"),
                ("payment_method_data[card][number]", "4000 0566 5566 5556"),
                ("payment_method_data[card][exp_month]", "11"),
                ("payment_method_data[card][exp_year]", "2031"),
                ("payment_method_data[card][cvc]", cvc),
            ],
            Some("canary"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(!String::from_utf8_lossy(&reply.bytes).contains(canary));

    let dump = api.dump_all_tables().await;
    assert!(
        dump.contains("pi_"),
        "the dump does cover the payment tables"
    );
    for needle in [canary, "4000 0566 5566 5556", "0566556655", &canary[6..]] {
        assert!(!dump.contains(needle), "found {needle:?} in a table");
    }
    // The CVC may not appear as a column value (it is sealed): look for it
    // as a whole JSON or column token.
    assert!(!dump.contains(&format!("\"{cvc}\"")) && !dump.contains(&format!(",{cvc},")));

    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let (first6, last4, sealed): (String, String, bool) = sqlx::query_as(
        "select first6, last4, cvc_ciphertext is not null and length(pan_ciphertext) > 16 from payment_methods",
    )
    .fetch_one(shard)
    .await
    .unwrap();
    assert_eq!(
        (first6.as_str(), last4.as_str(), sealed),
        ("400005", "5556", true)
    );
}

#[tokio::test]
async fn merchants_live_on_both_shards_and_an_id_is_served_from_its_own_shard() {
    let api = TestApi::start().await;
    let on_zero = api.merchant_on(Some(0)).await;
    let on_one = api.merchant_on(Some(1)).await;
    let zero = api
        .post(
            &on_zero.secret_key,
            "/v1/payment_intents",
            &[("amount", "100"), ("currency", "usd")],
            None,
        )
        .await;
    let one = api
        .post(
            &on_one.secret_key,
            "/v1/payment_intents",
            &[("amount", "100"), ("currency", "usd")],
            None,
        )
        .await;
    let id_one = one.body["id"].as_str().unwrap();
    let parsed = snakepay_domain::ids::PaymentIntentId::parse(id_one).unwrap();
    assert_eq!(parsed.shard().0, 1);
    let count = |shard: u8, id: String| {
        let pool = api
            .db
            .store
            .shard(snakepay_domain::ids::ShardNumber(shard))
            .unwrap()
            .clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from payment_intents where id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(1, id_one.to_owned()).await, 1);
    assert_eq!(count(0, id_one.to_owned()).await, 0);
    assert_eq!(
        count(0, zero.body["id"].as_str().unwrap().to_owned()).await,
        1
    );
    let fetched = api
        .get(&on_one.secret_key, &format!("/v1/payment_intents/{id_one}"))
        .await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["id"], id_one);
}

#[tokio::test]
async fn an_id_or_key_from_another_region_is_answered_with_that_regions_address() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let foreign =
        snakepay_domain::ids::PaymentIntentId::from_parts(snakepay_domain::ids::IdParts {
            unix_ms: 1,
            region: snakepay_domain::ids::RegionNumber(2),
            shard: m.id.shard(),
            random: [1; 10],
        });
    let reply = api
        .get(&m.secret_key, &format!("/v1/payment_intents/{foreign}"))
        .await;
    assert_eq!(reply.status, 404);
    assert!(
        reply
            .error("message")
            .as_str()
            .unwrap()
            .contains("https://api.us-1.snakepay.test"),
        "{}",
        reply.body
    );

    // A key minted in region 2 (its region is the two hex digits after the prefix).
    let foreign_key = format!("sk_test_02{}", &m.secret_key[10..]);
    let key_reply = api.get(&foreign_key, "/v1/payment_intents").await;
    assert_eq!(key_reply.status, 401);
    assert!(
        key_reply
            .error("message")
            .as_str()
            .unwrap()
            .contains("https://api.us-1.snakepay.test")
    );
}
