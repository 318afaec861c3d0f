//! The real binary: configuration errors, SIGKILL under load and restart on
//! the same journal, graceful SIGTERM.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use snakepay_processor_sim as sim;

use crate::helpers::{API_KEY, authorization_body};

const BINARY: &str = env!("CARGO_BIN_EXE_snakepay-processor-sim");

fn command(journal: &std::path::Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_remove("SNAKEPAY_CONFIG")
        .env("SNAKEPAY_PROCESSOR_SIM__LISTEN_ADDR", "127.0.0.1:0")
        .env("SNAKEPAY_PROCESSOR_SIM__API_KEY", API_KEY)
        .env(
            "SNAKEPAY_PROCESSOR_SIM__JOURNAL_PATH",
            journal.display().to_string(),
        )
        .env("SNAKEPAY_TELEMETRY__LOG_FORMAT", "json")
        .env("SNAKEPAY_TELEMETRY__LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Starts the binary and reads its address from the start-up log line; the
/// rest of its log is collected in the returned buffer.
fn spawn(journal: &std::path::Path) -> (Child, String, Arc<Mutex<String>>) {
    let mut child = command(journal).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    let log = Arc::new(Mutex::new(String::new()));
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.lock().unwrap().push_str(&line);
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if event["message"] == "processor simulator listening" {
            addr = event["sim.addr"].as_str().map(str::to_owned);
            break;
        }
    }
    let addr = addr.expect("the simulator logged its address");
    let rest = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            rest.lock().unwrap().push_str(&line);
        }
    });
    (child, format!("http://{addr}"), log)
}

#[test]
fn an_invalid_setting_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(&dir.path().join("j.jsonl"))
        .env("SNAKEPAY_PROCESSOR_SIM__FAILURE_RATE", "2.0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("processor_sim.failure_rate"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_no_acknowledged_operation_and_repeats_none() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    let (mut child, base_url, first_log) = spawn(&journal);
    let client = reqwest::Client::new();

    // Four clients authorize-and-capture as fast as they can.
    let answers: Arc<Mutex<HashMap<String, Option<Value>>>> = Arc::default();
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (client, base_url, answers) = (client.clone(), base_url.clone(), Arc::clone(&answers));
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                let key = format!("load-{worker}-{n}");
                answers.lock().unwrap().insert(key.clone(), None);
                let response = client
                    .post(format!("{base_url}/v1/authorizations"))
                    .bearer_auth(API_KEY)
                    .header("Idempotency-Key", &key)
                    .json(&authorization_body(sim::CARD_APPROVED_VISA, 1_000, true))
                    .send()
                    .await;
                let Ok(response) = response else { return };
                if response.status() != StatusCode::OK {
                    return;
                }
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                answers.lock().unwrap().insert(key, Some(body));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    let acknowledged = answers.values().filter(|a| a.is_some()).count();
    assert!(acknowledged > 0, "no request finished before the kill");
    eprintln!(
        "{acknowledged} of {} authorizations acknowledged before SIGKILL",
        answers.len()
    );

    let (mut child, base_url, second_log) = spawn(&journal);
    let record: Value = client
        .get(format!("{base_url}/_sim/operations"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for operation in record["operations"].as_array().unwrap() {
        *per_key
            .entry(operation["idempotency_key"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for (key, answer) in &answers {
        let count = per_key.get(key).copied().unwrap_or(0);
        assert!(count <= 1, "{key} recorded {count} times");
        if answer.is_some() {
            assert_eq!(count, 1, "acknowledged {key} was lost");
        }
        // Every outcome, known or not, resolves by retrying with the key:
        // acknowledged ones replay the same answer, the others are done now.
        let retried: Value = client
            .post(format!("{base_url}/v1/authorizations"))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", key)
            .json(&authorization_body(sim::CARD_APPROVED_VISA, 1_000, true))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(retried["status"], "captured");
        if let Some(answer) = answer {
            assert_eq!(&retried, answer);
        }
    }
    let record: Value = client
        .get(format!("{base_url}/_sim/operations"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        record["operations"].as_array().unwrap().len(),
        answers.len()
    );

    // SIGTERM stops it gracefully with status 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    std::thread::sleep(Duration::from_millis(50));
    let log = second_log.lock().unwrap().clone();
    assert!(log.contains("processor simulator stopped"), "{log}");
    for log in [first_log.lock().unwrap().clone(), log] {
        assert!(!log.contains(sim::CARD_APPROVED_VISA));
    }
}
