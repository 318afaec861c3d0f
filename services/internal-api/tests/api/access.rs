//! Staff authentication, roles and the audit of every request.

use reqwest::Method;
use serde_json::{Value, json};
use snakepay_internal_api::tokens::{Role, SigningKey, TokenRequest};

use crate::support::{AUDIENCE, ISSUER, TestApi};

/// Every documented operation, with its path parameters filled in.
async fn operations(api: &TestApi) -> Vec<(Method, String, Role, bool)> {
    let document = api
        .client
        .get(api.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let mut found = Vec::new();
    for (path, methods) in document["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let role = match operation["x-snakepay-role"].as_str().unwrap() {
                "viewer" => Role::Viewer,
                "operator" => Role::Operator,
                "admin" => Role::Admin,
                other => panic!("unknown role {other}"),
            };
            let filled = path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        "x_nothing".to_owned()
                    } else {
                        segment.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            found.push((
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                filled,
                role,
                operation["x-snakepay-mfa"].as_bool().unwrap(),
            ));
        }
    }
    found
}

#[tokio::test]
async fn each_role_gets_exactly_the_operations_its_role_and_login_allow() {
    let api = TestApi::start().await;
    let operations = operations(&api).await;
    assert!(operations.len() > 2, "{operations:?}");
    for (method, path, needed, needs_mfa) in &operations {
        let body = (*method == Method::POST).then(|| json!({}));
        let anonymous = api.call(method.clone(), None, path, body.clone()).await;
        assert_eq!(anonymous.status, 401, "{method} {path} without a token");
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            for mfa in [false, true] {
                let token = api.token_with(role, "alice", mfa, snakepay_internal_api::now(), 600);
                let reply = api
                    .call(method.clone(), Some(&token), path, body.clone())
                    .await;
                let allowed = role >= *needed && (mfa || !needs_mfa);
                if allowed {
                    assert!(
                        ![401, 403].contains(&reply.status),
                        "{method} {path} as {role:?} (mfa {mfa}) must be allowed: {} {}",
                        reply.status,
                        reply.body
                    );
                } else {
                    assert_eq!(
                        reply.status, 403,
                        "{method} {path} as {role:?} (mfa {mfa}) must be denied: {}",
                        reply.body
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn expired_foreign_misaddressed_and_malformed_tokens_get_401() {
    let api = TestApi::start().await;
    let now = snakepay_internal_api::now();
    let fine = api.token(Role::Admin, "alice");
    assert_eq!(api.get(&fine, "/v1/me").await.status, 200);

    let expired = api.token_with(Role::Admin, "alice", true, now - 7200, 3600);
    let stranger = SigningKey::generate().unwrap().issue(&TokenRequest {
        issuer: ISSUER,
        audience: AUDIENCE,
        subject: "mallory",
        role: Role::Admin,
        mfa: true,
        now,
        ttl_seconds: 600,
    });
    let wrong_audience = api
        .key
        .issue(&TokenRequest {
            issuer: ISSUER,
            audience: "another-service",
            subject: "alice",
            role: Role::Admin,
            mfa: true,
            now,
            ttl_seconds: 600,
        })
        .unwrap();
    let mut tampered = fine.clone();
    tampered.insert(fine.len() - 5, 'A');
    for token in [
        expired,
        stranger.unwrap(),
        wrong_audience,
        tampered,
        "not.a.jwt".to_owned(),
    ] {
        let reply = api.get(&token, "/v1/me").await;
        assert_eq!(reply.status, 401, "{token}: {}", reply.body);
        assert_eq!(reply.body["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn every_request_allowed_or_denied_is_in_the_audit_trail_and_the_chain_verifies() {
    let api = TestApi::start().await;
    let viewer = api.token(Role::Viewer, "victor");
    let admin = api.token(Role::Admin, "ada");
    assert_eq!(api.get(&viewer, "/v1/me").await.status, 200);
    assert_eq!(api.get(&viewer, "/v1/audit/entries").await.status, 403);
    assert_eq!(
        api.call(Method::GET, None, "/v1/me", None).await.status,
        401
    );
    assert_eq!(
        api.call(Method::GET, None, "/v1/nowhere", None)
            .await
            .status,
        404
    );

    let reply = api.get(&admin, "/v1/audit/entries?limit=10").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let entries = reply.body["data"].as_array().unwrap();
    let seen: Vec<(String, String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["actor_subject"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["resource"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("anonymous", "GET (no route)", "/v1/nowhere", "rejected"),
        ("anonymous", "GET /v1/me", "/v1/me", "unauthenticated"),
        (
            "victor",
            "GET /v1/audit/entries",
            "/v1/audit/entries",
            "denied",
        ),
        ("victor", "GET /v1/me", "/v1/me", "allowed"),
    ];
    let expected: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(a, b, c, d)| ((*a).into(), (*b).into(), (*c).into(), (*d).into()))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(entries[1]["origin"], "127.0.0.1");
    assert_eq!(entries[1]["details"]["status"], 401);

    let verified = api.post(&admin, "/v1/audit/verify", json!({})).await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verified.body["intact"], true);
    // The four requests, the query, and (being written after it ran)
    // not yet this verification.
    assert_eq!(verified.body["verified_rows"], 5);
}

#[tokio::test]
async fn the_openapi_document_lists_every_operation_with_its_role_and_errors() {
    let api = TestApi::start().await;
    // Health and the document need no token.
    assert_eq!(
        api.call(Method::GET, None, "/livez", None).await.status,
        200
    );
    let reply = api.call(Method::GET, None, "/v1/openapi.json", None).await;
    assert_eq!(reply.status, 200);
    let document = reply.body;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(
        document["components"]["securitySchemes"]["staffToken"]["bearerFormat"],
        "JWT"
    );
    let paths = document["paths"].as_object().unwrap();
    for expected in [
        "/v1/merchants",
        "/v1/merchants/{id}/kyc",
        "/v1/merchants/{id}/keys",
        "/v1/keys/{key_id}/roll",
        "/v1/keys/{key_id}/revoke",
        "/v1/payments",
        "/v1/payments/{id}",
        "/v1/payments/{id}/refunds",
        "/v1/refund_requests/{id}/approve",
        "/v1/ledger/trial_balance",
        "/v1/reconciliation",
        "/v1/dead_letters/{id}/replay",
        "/v1/audit/entries",
        "/v1/audit/verify",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }
    for (path, methods) in paths {
        for (method, operation) in methods.as_object().unwrap() {
            assert!(operation["summary"].is_string(), "{method} {path}");
            assert!(operation["x-snakepay-role"].is_string(), "{method} {path}");
            assert!(operation["responses"]["403"].is_object(), "{method} {path}");
        }
    }
    assert_eq!(
        paths["/v1/audit/verify"]["post"]["x-snakepay-role"],
        "admin"
    );
    assert_eq!(
        paths["/v1/merchants/{id}/keys"]["post"]["x-snakepay-mfa"],
        true
    );
}
