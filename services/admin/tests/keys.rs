//! `snakepay-admin keys rotate | retire | status` against real databases,
//! while cards are being tokenized and opened.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use snakepay_admin::keys::{self, SEALED_COLUMNS};
use snakepay_admin::{AdminConfig, Command, KeysCommand, run};
use snakepay_domain::ids::{MerchantId, PaymentMethodId, RegionNumber, ShardNumber};
use snakepay_store::intents::{self, CardRecord, SealedColumns};
use snakepay_store::{Store, attempts, testing};
use snakepay_vault::{Cvc, FileKeyProvider, KeyProvider, Pan, SealedRecord, Vault};

fn config(db: &testing::TestDatabases, key_ring: &std::path::Path, provider: &str) -> AdminConfig {
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
        key_provider = "{provider}"
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

/// A random Luhn-valid 16-digit Visa number.
fn random_pan() -> String {
    let mut bytes = [0_u8; 15];
    getrandom::fill(&mut bytes).unwrap();
    let mut digits: Vec<u32> = std::iter::once(4)
        .chain(bytes.iter().take(14).map(|b| u32::from(*b) % 10))
        .collect();
    // The check digit makes the Luhn sum a multiple of ten.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                (d * 2) % 9 + u32::from(d == 9) * 9
            } else {
                d
            }
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    let pan: String = digits
        .iter()
        .map(|d| char::from_digit(*d, 10).unwrap())
        .collect();
    Pan::parse(&pan).unwrap();
    pan
}

fn columns(sealed: SealedRecord) -> SealedColumns {
    let (key_id, wrapped_key, ciphertext) = sealed.into_parts();
    SealedColumns {
        key_id,
        wrapped_key,
        ciphertext,
    }
}

fn record(columns: &SealedColumns) -> SealedRecord {
    SealedRecord::from_parts(
        columns.key_id.clone(),
        columns.wrapped_key.clone(),
        columns.ciphertext.clone(),
    )
    .unwrap()
}

/// Tokenizes one card the way the External API does (seal the PAN and CVC
/// under the payment method's ID, store with `insert_card`).
async fn tokenize(store: &Store, vault: &Vault, shard: ShardNumber, pan: &str) -> PaymentMethodId {
    let id = PaymentMethodId::generate(RegionNumber(1), shard).unwrap();
    let merchant = MerchantId::generate(RegionNumber(1), shard).unwrap();
    let pan = Pan::parse(pan).unwrap();
    let aad = id.to_string();
    let card = CardRecord {
        id,
        merchant_id: merchant,
        livemode: false,
        customer: None,
        brand: pan.brand().as_str().to_owned(),
        first6: pan.first6().to_owned(),
        last4: pan.last4().to_owned(),
        exp_month: 12,
        exp_year: 2034,
        fingerprint: vault.fingerprint(&pan).to_string(),
        pan: columns(vault.seal_pan(&pan, aad.as_bytes()).unwrap()),
        cvc: Some(columns(
            vault
                .seal_cvc(&Cvc::parse("123").unwrap(), aad.as_bytes())
                .unwrap(),
        )),
        created: 1,
    };
    let mut tx = store.shard(shard).unwrap().begin().await.unwrap();
    intents::insert_card(&mut tx, &card).await.unwrap();
    tx.commit().await.unwrap();
    id
}

