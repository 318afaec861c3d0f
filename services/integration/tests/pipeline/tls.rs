//! TLS to the processor (PCI DSS 4.2.1): the integration service verifies
//! the processor's certificate against the public roots and `[tls] ca_path`,
//! and a processor whose certificate it cannot verify is never called.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use snakepay_http::test_pki::TestPki;
use snakepay_resilience::BreakerState;

use crate::lifecycle::latest_attempt;
use crate::support::{Pipeline, SIM_API_KEY, WAIT, amqp_url, id};

/// `[tls]` trusting `pki`, as an `[integration]` addition.
fn trusting(pki: &TestPki) -> String {
    format!(
        "breaker_failure_threshold = 1\n[tls]\nca_path = \"{}\"\n",
        pki.ca_path().display()
    )
}

#[tokio::test]
async fn payments_reach_a_processor_whose_certificate_our_authority_signed() {
    let ours = TestPki::new("ours");
    let certificate = ours.issue("processor-sim");
    let pipeline = Pipeline::start_with(|sim| sim.tls = Some(certificate), &trusting(&ours)).await;
    assert!(pipeline.sim.base_url().starts_with("https://"));
    let merchant = pipeline.merchant().await;
    let intent = pipeline
        .pay(&merchant, "4242424242424242", 1_500, "automatic")
        .await;
    let done = pipeline
        .wait_for_intent(&merchant, &id(&intent), |i| i["status"] != "processing")
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let attempt = latest_attempt(&pipeline, &merchant, &id(&done)).await;
    assert_eq!(pipeline.sim_authorizations_for(&attempt).await.len(), 1);
    pipeline.finish().await;
}

#[tokio::test]
async fn a_processor_with_an_untrusted_certificate_is_never_called() {
    let ours = TestPki::new("ours");
    let rogue = TestPki::new("rogue");
    let certificate = rogue.issue("processor-sim");
    let mut pipeline =
        Pipeline::start_with(|sim| sim.tls = Some(certificate), &trusting(&ours)).await;
    let merchant = pipeline.merchant().await;
    // Every failed call counts against the processor's circuit breaker
    // (threshold 1): once it opens, the service has tried and failed.
    let opened = Arc::new(AtomicBool::new(false));
    let watcher = {
        let handler = Arc::clone(pipeline.integration.as_ref().unwrap().pipeline());
        let opened = Arc::clone(&opened);
        tokio::spawn(async move {
            loop {
                if !matches!(handler.gateway.breaker.state(), BreakerState::Closed { .. }) {
                    opened.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let intent = pipeline
        .pay(&merchant, "4242424242424242", 1_500, "automatic")
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !opened.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the processor calls never failed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    watcher.abort();

    // Not succeeded: the outcome is unknown, the payment waits.
    let now = pipeline
        .get(&merchant, &format!("/v1/payment_intents/{}", id(&intent)))
        .await;
    assert_eq!(now["status"], "processing", "{now}");

    // The processor saw nothing: no operation, no authorization (read with a
    // client that does trust the rogue authority).
    let reader = snakepay_http::tls::client_builder(&rogue.trust())
        .unwrap()
        .build()
        .unwrap();
    let record: Value = reader
        .get(format!("{}/_sim/operations", pipeline.sim.base_url()))
        .bearer_auth(SIM_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["operations"], serde_json::json!([]), "{record}");
    assert_eq!(record["authorizations"], serde_json::json!([]), "{record}");

    // Clean up like `finish`, without its checks against the processor.
    pipeline.stop_integration().await;
    let topology = snakepay_bus::Topology::new(&pipeline.prefix, 5);
    let connection = snakepay_bus::connect(&amqp_url()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology
        .delete(&channel, &snakepay_bus::Topology::standard_queues())
        .await
        .unwrap();
    let _ = connection.close(200, "test done".into()).await;
}
