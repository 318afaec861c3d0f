//! Payment search across shards against a brute-force query over every
//! shard, on a randomized data set.

use serde_json::Value;
use snakepay_domain::ids::{MerchantId, PaymentIntentId, PaymentMethodId, RegionNumber};
use snakepay_internal_api::tokens::Role;

use crate::support::TestApi;

/// A small deterministic generator, seeded from the OS so every run tries
/// a new data set; the seed is printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone)]
struct Row {
    id: String,
    merchant: String,
    livemode: bool,
    status: String,
    currency: String,
    amount: i64,
    created: i64,
    customer: Option<String>,
    last4: Option<String>,
}

const STATUSES: [&str; 5] = [
    "requires_payment_method",
    "requires_confirmation",
    "requires_capture",
    "canceled",
    "succeeded",
];
const LAST4: [&str; 3] = ["4242", "0002", "3184"];

async fn insert(api: &TestApi, merchants: &[MerchantId], rng: &mut Rng, count: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for _ in 0..count {
        let merchant = *rng.pick(merchants);
        let pool = api.db.store.shard(merchant.shard()).unwrap();
        let id = PaymentIntentId::generate(RegionNumber(1), merchant.shard()).unwrap();
        let row = Row {
            id: id.to_string(),
            merchant: merchant.to_string(),
            livemode: rng.below(4) == 0,
            status: (*rng.pick(&STATUSES)).to_owned(),
            currency: (*rng.pick(&["usd", "eur"])).to_owned(),
            amount: 1 + rng.below(10_000) as i64,
            created: 1_700_000_000 + rng.below(1_000) as i64,
            customer: rng
                .pick(&[None, Some("cus_a"), Some("cus_b")])
                .map(str::to_owned),
            last4: rng
                .pick(&[None, Some(LAST4[0]), Some(LAST4[1]), Some(LAST4[2])])
                .map(str::to_owned),
        };
        let method = match &row.last4 {
            Some(last4) => {
                let pm = PaymentMethodId::generate(RegionNumber(1), merchant.shard()).unwrap();
                sqlx::query(
                    "insert into payment_methods (id, merchant_id, livemode, brand, first6, last4,
                         exp_month, exp_year, fingerprint, pan_key_id, pan_wrapped_key, pan_ciphertext, created)
                     values ($1, $2, $3, 'visa', '424242', $4, 12, 2030, 'fp', 'k', '\\x00', '\\x00', $5)",
                )
                .bind(pm.to_string())
                .bind(&row.merchant)
                .bind(row.livemode)
                .bind(last4)
                .bind(row.created)
                .execute(pool)
                .await
                .unwrap();
                Some(pm.to_string())
            }
            None => None,
        };
        sqlx::query(
            "insert into payment_intents (id, merchant_id, livemode, amount, currency, status,
                 capture_method, customer_id, payment_method_id, client_secret, created)
             values ($1, $2, $3, $4, $5, $6, 'automatic', $7, $8, 'secret', $9)",
        )
        .bind(&row.id)
        .bind(&row.merchant)
        .bind(row.livemode)
        .bind(row.amount)
        .bind(&row.currency)
        .bind(&row.status)
        .bind(&row.customer)
        .bind(method)
        .bind(row.created)
        .execute(pool)
        .await
        .unwrap();
        rows.push(row);
    }
    rows
}

/// Whether a row matches a filter.
type Check = Box<dyn Fn(&Row) -> bool>;

