//! Graceful shutdown.

use std::time::{Duration, Instant};

use snakepay_http::EdgeLimits;

use crate::app::{TestApp, body, demo_router};

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let mut app = TestApp::with_router(
        demo_router(),
        EdgeLimits::default(),
        Duration::from_secs(10),
    )
    .await;
    let request = app.client.get(app.url("/v1/slow?ms=700")).send();
    let in_flight = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.server.begin_shutdown();
    let response = in_flight.await.unwrap().unwrap();
    let (status, v) = body(response).await;
    assert_eq!(status, 200);
    assert_eq!(v["slept_ms"], 700);
    let addr = app.server.addr();
    tokio::time::timeout(Duration::from_secs(5), app.server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn shutdown_gives_up_on_stragglers_after_the_grace_period() {
    let mut app = TestApp::with_router(
        demo_router(),
        EdgeLimits::default(),
        Duration::from_millis(200),
    )
    .await;
    let in_flight = tokio::spawn(app.client.get(app.url("/v1/slow?ms=20000")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.server.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(5), app.server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    in_flight.abort();
}