/// Opens a stored card the way the integration service does; `None` when
/// the CVC was already forgotten.
async fn open(store: &Store, vault: &Vault, id: PaymentMethodId) -> Result<String, String> {
    let pool = store.shard(id.shard()).unwrap();
    let sealed = attempts::sealed_card(pool, id)
        .await
        .unwrap()
        .ok_or("payment method not found")?;
    let aad = id.to_string();
    let pan = vault
        .open_pan(&record(&sealed.pan), aad.as_bytes())
        .map_err(|e| format!("{id} PAN ({}): {e}", sealed.pan.key_id))?;
    if let Some(cvc) = &sealed.cvc {
        let cvc = vault
            .open_cvc(&record(cvc), aad.as_bytes())
            .map_err(|e| format!("{id} CVC ({}): {e}", cvc.key_id))?;
        assert_eq!(cvc.expose_digits(), "123");
    }
    Ok(pan.expose_digits().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_while_cards_are_tokenized_and_opened_leaves_every_card_decryptable() {
    let db = testing::fresh(2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let config = config(&db, &path, "file");
    run_to_json(&config, Command::Keys(KeysCommand::Init { path: None })).await;
    let store = Arc::new(Store::connect_lazy(&config.database).unwrap());
    let provider: Arc<dyn KeyProvider> = Arc::new(FileKeyProvider::new(&path));
    // Two services, each with its own reloading vault, as in production.
    // The sealing one checks its ring often, so it moves to the new KEK; the
    // opening one would not look again within the test, so it can only open
    // records re-wrapped under the new KEK by reloading when it meets one.
    let api = Arc::new(Vault::reloading(provider.clone(), Duration::from_millis(100)).unwrap());
    let integration =
        Arc::new(Vault::reloading(provider.clone(), Duration::from_secs(3600)).unwrap());

    let cards: Arc<Mutex<Vec<(PaymentMethodId, String)>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let opened = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..3_u8 {
        let (store, api, cards, stop) = (store.clone(), api.clone(), cards.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let pan = random_pan();
                let id = tokenize(&store, &api, ShardNumber(worker % 2), &pan).await;
                cards.lock().unwrap().push((id, pan));
            }
        }));
    }
    for worker in 0..3_usize {
        let (store, integration, cards, errors, opened, stop) = (
            store.clone(),
            integration.clone(),
            cards.clone(),
            errors.clone(),
            opened.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = worker;
            while !stop.load(Ordering::Relaxed) {
                let card = {
                    let cards = cards.lock().unwrap();
                    (!cards.is_empty()).then(|| cards[n % cards.len()].clone())
                };
                n = n.wrapping_mul(31).wrapping_add(7);
                let Some((id, pan)) = card else {
                    tokio::task::yield_now().await;
                    continue;
                };
                match open(&store, &integration, id).await {
                    Ok(digits) if digits == pan => {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => errors.lock().unwrap().push(format!("{id}: wrong card")),
                    Err(error) => errors.lock().unwrap().push(error),
                }
                // After an authorization the CVC is forgotten: a concurrent
                // change the rotation's compare-and-set must survive.
                if n % 3 == 0 {
                    let mut tx = store.shard(id.shard()).unwrap().begin().await.unwrap();
                    sqlx::query(
                        "update payment_methods set cvc_key_id = null, cvc_wrapped_key = null,
                             cvc_ciphertext = null where id = $1",
                    )
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                }
            }
        }));
    }

    // Let a few hundred cards exist under kek-1, then rotate while the
    // workers keep going.
    while cards.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_rotation = cards.lock().unwrap().len();
    let opened_before = opened.load(Ordering::Relaxed);
    let rotation = keys::rotate(
        &store,
        provider.as_ref(),
        &keys::Rotation {
            add_kek: true,
            batch_size: 7,
            pause: Duration::from_millis(2),
            settle: Duration::from_millis(400),
        },
    )
    .await
    .unwrap();
    let during_rotation = cards.lock().unwrap().len() - before_rotation;
    let opened_during = opened.load(Ordering::Relaxed) - opened_before;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    assert_eq!(rotation.added_kek_id.as_deref(), Some("kek-2"));
    assert!(rotation.failed.is_empty(), "{:?}", rotation.failed);
    assert!(
        rotation.rewrapped >= before_rotation as u64,
        "{rotation:?} but {before_rotation} cards existed"
    );
    assert!(
        during_rotation > 0 && opened_during > 0,
        "payments must flow during the rotation: {during_rotation} tokenized, {opened_during} opened"
    );
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} failures: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(
        rotation.remaining.keys().collect::<Vec<_>>(),
        ["kek-2"],
        "{rotation:?}"
    );

    // kek-1 is unused now: retire it; then every card opens with kek-2 alone.
    let retired = run_to_json(
        &config,
        Command::Keys(KeysCommand::Retire {
            kek: "kek-1".into(),
        }),
    )
    .await;
    assert_eq!(retired["kek_ids"], serde_json::json!(["kek-2"]));
    let fresh = Vault::load(provider.as_ref()).unwrap();
    assert_eq!(fresh.key_ring().kek_ids().collect::<Vec<_>>(), ["kek-2"]);
    let cards = cards.lock().unwrap().clone();
    for (id, pan) in &cards {
        assert_eq!(&open(&store, &fresh, *id).await.unwrap(), pan);
    }
    let status = run_to_json(&config, Command::Keys(KeysCommand::Status)).await;
    assert_eq!(status["active_kek_id"], "kek-2");
    let records = status["records"]["kek-2"].as_i64().unwrap();
    assert!(records >= cards.len() as i64, "{status}");
    // Fingerprints use their own key, untouched by the rotation.
    let (id, pan) = &cards[0];
    let stored: String =
        sqlx::query_scalar("select fingerprint from payment_methods where id = $1")
            .bind(id.to_string())
            .fetch_one(store.shard(id.shard()).unwrap())
            .await
            .unwrap();
    assert_eq!(
        stored,
        fresh.fingerprint(&Pan::parse(pan).unwrap()).to_string()
    );
    store.close().await;
}

