//! The demo shop against a real External API: the intent is created on the
//! server with the secret key, and the browser gets only what the checkout
//! needs.

use crate::support::{Api, fixture_assets, free_port, web_config};

struct Shop {
    api: Api,
    web: snakepay_http::ServerHandle,
    _assets: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

async fn shop() -> Shop {
    let port = free_port();
    let api = Api::start(&format!("http://127.0.0.1:{port}"), "", "").await;
    let assets = fixture_assets();
    let dir = tempfile::tempdir().unwrap();
    let file = api.write_merchant_file(dir.path());
    let web = snakepay_web::start(&web_config(
        port,
        &api.url(),
        assets.path(),
        &format!("[web.demo]\nmerchant_file = \"{}\"", file.display()),
    ))
    .await
    .unwrap();
    Shop {
        api,
        web,
        _assets: assets,
        _dir: dir,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn order(shop: &Shop, body: &str, fetch_site: &str) -> reqwest::Response {
    client()
        .post(format!("{}/demo/pay", shop.web.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", fetch_site)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn buying_creates_the_intent_on_the_server_and_opens_the_checkout() {
    let shop = shop().await;
    let products: serde_json::Value = client()
        .get(format!("{}/demo/products.json", shop.web.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(products[0]["id"], "python-plush");
    assert_eq!(products[0]["amount"], 2400);

    let response = order(&shop, "product=python-plush", "same-origin").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (path, fragment) = location.split_once('#').unwrap();
    assert_eq!(path, "/checkout/");
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(fragment.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(params["key"], shop.api.keys.publishable_key);
    assert_eq!(params["merchant"], "Demo Shop");
    assert_eq!(params["return_url"], "/demo/");
    assert!(
        !location.contains(&shop.api.keys.secret_key),
        "the secret key must never reach the browser"
    );

    let secret = &params["client_secret"];
    let id = secret.split("_secret_").next().unwrap();
    let intent = shop.api.get(&format!("/v1/payment_intents/{id}")).await;
    assert_eq!(intent["amount"], 2400);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(intent["metadata"]["product"], "python-plush");
    assert_eq!(&intent["client_secret"], secret.as_str());
}

#[tokio::test]
async fn the_shop_takes_orders_only_from_its_own_pages_and_for_its_products() {
    let shop = shop().await;
    let response = order(&shop, "product=python-plush", "cross-site").await;
    assert_eq!(response.status(), 403);
    let response = order(&shop, "product=python-plush&amount=1", "same-origin").await;
    assert_eq!(response.status(), 303, "a price in the form is ignored");
    let response = order(&shop, "product=free-lunch", "same-origin").await;
    assert_eq!(response.status(), 400);
    let list = shop.api.get("/v1/payment_intents").await;
    let amounts: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["amount"].clone())
        .collect();
    assert_eq!(amounts, vec![serde_json::json!(2400)]);
}

/// The web service with a demo shop whose key file holds `keys`, in front
/// of `api_url`, and the assets it serves.
async fn shop_with_keys(
    keys: &str,
    api_url: &str,
) -> anyhow::Result<(snakepay_http::ServerHandle, tempfile::TempDir)> {
    let assets = fixture_assets();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("merchant.json");
    std::fs::write(&file, keys).unwrap();
    // The key file is read at start; it may go afterwards.
    let web = snakepay_web::start(&web_config(
        0,
        api_url,
        assets.path(),
        &format!("[web.demo]\nmerchant_file = \"{}\"", file.display()),
    ))
    .await?;
    Ok((web, assets))
}

#[tokio::test]
async fn the_demo_takes_test_keys_only() {
    let error = shop_with_keys(
        r#"{"secret_key": "sk_live_abc", "publishable_key": "pk_live_abc"}"#,
        "http://127.0.0.1:9",
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("test-mode keys only"),
        "{error:#}"
    );
}

#[tokio::test]
async fn a_shop_whose_api_is_down_says_so_and_is_degraded() {
    let dead_api = format!("http://127.0.0.1:{}", free_port());
    let (web, _assets) = shop_with_keys(
        r#"{"secret_key": "sk_test_abc", "publishable_key": "pk_test_abc"}"#,
        &dead_api,
    )
    .await
    .unwrap();
    let response = client()
        .post(format!("{}/demo/pay", web.url()))
        .body("product=sticker-pack")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(response.text().await.unwrap().contains("External API"));
    let ready = client()
        .get(format!("{}/readyz", web.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["status"], "degraded");
}
