//! `/livez` and `/readyz`.

use std::time::Duration;

use serde_json::json;
use snakepay_http::{EdgeLimits, Health, ReadinessCheck, health_routes};

use crate::app::{TestApp, body};

async fn app_with(checks: Vec<ReadinessCheck>) -> TestApp {
    TestApp::with_router(
        health_routes(checks),
        EdgeLimits::default(),
        Duration::from_secs(1),
    )
    .await
}

#[tokio::test]
async fn livez_always_answers_ok() {
    let app = app_with(vec![ReadinessCheck::new("db", || async {
        Health::down("refused")
    })])
    .await;
    let response = app.get("/livez").await;
    assert!(response.headers().get("request-id").is_some());
    let (status, v) = body(response).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_is_200_when_every_dependency_is_ok_or_degraded() {
    let app = app_with(vec![
        ReadinessCheck::new("postgres", || async { Health::ok() }),
        ReadinessCheck::new("redis", || async {
            Health::degraded("cache unreachable; serving from the database")
        }),
    ])
    .await;
    let (status, v) = body(app.get("/readyz").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({
            "status": "degraded",
            "checks": [
                {"name": "postgres", "state": "ok"},
                {"name": "redis", "state": "degraded", "reason": "cache unreachable; serving from the database"},
            ],
        })
    );
}

#[tokio::test]
async fn readyz_is_503_when_a_dependency_is_down_or_hangs() {
    let app = app_with(vec![
        ReadinessCheck::new("postgres", || async { Health::ok() }),
        ReadinessCheck::new("rabbitmq", || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Health::ok()
        })
        .with_timeout(Duration::from_millis(100)),
    ])
    .await;
    let (status, v) = body(app.get("/readyz").await).await;
    assert_eq!(status, 503);
    assert_eq!(v["status"], "down");
    assert_eq!(v["checks"][1]["state"], "down");
    assert_eq!(v["checks"][1]["reason"], "no answer within 100 ms");
}

#[tokio::test]
async fn readyz_checks_run_concurrently() {
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Health::ok()
    };
    let app = app_with(vec![
        ReadinessCheck::new("a", slow),
        ReadinessCheck::new("b", slow),
        ReadinessCheck::new("c", slow),
    ])
    .await;
    let started = std::time::Instant::now();
    let (status, _) = body(app.get("/readyz").await).await;
    assert_eq!(status, 200);
    // Sequential checks would take at least 900 ms.
    assert!(
        started.elapsed() < Duration::from_millis(850),
        "{:?}",
        started.elapsed()
    );
}
