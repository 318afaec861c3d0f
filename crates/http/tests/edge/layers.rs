//! Request IDs, version header, routing hygiene, limits, timeouts, panics.

use std::time::Duration;

use serde_json::json;
use snakepay_http::{API_VERSION, EdgeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::{TestApp, body, error};

fn assert_stamped(response: &reqwest::Response) {
    let id = response
        .headers()
        .get("request-id")
        .expect("Request-Id")
        .to_str()
        .unwrap();
    assert!(id.starts_with("req_"), "{id}");
    assert_eq!(
        response.headers().get("stripe-version").unwrap(),
        API_VERSION
    );
}

fn small_limits() -> EdgeLimits {
    EdgeLimits {
        body_limit_bytes: 1024,
        request_timeout: Duration::from_millis(300),
        path_prefix: Some("/api".to_owned()),
        ..EdgeLimits::default()
    }
}

#[tokio::test]
async fn beyond_the_in_flight_limit_requests_are_shed_at_once_and_health_probes_are_not() {
    let limits = EdgeLimits {
        max_in_flight: 1,
        ..EdgeLimits::default()
    };
    let router = crate::app::demo_router().route("/livez", axum::routing::get(|| async { "ok" }));
    let app = TestApp::with_router(router, limits, Duration::from_secs(5)).await;
    let busy = {
        let client = app.client.clone();
        let url = app.url("/v1/slow?ms=1500");
        tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
    };
    // Until the slow request holds the only slot.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let shed = loop {
        let response = app.get("/v1/echo").await;
        if response.status() == 503 {
            break response;
        }
        assert!(tokio::time::Instant::now() < deadline, "never shed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Answered while the slot's holder still runs: shed, not queued.
    assert!(!busy.is_finished());
    assert_stamped(&shed);
    assert_eq!(shed.headers().get("stripe-should-retry").unwrap(), "true");
    let e = error(shed, 503).await;
    assert_eq!(e["type"], "api_error");
    assert_eq!(app.get("/livez").await.status(), 200);

    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(
        app.get("/v1/echo").await.status(),
        200,
        "the slot is free again"
    );
}

#[tokio::test]
async fn every_kind_of_response_carries_request_id_and_version() {
    let app = TestApp::with_limits(small_limits()).await;
    let ok = app.get("/v1/echo").await;
    assert_stamped(&ok);
    assert_eq!(ok.status(), 200);

    let bad = app.form("/v1/echo", "a=1&a=2").await;
    assert_stamped(&bad);
    error(bad, 400).await;

    let missing = app.get("/v1/nothing").await;
    assert_stamped(&missing);
    let e = error(missing, 404).await;
    assert_eq!(e["message"], "Unrecognized request URL (GET: /v1/nothing)");
    assert_eq!(e["type"], "invalid_request_error");

    let wrong_method = app.client.delete(app.url("/v1/read")).send().await.unwrap();
    assert_stamped(&wrong_method);
    assert!(wrong_method.headers().get("allow").is_some());
    error(wrong_method, 405).await;

    let too_big = app
        .form("/v1/echo", &format!("a={}", "x".repeat(2000)))
        .await;
    assert_stamped(&too_big);
    error(too_big, 413).await;

    let slow = app.get("/v1/slow?ms=3000").await;
    assert_stamped(&slow);
    assert_eq!(slow.headers().get("stripe-should-retry").unwrap(), "true");
    let e = error(slow, 503).await;
    assert_eq!(e["type"], "api_error");

    let panicked = app.get("/v1/panic").await;
    assert_stamped(&panicked);
    let e = error(panicked, 500).await;
    assert_eq!(e["type"], "api_error");
    assert!(!e["message"].as_str().unwrap().contains("boom"));
}

#[tokio::test]
async fn request_ids_are_unique_and_match_what_handlers_see() {
    let app = TestApp::start().await;
    let a = app.get("/v1/request_id").await;
    let header = a
        .headers()
        .get("request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let (_, v) = body(a).await;
    assert_eq!(v["id"], header);
    let b = app.get("/v1/request_id").await;
    assert_ne!(
        b.headers().get("request-id").unwrap().to_str().unwrap(),
        header
    );
}

#[tokio::test]
async fn any_stripe_version_is_accepted_and_ours_is_answered() {
    let app = TestApp::start().await;
    let response = app
        .client
        .get(app.url("/v1/echo"))
        .header("stripe-version", "2020-08-27")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("stripe-version").unwrap(),
        API_VERSION
    );
}

#[tokio::test]
async fn doubled_leading_slash_and_configured_prefix_route_normally() {
    let app = TestApp::with_limits(small_limits()).await;
    for path in [
        "//v1/echo?a=1",
        "/api/v1/echo?a=1",
        "/api//v1/echo?a=1",
        "//api/v1/echo?a=1",
        "/v1/echo?a=1",
    ] {
        let (status, v) = body(app.get(path).await).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(v["tree"], json!({"a": "1"}), "{path}");
    }
    error(app.get("/apiv1/echo").await, 404).await;
}

#[tokio::test]
async fn doubled_slash_routes_over_a_raw_connection() {
    // Sent by hand so no client library can tidy the path first.
    let app = TestApp::start().await;
    let raw = raw_request(
        &app,
        "GET //v1/echo?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("request-id: req_"),
        "{raw}"
    );
}

#[tokio::test]
async fn chunked_bodies_over_the_limit_are_refused_in_the_envelope() {
    let app = TestApp::with_limits(small_limits()).await;
    let chunk = "x".repeat(1500);
    let request = format!(
        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\na={chunk}\r\n0\r\n\r\n",
        chunk.len() + 2
    );
    let raw = raw_request(&app, &request).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("invalid_request_error"), "{raw}");
}

#[tokio::test]
async fn axum_body_extractors_obey_the_same_limit_in_the_envelope() {
    let app = TestApp::with_limits(small_limits()).await;
    let response = app
        .client
        .post(app.url("/v1/bytes"))
        .body("x".repeat(500))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .client
        .post(app.url("/v1/bytes"))
        .body("x".repeat(2000))
        .send()
        .await
        .unwrap();
    assert_stamped(&response);
    error(response, 413).await;
}

#[tokio::test]
async fn responses_are_not_cacheable() {
    let app = TestApp::start().await;
    let response = app.get("/v1/echo").await;
    assert_eq!(
        response.headers().get("cache-control").unwrap(),
        "no-cache, no-store"
    );
}

async fn raw_request(app: &TestApp, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(app.server.addr())
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