/// A random filter: (query string, predicate).
fn random_filter(rng: &mut Rng, merchants: &[MerchantId]) -> (String, Check) {
    let mut query = Vec::new();
    let mut checks: Vec<Check> = Vec::new();
    if rng.below(3) == 0 {
        let merchant = rng.pick(merchants).to_string();
        query.push(format!("merchant={merchant}"));
        checks.push(Box::new(move |r| r.merchant == merchant));
    }
    if rng.below(3) == 0 {
        let status = (*rng.pick(&STATUSES)).to_owned();
        query.push(format!("status={status}"));
        checks.push(Box::new(move |r| r.status == status));
    }
    if rng.below(3) == 0 {
        let low = 1_700_000_000 + rng.below(500) as i64;
        let high = low + rng.below(600) as i64;
        query.push(format!("created_gte={low}&created_lte={high}"));
        checks.push(Box::new(move |r| r.created >= low && r.created <= high));
    }
    if rng.below(3) == 0 {
        let low = rng.below(5_000) as i64;
        let high = low + rng.below(6_000) as i64;
        query.push(format!("amount_gte={low}&amount_lte={high}"));
        checks.push(Box::new(move |r| r.amount >= low && r.amount <= high));
    }
    if rng.below(4) == 0 {
        let last4 = (*rng.pick(&LAST4)).to_owned();
        query.push(format!("card_last4={last4}"));
        checks.push(Box::new(move |r| {
            r.last4.as_deref() == Some(last4.as_str())
        }));
    }
    if rng.below(4) == 0 {
        let customer = (*rng.pick(&["cus_a", "cus_b"])).to_owned();
        query.push(format!("customer={customer}"));
        checks.push(Box::new(move |r| {
            r.customer.as_deref() == Some(customer.as_str())
        }));
    }
    if rng.below(4) == 0 {
        let livemode = rng.below(2) == 0;
        query.push(format!("livemode={livemode}"));
        checks.push(Box::new(move |r| r.livemode == livemode));
    }
    if rng.below(4) == 0 {
        let currency = (*rng.pick(&["usd", "eur"])).to_owned();
        query.push(format!("currency={currency}"));
        checks.push(Box::new(move |r| r.currency == currency));
    }
    (
        query.join("&"),
        Box::new(move |row| checks.iter().all(|check| check(row))),
    )
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

/// id, merchant, livemode, status, currency, amount, created, customer, last 4.
type BruteRow = (
    String,
    String,
    bool,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
);

#[tokio::test]
async fn search_pages_equal_a_brute_force_query_over_all_shards_on_random_data() {
    let mut seed = [0_u8; 8];
    getrandom::fill(&mut seed).unwrap();
    let seed = u64::from_le_bytes(seed) | 1;
    let mut rng = Rng(seed);
    let api = TestApi::start().await;
    let viewer = api.token(Role::Viewer, "victor");
    let mut merchants = Vec::new();
    for shard in [0, 1, 0, 1, 1] {
        merchants.push(api.merchant_on(shard).await);
    }
    let inserted = insert(&api, &merchants, &mut rng, 240).await;

    // The brute force: every payment of every shard, read back from the
    // databases, filtered here, newest ID first.
    let mut everything: Vec<Row> = Vec::new();
    for (_, pool) in api.db.store.shards() {
        let found: Vec<BruteRow> =
            sqlx::query_as(
                "select pi.id, pi.merchant_id, pi.livemode, pi.status, pi.currency, pi.amount,
                        pi.created, pi.customer_id, pm.last4
                 from payment_intents pi left join payment_methods pm on pm.id = pi.payment_method_id",
            )
            .fetch_all(pool)
            .await
            .unwrap();
        everything.extend(found.into_iter().map(
            |(id, merchant, livemode, status, currency, amount, created, customer, last4)| Row {
                id,
                merchant,
                livemode,
                status,
                currency,
                amount,
                created,
                customer,
                last4,
            },
        ));
    }
    assert_eq!(everything.len(), inserted.len());

    for round in 0..25 {
        let (filter, matches) = random_filter(&mut rng, &merchants);
        let mut expected: Vec<String> = everything
            .iter()
            .filter(|r| matches(r))
            .map(|r| r.id.clone())
            .collect();
        expected.sort_by(|a, b| b.cmp(a));
        let limit = 1 + rng.below(30);
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v1/payments?limit={limit}&{filter}");
            if let Some(after) = &cursor {
                path.push_str(&format!("&starting_after={after}"));
            }
            let page = api.get(&viewer, &path).await;
            assert_eq!(page.status, 200, "seed {seed} {path}: {}", page.body);
            let page_ids = ids(&page.body);
            let start = seen.len();
            let end = (start + limit as usize).min(expected.len());
            assert_eq!(
                page_ids,
                expected[start..end].to_vec(),
                "seed {seed}, round {round}, page {pages}: {path}"
            );
            assert_eq!(
                page.body["has_more"].as_bool().unwrap(),
                end < expected.len(),
                "seed {seed}, round {round}: {path}"
            );
            seen.extend(page_ids);
            pages += 1;
            if !page.body["has_more"].as_bool().unwrap() {
                break;
            }
            cursor = seen.last().cloned();
        }
        assert_eq!(seen, expected, "seed {seed}, round {round}: {filter}");
    }
}

#[tokio::test]
async fn search_refuses_malformed_filters() {
    let api = TestApi::start().await;
    let viewer = api.token(Role::Viewer, "victor");
    for query in [
        "status=paid",
        "card_last4=42",
        "starting_after=nope",
        "limit=0",
        "merchant=acct_x",
        "colour=red",
    ] {
        let reply = api.get(&viewer, &format!("/v1/payments?{query}")).await;
        assert!(
            [400, 404].contains(&reply.status),
            "{query}: {} {}",
            reply.status,
            reply.body
        );
    }
}
