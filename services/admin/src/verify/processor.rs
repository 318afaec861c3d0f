//! Reading the processor's record of what it did: the simulator's
//! `GET /_sim/operations`, page by page (services/processor-sim/README.md).

use snakepay_config::sections::OutboundTlsConfig;
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use url::Url;

/// Operations per page: big enough that a load test's record takes few
/// round trips, small enough that one answer stays a few megabytes.
pub const PAGE_SIZE: usize = 2_000;

/// The timeout of one page request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the processor is and the key that may read its record (also read
/// from `[integration.processor_sim]`, see `AdminConfig`).
#[derive(Clone, Deserialize)]
pub struct ProcessorAccess {
    pub base_url: Url,
    pub api_key: String,
    /// What the HTTPS calls trust besides the public roots; from `[tls]`,
    /// not from the processor's section.
    #[serde(skip)]
    pub trust: OutboundTlsConfig,
}

impl std::fmt::Debug for ProcessorAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorAccess")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &"***")
            .finish()
    }
}

/// An authorization as it stands at the processor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProcessorAuthorization {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub currency: String,
    /// Our reference: the attempt ID.
    pub reference: String,
    /// Unix seconds of its last change.
    pub updated: i64,
}

/// A refund the processor performed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorRefund {
    pub id: String,
    pub authorization: String,
    pub amount: i64,
    pub currency: String,
    /// Our reference: the refund ID.
    pub reference: Option<String>,
    /// Unix seconds.
    pub at: i64,
}

/// What the checks need of the processor's record.
#[derive(Debug, Clone, Default)]
pub struct ProcessorRecord {
    pub operations: usize,
    /// Every authorization, by its ID.
    pub authorizations: BTreeMap<String, ProcessorAuthorization>,
    /// Every refund performed (refused refund requests are not).
    pub refunds: Vec<ProcessorRefund>,
}

#[derive(Deserialize)]
struct Page {
    operations: Vec<OperationLine>,
    authorizations: Vec<ProcessorAuthorization>,
    has_more: bool,
}

#[derive(Deserialize)]
struct OperationLine {
    seq: u64,
    kind: String,
    outcome: String,
    at: i64,
    amount: Option<i64>,
    currency: Option<String>,
    authorization: Option<String>,
    reference: Option<String>,
    refund: Option<String>,
}

/// Reads the whole record, oldest first. Authorizations seen on several
/// pages keep their latest state.
pub async fn read(access: &ProcessorAccess) -> anyhow::Result<ProcessorRecord> {
    let client = snakepay_http::tls::client_builder(&access.trust)?
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let endpoint = access
        .base_url
        .join("_sim/operations")
        .context("the processor URL")?;
    let mut record = ProcessorRecord::default();
    let mut after_seq = 0_u64;
    loop {
        let response = client
            .get(endpoint.clone())
            .query(&[
                ("after_seq", after_seq.to_string()),
                ("limit", PAGE_SIZE.to_string()),
            ])
            .bearer_auth(&access.api_key)
            .send()
            .await
            .context("reading the processor's record")?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("the processor's record at {endpoint} answered {status}");
        }
        let page: Page = response
            .json()
            .await
            .with_context(|| format!("the processor's record at {endpoint}"))?;
        record.operations += page.operations.len();
        for line in &page.operations {
            if line.kind == "refund" && line.outcome == "succeeded" {
                record.refunds.push(ProcessorRefund {
                    id: line.refund.clone().unwrap_or_default(),
                    authorization: line.authorization.clone().unwrap_or_default(),
                    amount: line.amount.unwrap_or_default(),
                    currency: line.currency.clone().unwrap_or_default(),
                    reference: line.reference.clone(),
                    at: line.at,
                });
            }
        }
        for authorization in page.authorizations {
            record
                .authorizations
                .insert(authorization.id.clone(), authorization);
        }
        let Some(last) = page.operations.last() else {
            anyhow::ensure!(
                !page.has_more,
                "the processor's record says it has more but sent none"
            );
            break;
        };
        anyhow::ensure!(
            last.seq > after_seq,
            "the processor's record went backwards (seq {} after {after_seq})",
            last.seq
        );
        after_seq = last.seq;
        if !page.has_more {
            break;
        }
    }
    Ok(record)
}
