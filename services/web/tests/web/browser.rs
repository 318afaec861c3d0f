//! The hosted checkout in a real browser: the Node.js scripts in
//! web/tests/browser/ drive Debian's Chromium with Playwright against the
//! real build, served by the web service, with the whole payment pipeline
//! behind it. Screenshots land in web/test-results/.
//!
//! Skipped, with a message, only when Chromium is missing and
//! `SNAKEPAY_REQUIRE_BROWSER` is unset; scripts/test.sh installs Chromium
//! and sets it, so CI always runs them.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{Stack, repo_root};

const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// Generous: every scenario together takes well under a minute.
const BROWSER_TESTS_TIMEOUT: Duration = Duration::from_secs(600);

fn chromium() -> String {
    std::env::var("SNAKEPAY_CHROMIUM").unwrap_or_else(|_| DEFAULT_CHROMIUM.to_owned())
}

/// Runs `program args` in `dir`, failing the test with its output if it fails.
async fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, String)]) {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(BROWSER_TESTS_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in time"))
        .unwrap_or_else(|error| panic!("cannot run {program}: {error} (is Node.js installed?)"));
    // Shown by the test runner, on failure at least.
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        output.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_works_in_a_real_browser() {
    let chromium = chromium();
    if !Path::new(&chromium).exists() {
        assert!(
            std::env::var_os("SNAKEPAY_REQUIRE_BROWSER").is_none(),
            "SNAKEPAY_REQUIRE_BROWSER is set but there is no browser at {chromium}"
        );
        eprintln!(
            "SKIPPED: no browser at {chromium}; `apt-get install chromium` (scripts/test.sh does) to run the browser tests"
        );
        return;
    }
    let web = repo_root().join("web");
    if !web.join("node_modules/playwright-core").is_dir() {
        run(&web, "npm", &["ci", "--no-audit", "--no-fund"], &[]).await;
    }
    // The real build, into a folder of this test's own.
    let build = tempfile::tempdir().unwrap();
    let dist = build.path().join("dist");
    run(
        &web,
        "node",
        &["build.mjs", "--out", dist.to_str().unwrap()],
        &[],
    )
    .await;

    let stack = Stack::start(&dist).await;
    run(
        &web,
        "node",
        &["--test", "tests/browser/"],
        &[
            ("SNAKEPAY_WEB_URL", stack.web.url()),
            ("SNAKEPAY_API_URL", stack.api.url()),
            ("SNAKEPAY_CHROMIUM", chromium),
            (
                "SNAKEPAY_ARTIFACTS_DIR",
                web.join("test-results").display().to_string(),
            ),
        ],
    )
    .await;

    // What the browser did, as the merchant sees it: every payment it made
    // is final (none left processing or waiting for the bank).
    let intents = stack.api.get("/v1/payment_intents?limit=100").await;
    let statuses: Vec<&str> = intents["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    let succeeded = statuses.iter().filter(|s| **s == "succeeded").count();
    assert!(succeeded >= 5, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| matches!(*s, "succeeded" | "requires_payment_method")),
        "{statuses:?}"
    );
    stack.stop().await;
}