#[tokio::test]
async fn retire_refuses_a_key_that_still_wraps_records() {
    let db = testing::fresh(1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let config = config(&db, &path, "file");
    run_to_json(&config, Command::Keys(KeysCommand::Init { path: None })).await;
    let store = Store::connect_lazy(&config.database).unwrap();
    let vault = Vault::load(&FileKeyProvider::new(&path)).unwrap();
    tokenize(&store, &vault, ShardNumber(0), &random_pan()).await;

    // A new KEK stored, nothing re-wrapped yet (as if the rotation stopped).
    let provider = FileKeyProvider::new(&path);
    let mut ring = provider.load_key_ring().unwrap();
    ring.add_active_kek("kek-2").unwrap();
    provider.store_key_ring(&ring).unwrap();

    let mut out = Vec::new();
    let error = run(
        &config,
        Command::Keys(KeysCommand::Retire {
            kek: "kek-1".into(),
        }),
        &mut out,
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("still wraps 2 records"),
        "{error}"
    );
    assert_eq!(provider.load_key_ring().unwrap().kek_ids().count(), 2);

    // `--rewrap-only` finishes the job without adding another KEK.
    let rotated = run_to_json(
        &config,
        Command::Keys(KeysCommand::Rotate {
            rewrap_only: true,
            batch_size: 10,
            pause_ms: 0,
            settle_ms: Some(0),
        }),
    )
    .await;
    assert_eq!(rotated["added_kek_id"], serde_json::Value::Null);
    assert_eq!(rotated["rewrapped"], 2);
    assert_eq!(rotated["records"], serde_json::json!({ "kek-2": 2 }));
    run_to_json(
        &config,
        Command::Keys(KeysCommand::Retire {
            kek: "kek-1".into(),
        }),
    )
    .await;
    // The active key can never be retired.
    let error = run(
        &config,
        Command::Keys(KeysCommand::Retire {
            kek: "kek-2".into(),
        }),
        &mut out,
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("is the active key"),
        "{error:#}"
    );

    // Every key operation, done or refused, is in the audit trail (PCI DSS
    // 10.2.2), in order, and the chain verifies.
    let trail: Vec<(String, Option<String>, String, String)> =
        sqlx::query_as("select action, resource, outcome, actor_role from audit_log order by id")
            .fetch_all(store.control())
            .await
            .unwrap();
    let trail: Vec<(&str, Option<&str>, &str)> = trail
        .iter()
        .map(|(action, resource, outcome, role)| {
            assert_eq!(role, "admin-cli");
            (action.as_str(), resource.as_deref(), outcome.as_str())
        })
        .collect();
    assert_eq!(
        trail,
        [
            ("keys.retire", Some("kek-1"), "refused"),
            ("keys.rewrap", Some("kek-2"), "succeeded"),
            ("keys.retire", Some("kek-1"), "succeeded"),
            ("keys.retire", Some("kek-2"), "refused"),
        ]
    );
    let verification = snakepay_store::audit::verify_chain(store.control())
        .await
        .unwrap();
    assert!(verification.intact(), "{verification:?}");
    store.close().await;
}

#[tokio::test]
async fn the_environment_provider_cannot_be_rotated_in_place() {
    let db = testing::fresh(1).await.unwrap();
    let config = config(&db, std::path::Path::new(""), "environment");
    let mut out = Vec::new();
    let error = run(
        &config,
        Command::Keys(KeysCommand::Rotate {
            rewrap_only: false,
            batch_size: 10,
            pause_ms: 0,
            settle_ms: Some(0),
        }),
        &mut out,
    )
    .await
    .unwrap_err();
    // No key ring in this test's environment: the error names the variable,
    // never a value.
    assert!(
        format!("{error:#}").contains(snakepay_vault::KEK_RING_VARIABLE),
        "{error:#}"
    );
}

/// Every sealed column in the shard schema is one `keys rotate` re-wraps:
/// a new sealed column that the rotation forgot would keep an old KEK alive
/// (and `retire` would then make its records unreadable).
#[tokio::test]
async fn the_rotation_knows_every_sealed_column_of_the_shard_schema() {
    let db = testing::fresh(1).await.unwrap();
    let store = &db.store;
    let pool = store.shard(ShardNumber(0)).unwrap();
    let in_schema: BTreeSet<(String, String)> = sqlx::query_as(
        "select table_name::text, column_name::text from information_schema.columns
         where table_schema = 'public' and (column_name like '%key_id' or column_name like '%wrapped%')
           and column_name not like 'idempotency%'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let known: BTreeSet<(String, String)> = SEALED_COLUMNS
        .iter()
        .flat_map(|c| {
            [
                (c.table.to_owned(), c.key_id.to_owned()),
                (c.table.to_owned(), c.wrapped.to_owned()),
            ]
        })
        .collect();
    assert_eq!(in_schema, known);
}
