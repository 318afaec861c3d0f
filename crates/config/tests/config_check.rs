//! The start-up contract, end to end through a real process: environment
//! overrides apply, and a bad value stops the process with exit code 64 and a
//! message that names the key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::{Command, Output};

const VALID: &str = r#"
[region]
code = "eu-1"
number = 1
public_api_url = "https://api.eu-1.snakepay.test"

[database]
control_url = "postgres://localhost/snakepay_control"
shard_urls = ["postgres://localhost/shard_0", "postgres://localhost/shard_1"]

[redis]
url = "redis://127.0.0.1:6379"

[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"

[api_keys]
hash_secret_base64 = "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ="

[vault]
key_ring_path = "/tmp/keyring.json"
"#;

fn run(file_contents: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snakepay.toml");
    std::fs::write(&path, file_contents).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_snakepay-config-check"));
    // Only our variables: the developer's own SNAKEPAY_ settings must not leak in.
    for (name, _) in std::env::vars() {
        if name.starts_with("SNAKEPAY_") {
            command.env_remove(name);
        }
    }
    command
        .env("SNAKEPAY_CONFIG", &path)
        .envs(env.iter().copied());
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_valid_file_passes() {
    let output = run(VALID, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("2 shard(s)"));
}

#[test]
fn an_environment_override_replaces_the_file_value() {
    let output = run(
        VALID,
        &[(
            "SNAKEPAY_DATABASE__SHARD_URLS",
            "[\"postgres://a/s0\", \"postgres://a/s1\", \"postgres://a/s2\"]",
        )],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("3 shard(s)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_bad_environment_value_exits_64_naming_the_key() {
    let output = run(VALID, &[("SNAKEPAY_DATABASE__MAX_CONNECTIONS", "0")]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("`database.max_connections`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_missing_required_key_exits_64_naming_the_key() {
    let output = run(
        &VALID.replace("url = \"redis://127.0.0.1:6379\"\n", ""),
        &[],
    );
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("`redis.url`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_syntax_error_exits_64_naming_the_file() {
    let output = run("[region\ncode = ", &[]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("snakepay.toml"),
        "{}",
        stderr(&output)
    );
}
