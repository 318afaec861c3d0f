//! The demo shop (local runs): a few products, and the one server-side
//! step a real shop also has: creating the PaymentIntent with the
//! merchant's secret key, then sending the customer to the hosted checkout
//! with only the client secret and the publishable key.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use url::Url;

/// The checkout page, as `web/build.mjs` lays it out.
pub const CHECKOUT_PATH: &str = "/checkout/";
/// Where the checkout's "Return to Demo Shop" leads.
const SHOP_PATH: &str = "/demo/";
/// One call to the External API (it waits for nothing on create).
const API_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: &'static str,
}

/// The shop's catalogue. Prices live here, on the server: the browser says
/// only which product, never how much.
pub const PRODUCTS: &[Product] = &[
    Product {
        id: "python-plush",
        name: "Python plush",
        description: "A soft, 1.2 m python. Does not bite.",
        amount: 2400,
        currency: "eur",
    },
    Product {
        id: "sticker-pack",
        name: "Sticker pack",
        description: "Twelve snakes for your laptop lid.",
        amount: 550,
        currency: "eur",
    },
    Product {
        id: "terrarium-lamp",
        name: "Terrarium lamp",
        description: "Warm light for cold-blooded friends.",
        amount: 12900,
        currency: "eur",
    },
];

/// An API secret key: `Debug` masks it, [`SecretKey::expose`] is the one
/// way to read it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretKey(String);

impl SecretKey {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(****)")
    }
}

/// The fields of `snakepay-admin merchant create`'s output the shop needs.
#[derive(Debug, Clone, Deserialize)]
struct MerchantFile {
    secret_key: SecretKey,
    publishable_key: String,
}

#[derive(Debug)]
pub struct Demo {
    secret_key: SecretKey,
    publishable_key: String,
    merchant_name: String,
    /// `…/v1/payment_intents` of the External API.
    intents_url: Url,
    client: reqwest::Client,
}

impl Demo {
    /// `trust`: what the calls to the External API trust besides the public
    /// roots (the local run's authority).
    pub fn load(
        merchant_file: &Path,
        merchant_name: &str,
        api: &Url,
        trust: &snakepay_config::sections::OutboundTlsConfig,
    ) -> anyhow::Result<Demo> {
        let text = std::fs::read_to_string(merchant_file).with_context(|| {
            format!(
                "reading the demo merchant's keys from {} (scripts/run.sh creates it)",
                merchant_file.display()
            )
        })?;
        let keys: MerchantFile = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", merchant_file.display()))?;
        // The demo must never move real money, whatever file it is given.
        anyhow::ensure!(
            keys.secret_key.expose().starts_with("sk_test_")
                && keys.publishable_key.starts_with("pk_test_"),
            "{}: the demo shop takes test-mode keys only (sk_test_…, pk_test_…)",
            merchant_file.display()
        );
        Ok(Demo {
            secret_key: keys.secret_key,
            publishable_key: keys.publishable_key,
            merchant_name: merchant_name.trim().to_owned(),
            intents_url: api.join("v1/payment_intents")?,
            client: snakepay_http::tls::client_builder(trust)?
                .timeout(API_TIMEOUT)
                .build()?,
        })
    }
}

pub async fn products() -> Response {
    Json(PRODUCTS).into_response()
}

/// `POST /demo/pay` with `product=<id>`: creates the intent and redirects
/// to the checkout.
pub async fn pay(State(demo): State<Arc<Demo>>, headers: HeaderMap, body: Bytes) -> Response {
    // Another site's page may not make this shop create payments: browsers
    // say where a form post comes from.
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if !matches!(site, "same-origin" | "none") {
        return text(
            StatusCode::FORBIDDEN,
            "Orders are taken from the shop's own page only.",
        );
    }
    let wanted = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "product")
        .map(|(_, value)| value.into_owned());
    let Some(product) = PRODUCTS.iter().find(|p| Some(p.id) == wanted.as_deref()) else {
        return text(StatusCode::BAD_REQUEST, "There is no such product.");
    };
    match create_intent(&demo, product).await {
        Ok(client_secret) => {
            let fragment = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("client_secret", &client_secret)
                .append_pair("key", &demo.publishable_key)
                .append_pair("merchant", &demo.merchant_name)
                .append_pair("return_url", SHOP_PATH)
                .finish();
            let mut response = Redirect::to(&format!("{CHECKOUT_PATH}#{fragment}")).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(error) => {
            tracing::error!(
                error.chain = format!("{error:#}"),
                product.id = product.id,
                "demo order failed"
            );
            text(
                StatusCode::BAD_GATEWAY,
                "The shop could not start the payment: the External API did not accept it. \
                 Is it running? Its log is .stack/logs/snakepay-external-api.log.",
            )
        }
    }
}

/// The new intent's client secret.
async fn create_intent(demo: &Demo, product: &Product) -> anyhow::Result<String> {
    let mut random = [0_u8; 16];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let amount = product.amount.to_string();
    let description = format!("{}: {}", demo.merchant_name, product.name);
    let response = demo
        .client
        .post(demo.intents_url.clone())
        .bearer_auth(demo.secret_key.expose())
        .header("Idempotency-Key", format!("demo-{}", hex::encode(random)))
        .form(&[
            ("amount", amount.as_str()),
            ("currency", product.currency),
            ("description", description.as_str()),
            ("metadata[product]", product.id),
            ("payment_method_types[]", "card"),
        ])
        .headers(snakepay_telemetry::trace::outbound_headers())
        .send()
        .await
        .context("calling the External API")?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("reading its answer")?;
    anyhow::ensure!(
        status.is_success(),
        "the External API answered {status}: {}",
        body.pointer("/error/message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message")
    );
    body.get("client_secret")
        .and_then(|s| s.as_str())
        .map(str::to_owned)
        .context("the created intent has no client_secret")
}

fn text(status: StatusCode, message: &'static str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        format!("{message}\n"),
    )
        .into_response()
}
