//! The admin commands against real databases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use snakepay_admin::{AdminConfig, Command, KeysCommand, MerchantCommand, run};
use snakepay_domain::ids::{MerchantId, RegionNumber};
use snakepay_store::merchants::{self, KeyHasher};
use snakepay_store::testing;

fn config(db: &testing::TestDatabases, key_ring: &std::path::Path) -> AdminConfig {
    let shards: Vec<String> = db.shard_urls().iter().map(|u| format!("\"{u}\"")).collect();
    let toml = format!(
        r#"
        [region]
        code = "local"
        number = 1
        public_api_url = "http://127.0.0.1:8081"
        [database]
        control_url = "{}"
        shard_urls = [{}]
        [api_keys]
        hash_secret_base64 = "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ="
        [vault]
        key_ring_path = "{}"
        "#,
        db.control_url(),
        shards.join(", "),
        key_ring.display()
    );
    snakepay_config::from_toml_str(&toml).unwrap()
}

async fn run_to_json(config: &AdminConfig, command: Command) -> serde_json::Value {
    let mut out = Vec::new();
    run(config, command, &mut out).await.unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[tokio::test]
async fn migrate_then_merchant_create_prints_working_test_keys() {
    let db = testing::fresh(2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&db, &dir.path().join("keyring.json"));
    // Templates are already migrated; migrating again is a no-op that succeeds.
    let migrated = run_to_json(&config, Command::Migrate).await;
    assert_eq!(migrated["migrated"]["shards"], 2);

    let created = run_to_json(
        &config,
        Command::Merchant(MerchantCommand::Create {
            name: "Demo Shop".into(),
            country: "de".into(),
            verified: false,
        }),
    )
    .await;
    let merchant = MerchantId::parse(created["merchant"].as_str().unwrap()).unwrap();
    let secret = created["secret_key"].as_str().unwrap();
    assert!(secret.starts_with("sk_test_"));
    assert!(
        created["publishable_key"]
            .as_str()
            .unwrap()
            .starts_with("pk_test_")
    );
    assert!(created.get("live_secret_key").is_none());
    let hasher = KeyHasher::new(&config.api_keys.hash_secret()).unwrap();
    let auth = merchants::authenticate(db.store.control(), &hasher, RegionNumber(1), secret)
        .await
        .unwrap();
    assert_eq!(auth.merchant_id, merchant);

    // Both keys issued are audited by ID (never the key itself).
    let issued: Vec<(String, String, String)> =
        sqlx::query_as("select action, resource, details from audit_log order by id")
            .fetch_all(db.store.control())
            .await
            .unwrap();
    assert_eq!(issued.len(), 2, "{issued:?}");
    for (action, resource, details) in &issued {
        assert_eq!(action, "api_key.create");
        assert!(resource.starts_with("key_"), "{resource}");
        assert!(details.contains(&merchant.to_string()), "{details}");
        assert!(!details.contains(secret) && !resource.contains(secret));
    }
}

#[tokio::test]
async fn a_verified_merchant_gets_a_working_live_key() {
    let db = testing::fresh(1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&db, &dir.path().join("keyring.json"));
    let created = run_to_json(
        &config,
        Command::Merchant(MerchantCommand::Create {
            name: "Live Shop".into(),
            country: "FR".into(),
            verified: true,
        }),
    )
    .await;
    let live = created["live_secret_key"].as_str().unwrap();
    let hasher = KeyHasher::new(&config.api_keys.hash_secret()).unwrap();
    assert!(
        merchants::authenticate(db.store.control(), &hasher, RegionNumber(1), live)
            .await
            .unwrap()
            .livemode
    );
}

#[tokio::test]
async fn bad_merchant_input_is_refused_with_a_clear_message() {
    let db = testing::fresh(1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&db, &dir.path().join("keyring.json"));
    let mut out = Vec::new();
    let error = run(
        &config,
        Command::Merchant(MerchantCommand::Create {
            name: "X".into(),
            country: "Germany".into(),
            verified: false,
        }),
        &mut out,
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("--country"), "{error}");
}

#[tokio::test]
async fn keys_init_creates_a_loadable_key_ring_once() {
    let db = testing::fresh(1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("keyring.json");
    let config = config(&db, &path);
    let first = run_to_json(&config, Command::Keys(KeysCommand::Init { path: None })).await;
    assert_eq!(first["created"], true);
    let before = std::fs::read(&path).unwrap();
    let second = run_to_json(&config, Command::Keys(KeysCommand::Init { path: None })).await;
    assert_eq!(second["created"], false);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "an existing key ring is never overwritten"
    );
    let provider = snakepay_vault::FileKeyProvider::new(&path);
    snakepay_vault::Vault::load(&provider).unwrap();
}

/// The config with an `[internal_api]` section whose key files are in `dir`.
fn config_with_tokens(db: &testing::TestDatabases, dir: &std::path::Path) -> AdminConfig {
    let shards: Vec<String> = db.shard_urls().iter().map(|u| format!("\"{u}\"")).collect();
    let toml = format!(
        r#"
        [region]
        code = "local"
        number = 1
        public_api_url = "http://127.0.0.1:8081"
        [database]
        control_url = "{}"
        shard_urls = [{}]
        [api_keys]
        hash_secret_base64 = "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ="
        [vault]
        key_ring_path = "{}"
        [internal_api]
        listen_addr = "127.0.0.1:0"
        jwks = "{}"
        token_signing_key_path = "{}"
        "#,
        db.control_url(),
        shards.join(", "),
        dir.join("keyring.json").display(),
        dir.join("jwks.json").display(),
        dir.join("signing-key.json").display()
    );
    snakepay_config::from_toml_str(&toml).unwrap()
}

#[tokio::test]
async fn token_issue_signs_a_token_the_internal_api_verifies() {
    use snakepay_admin::TokenCommand;
    use snakepay_internal_api::tokens::{Role, Verifier};
    let db = testing::fresh(1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_tokens(&db, dir.path());
    let init = run_to_json(&config, Command::Token(TokenCommand::Init)).await;
    assert_eq!(init["created"], true);
    let issued = run_to_json(
        &config,
        Command::Token(TokenCommand::Issue {
            role: "operator".into(),
            subject: "alice".into(),
            mfa: true,
            ttl: "1h".into(),
        }),
    )
    .await;
    let section = config.internal_api.as_ref().unwrap();
    let verifier = Verifier::new(
        section.jwks_source(),
        &section.token_issuer,
        &section.token_audience,
    )
    .unwrap();
    verifier.load().await.unwrap();
    let staff = verifier
        .verify(issued["token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (staff.subject.as_str(), staff.role, staff.mfa),
        ("alice", Role::Operator, true)
    );
    // The key is kept: a second init creates nothing, tokens still verify.
    let again = run_to_json(&config, Command::Token(TokenCommand::Init)).await;
    assert_eq!(again["created"], false);
    assert_eq!(again["kid"], init["kid"]);
    let mut out = Vec::new();
    let refused = run(
        &config,
        Command::Token(TokenCommand::Issue {
            role: "root".into(),
            subject: "alice".into(),
            mfa: false,
            ttl: "1h".into(),
        }),
        &mut out,
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn audit_verify_passes_an_intact_trail_and_fails_a_tampered_one() {
    use snakepay_admin::AuditCommand;
    use snakepay_store::audit::{self, Actor, NewEntry};
    let db = testing::fresh(1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&db, &dir.path().join("keyring.json"));
    let control = db.store.control();
    for action in ["a", "b", "c"] {
        audit::append(
            control,
            &NewEntry {
                actor: &Actor {
                    subject: "alice".into(),
                    role: "admin".into(),
                },
                action,
                resource: None,
                outcome: "allowed",
                origin: None,
                details: &serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    }
    let verified = run_to_json(&config, Command::Audit(AuditCommand::Verify)).await;
    assert_eq!(verified["intact"], true);
    assert_eq!(verified["verified_rows"], 3);

    let mut tx = control.begin().await.unwrap();
    for sql in [
        "alter table audit_log disable trigger audit_log_append_only",
        "update audit_log set action = 'z' where id = 2",
        "alter table audit_log enable trigger audit_log_append_only",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut out = Vec::new();
    let error = run(&config, Command::Audit(AuditCommand::Verify), &mut out)
        .await
        .unwrap_err();
    assert!(format!("{error}").contains("Altered { id: 2 }"), "{error}");
    let printed: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(printed["first_break"]["kind"], "altered");
}
