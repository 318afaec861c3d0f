//! The OpenAPI document lists every route the router serves, each of them
//! is really served, and every documented parameter is one the handler
//! actually reads (an undocumented one is refused as unknown).

use crate::support::TestApi;

/// The routes API.md requires; the document must contain at least these.
const REQUIRED: &[(&str, &str)] = &[
    ("post", "/v1/customers"),
    ("get", "/v1/customers/{id}"),
    ("post", "/v1/payment_intents"),
    ("get", "/v1/payment_intents"),
    ("get", "/v1/payment_intents/{id}"),
    ("post", "/v1/payment_intents/{id}"),
    ("post", "/v1/payment_intents/{id}/confirm"),
    ("post", "/v1/payment_intents/{id}/capture"),
    ("post", "/v1/payment_intents/{id}/cancel"),
    ("post", "/v1/refunds"),
    ("get", "/v1/refunds"),
    ("get", "/v1/refunds/{id}"),
    ("get", "/v1/charges/{id}"),
    ("get", "/v1/events"),
    ("get", "/v1/events/{id}"),
    ("post", "/v1/webhook_endpoints"),
    ("get", "/v1/webhook_endpoints"),
    ("get", "/v1/webhook_endpoints/{id}"),
    ("post", "/v1/webhook_endpoints/{id}"),
    ("delete", "/v1/webhook_endpoints/{id}"),
    ("get", "/v1/openapi.json"),
];

fn operations(document: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut found = Vec::new();
    for (path, methods) in document["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            found.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    found
}

async fn call(
    api: &TestApi,
    key: &str,
    method: &str,
    path: &str,
    form: &[(&str, &str)],
) -> crate::support::Reply {
    let path = path.replace("{id}", "pi_0000000000000000000000000000");
    match method {
        "get" => {
            let query = crate::support::encode(form);
            api.get(key, &format!("{path}?{query}")).await
        }
        "delete" => {
            let query = crate::support::encode(form);
            let url = api.url(&format!("{path}?{query}"));
            api.send(api.client.delete(url).bearer_auth(key)).await
        }
        _ => api.post(key, &path, form, None).await,
    }
}

#[tokio::test]
async fn the_document_lists_every_required_route_and_every_listed_route_is_served() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let document = api.get("", "/v1/openapi.json").await;
    assert_eq!(document.status, 200);
    assert_eq!(document.body["openapi"], "3.1.0");
    let listed = operations(&document.body);
    for (method, path) in REQUIRED {
        assert!(
            listed.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} is not documented"
        );
    }
    for (method, path, operation) in &listed {
        assert!(
            operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{method} {path} has no summary"
        );
        let reply = call(&api, &m.secret_key, method, path, &[]).await;
        let message = reply.error("message");
        assert!(
            !message
                .as_str()
                .unwrap_or_default()
                .starts_with("Unrecognized request URL")
                && reply.status != 405,
            "{method} {path} is documented but not served: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn every_documented_parameter_is_read_by_its_handler() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let document = api.get(&m.secret_key, "/v1/openapi.json").await;
    for (method, path, operation) in operations(&document.body) {
        let mut names: Vec<String> = operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        if let Some(properties) = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["properties"].as_object() {
            names.extend(properties.keys().cloned());
        }
        for name in names {
            let reply = call(
                &api,
                &m.secret_key,
                &method,
                &path,
                &[(&name, "snakepay-test-value")],
            )
            .await;
            assert!(
                !(reply.error("code") == "parameter_unknown"
                    && reply.error("param") == name.as_str()),
                "{method} {path}: documented parameter {name} is refused as unknown"
            );
        }
        // And an undocumented one is refused (a create may first report a
        // missing required parameter).
        let reply = call(
            &api,
            &m.secret_key,
            &method,
            &path,
            &[("not_a_parameter", "x")],
        )
        .await;
        if path != "/v1/openapi.json" {
            let code = reply.error("code");
            assert!(
                code == "parameter_unknown" || code == "parameter_missing",
                "{method} {path}: {}",
                reply.body
            );
        }
    }
}
