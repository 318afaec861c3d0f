//! The server itself, over a fixture of the build's layout.

use snakepay_http::ServerHandle;

use crate::support::{fixture_assets, web_config};

const API: &str = "https://api.eu-1.snakepay.test";

async fn serve(assets: &tempfile::TempDir) -> ServerHandle {
    snakepay_web::start(&web_config(0, API, assets.path(), ""))
        .await
        .unwrap()
}

async fn get(server: &ServerHandle, path: &str, encoding: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.get(format!("{}{path}", server.url()));
    if let Some(encoding) = encoding {
        request = request.header("accept-encoding", encoding);
    }
    request.send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let assets = fixture_assets();
    let server = serve(&assets).await;
    for path in [
        "/checkout/",
        "/assets/checkout.0123456789.js",
        "/nothing-here",
        "/livez",
    ] {
        let response = get(&server, path, None).await;
        let csp = header(&response, "content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self';",
            "style-src 'self';",
            &format!("connect-src 'self' {API};"),
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing from {csp}"
            );
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(
            header(&response, "strict-transport-security").starts_with("max-age=63072000"),
            "{path}"
        );
        assert_eq!(
            header(&response, "x-content-type-options"),
            "nosniff",
            "{path}"
        );
        assert_eq!(
            header(&response, "referrer-policy"),
            "no-referrer",
            "{path}"
        );
        assert_eq!(header(&response, "x-frame-options"), "DENY", "{path}");
    }
}

#[tokio::test]
async fn hashed_assets_are_cached_for_a_year_and_pages_revalidated() {
    let assets = fixture_assets();
    let server = serve(&assets).await;
    let script = get(&server, "/assets/checkout.0123456789.js", None).await;
    assert_eq!(script.status(), 200);
    assert_eq!(
        header(&script, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(header(&script, "content-type").contains("javascript"));
    assert_eq!(header(&script, "vary"), "accept-encoding");

    let page = get(&server, "/checkout/", None).await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert!(header(&page, "content-type").starts_with("text/html"));
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<title>Checkout</title>")
    );

    // A missing asset is not remembered as missing for a year.
    let missing = get(&server, "/assets/checkout.fedcba9876.js", None).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(header(&missing, "cache-control"), "no-cache");
}

#[tokio::test]
async fn the_precompressed_copy_the_client_accepts_is_served() {
    let assets = fixture_assets();
    let server = serve(&assets).await;
    let path = "/assets/checkout.0123456789.js";
    let brotli = get(&server, path, Some("gzip, br")).await;
    assert_eq!(header(&brotli, "content-encoding"), "br");
    assert_eq!(brotli.bytes().await.unwrap(), "brotli copy");
    let gzip = get(&server, path, Some("gzip")).await;
    assert_eq!(header(&gzip, "content-encoding"), "gzip");
    assert_eq!(gzip.bytes().await.unwrap(), "gzip copy");
    let plain = get(&server, path, Some("identity")).await;
    assert_eq!(header(&plain, "content-encoding"), "");
    assert_eq!(plain.bytes().await.unwrap(), "console.log('checkout');");
    // Pages too, and a copy that is not there falls back to the file.
    let page = get(&server, "/checkout/", Some("br, gzip")).await;
    assert_eq!(header(&page, "content-encoding"), "gzip");
}

#[tokio::test]
async fn the_pages_learn_the_api_they_call_from_config_json() {
    let assets = fixture_assets();
    let server = serve(&assets).await;
    let response = get(&server, "/config.json", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "cache-control"), "no-cache");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "api_base_url": API }));
}

#[tokio::test]
async fn health_and_what_is_not_served() {
    let assets = fixture_assets();
    let server = serve(&assets).await;
    assert_eq!(get(&server, "/livez", None).await.status(), 200);
    let ready = get(&server, "/readyz", None).await;
    assert_eq!(ready.status(), 200);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["checks"][0]["name"], "assets");

    // Without `[web.demo]` there is no shop, and nothing outside the build's folders.
    for path in [
        "/",
        "/demo/",
        "/demo/products.json",
        "/assets/%2e%2e/%2e%2e/Cargo.toml",
    ] {
        let response = get(&server, path, None).await;
        assert_eq!(response.status(), 404, "{path}");
    }
    let post = reqwest::Client::new()
        .post(format!("{}/demo/pay", server.url()))
        .body("product=python-plush")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);

    // The checkout page's removal (a broken deployment) unreadies.
    std::fs::remove_file(assets.path().join("checkout/index.html")).unwrap();
    assert_eq!(get(&server, "/readyz", None).await.status(), 503);
}

#[tokio::test]
async fn the_service_refuses_to_start_without_a_build() {
    let empty = tempfile::tempdir().unwrap();
    let error = snakepay_web::start(&web_config(0, API, empty.path(), ""))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("npm run build"), "{error:#}");
}

#[test]
fn the_local_configuration_lets_the_checkout_call_the_api() {
    let file = crate::support::repo_root().join("config/local.toml");
    let web: snakepay_web::WebConfig =
        snakepay_config::load_from(Some(&file), figment_free_overrides()).unwrap();
    let api: snakepay_external_api::ExternalApiConfig =
        snakepay_config::load_from(Some(&file), figment_free_overrides()).unwrap();
    let origin = format!("http://{}", web.web.http.listen_addr);
    assert!(
        api.external_api.checkout_origins.contains(&origin),
        "{origin} is not among {:?}",
        api.external_api.checkout_origins
    );
    assert_eq!(web.region.public_api_url.as_str(), "http://127.0.0.1:8081/");
    assert_eq!(
        api.external_api.http.listen_addr.to_string(),
        "127.0.0.1:8081"
    );
    assert!(web.web.demo.is_some());
}

/// No overrides: the file as it is, whatever the environment says.
fn figment_free_overrides() -> impl figment::Provider {
    figment::providers::Serialized::defaults(serde_json::json!({}))
}
