//! `snakepay-admin verify`: the invariant checker over one region.
//!
//! [`run`] reads every shard in one snapshot each
//! (`snakepay_store::verify`), then the processor's record (read after the
//! shards, so it holds at least everything the shards committed), and
//! returns a [`Report`] with every [`Violation`] found. It never writes.
//! docs/reliability.md says what each invariant means and how it is checked;
//! [`Kind`] names them.
//!
//! # Layout
//!
//! - this file: [`Options`], [`Report`], [`run`] and the checks, one
//!   function per invariant.
//! - `verify/processor.rs`: reading the processor's record, paged.
//! - `verify/render.rs`: the table and the JSON the command prints.
//!
//! Checks that need a quiet system ignore what changed within the last
//! `settle_seconds`: an operation the processor performed a moment ago may
//! not be committed on our side yet.

mod processor;
mod render;

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use serde::Serialize;
use snakepay_domain::ids::ShardNumber;
use snakepay_domain::ledger::{Account, Side};
use snakepay_domain::payment_intent::PaymentIntentStatus;
use snakepay_domain::refund::RefundStatus;
use snakepay_store::Store;
use snakepay_store::verify::{
    self as facts, AttemptFacts, IntentFacts, JournalFault, JournalProblem, KeyCreations,
    LedgerSum, OutboxBacklog, RefundFacts,
};

pub use processor::ProcessorAccess;
use processor::{ProcessorAuthorization, ProcessorRecord, ProcessorRefund};
pub use render::{write_json, write_table};

/// The default settle margin of the command.
pub const DEFAULT_SETTLE_SECONDS: f64 = 10.0;

/// The integration service's default `reconcile_after_ms` (60 s), in
/// seconds: how long a payment may be in flight before the reconciler asks
/// the processor about it (services/integration/src/config.rs).
pub const DEFAULT_RECONCILE_WINDOW_SECONDS: f64 = 60.0;

/// Exit code when violations were found.
pub const EXIT_VIOLATIONS: u8 = 1;
/// Exit code when the check itself could not run (a database or the
/// processor unreachable, a malformed record).
pub const EXIT_CANNOT_RUN: u8 = 2;

#[derive(Debug, Clone)]
pub struct Options {
    /// Changes younger than this are in flight, not violations, where a
    /// check needs a quiet system.
    pub settle_seconds: f64,
    /// How long a payment may stay in flight before the reconciler takes it
    /// up (`integration.reconcile_after_ms`).
    pub reconcile_window_seconds: f64,
    /// The processor to compare with; `None` skips those checks (the report
    /// says so).
    pub processor: Option<ProcessorAccess>,
}

impl Options {
    /// The defaults, comparing with `processor`.
    pub fn new(processor: Option<ProcessorAccess>) -> Options {
        Options {
            settle_seconds: DEFAULT_SETTLE_SECONDS,
            reconcile_window_seconds: DEFAULT_RECONCILE_WINDOW_SECONDS,
            processor,
        }
    }
}

/// The invariants, as violation kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A journal does not balance per currency (or has fewer than two
    /// lines, or lines of another merchant).
    JournalUnbalanced,
    /// An intent's stored amounts (received, refunded, capturable, refund
    /// totals) differ from the sums of its ledger lines or refunds.
    BalanceMismatch,
    /// Refunds (succeeded and pending) exceed what the payment received.
    RefundExceedsReceived,
    /// A payment that received money has not exactly one capture of that
    /// amount at the processor.
    CaptureMismatch,
    /// A capture at the processor that no payment of ours received.
    UnownedProcessorCharge,
    /// Our refunds and the processor's disagree.
    ProcessorRefundMismatch,
    /// More than one intent for one (merchant, idempotency key).
    DuplicateIntentForKey,
    /// A payment `processing` for longer than the reconciliation window.
    StuckPayment,
    /// A refund `pending` for longer than the reconciliation window.
    StuckRefund,
    /// Outbox rows left unpublished.
    OutboxNotDrained,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::JournalUnbalanced,
        Kind::BalanceMismatch,
        Kind::RefundExceedsReceived,
        Kind::CaptureMismatch,
        Kind::UnownedProcessorCharge,
        Kind::ProcessorRefundMismatch,
        Kind::DuplicateIntentForKey,
        Kind::StuckPayment,
        Kind::StuckRefund,
        Kind::OutboxNotDrained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::JournalUnbalanced => "journal_unbalanced",
            Kind::BalanceMismatch => "balance_mismatch",
            Kind::RefundExceedsReceived => "refund_exceeds_received",
            Kind::CaptureMismatch => "capture_mismatch",
            Kind::UnownedProcessorCharge => "unowned_processor_charge",
            Kind::ProcessorRefundMismatch => "processor_refund_mismatch",
            Kind::DuplicateIntentForKey => "duplicate_intent_for_key",
            Kind::StuckPayment => "stuck_payment",
            Kind::StuckRefund => "stuck_refund",
            Kind::OutboxNotDrained => "outbox_not_drained",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken invariant: which, about what, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: Kind,
    /// The ID of what is wrong: `pi_…`, `re_…`, the processor's `auth_…`,
    /// `shard 0 journal 17`, `shard 1 outbox`, or a merchant's key.
    pub resource: String,
    pub reason: String,
}

/// How much was looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checked {
    pub shards: usize,
    pub payment_intents: usize,
    pub attempts: usize,
    pub refunds: usize,
    pub idempotency_keys_with_intents: usize,
    pub processor_operations: usize,
    pub processor_authorizations: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub checked: Checked,
    /// Checks that did not run, and why.
    pub skipped: Vec<String>,
    pub settle_seconds: f64,
    pub reconcile_window_seconds: f64,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn of_kind(&self, kind: Kind) -> Vec<&Violation> {
        self.violations.iter().filter(|v| v.kind == kind).collect()
    }
}

/// Everything the checks read from the shards.
#[derive(Default)]
struct RegionFacts {
    journal_problems: Vec<(ShardNumber, JournalProblem)>,
    ledger: Vec<LedgerSum>,
    intents: Vec<IntentFacts>,
    attempts: Vec<AttemptFacts>,
    refunds: Vec<RefundFacts>,
    keys: Vec<KeyCreations>,
    outbox: Vec<(ShardNumber, OutboxBacklog)>,
}

/// Checks the region's invariants. An `Err` means the check could not run
/// (a database or the processor did not answer); violations are in the
/// report.
pub async fn run(store: &Store, options: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.settle_seconds.is_finite() && options.settle_seconds >= 0.0,
        "the settle margin must be a non-negative number of seconds"
    );
    anyhow::ensure!(
        options.reconcile_window_seconds.is_finite() && options.reconcile_window_seconds >= 0.0,
        "the reconciliation window must be a non-negative number of seconds"
    );
    let mut region = RegionFacts::default();
    let mut checked = Checked::default();
    for (shard, pool) in store.shards() {
        read_shard(&mut region, shard, pool, options)
            .await
            .with_context(|| format!("reading shard {shard}"))?;
        checked.shards += 1;
    }
    // After the shards: whatever they saw committed, the processor had done.
    let record = match &options.processor {
        Some(access) => Some(processor::read(access).await?),
        None => None,
    };
    let now_unix = snakepay_store::unix_now();

    checked.payment_intents = region.intents.len();
    checked.attempts = region.attempts.len();
    checked.refunds = region.refunds.len();
    checked.idempotency_keys_with_intents = region.keys.len();
    let index = Index::new(&region);
    let mut violations = Vec::new();
    check_journals(&region, &mut violations);
    check_balances(&region, &index, &mut violations);
    check_refund_limits(&index, record.as_ref(), &mut violations);
    let mut skipped = Vec::new();
    match &record {
        Some(record) => {
            checked.processor_operations = record.operations;
            checked.processor_authorizations = record.authorizations.len();
            let quiet = Quiet {
                now_unix,
                settle_seconds: options.settle_seconds,
                in_flight_seconds: options.reconcile_window_seconds + options.settle_seconds,
            };
            check_captures(&index, record, quiet, &mut violations);
            check_processor_refunds(&index, record, quiet, &mut violations);
        }
        None => skipped.push(
            "the processor checks (captures, charges, refunds at the processor): no processor given"
                .to_owned(),
        ),
    }
    check_idempotency(&region, &mut violations);
    check_stuck(&region, options, &mut violations);
    check_outbox(&region, options, &mut violations);
    violations.sort_by(|a, b| (a.kind, &a.resource).cmp(&(b.kind, &b.resource)));
    Ok(Report {
        violations,
        checked,
        skipped,
        settle_seconds: options.settle_seconds,
        reconcile_window_seconds: options.reconcile_window_seconds,
    })
}

async fn read_shard(
    region: &mut RegionFacts,
    shard: ShardNumber,
    pool: &sqlx::PgPool,
    options: &Options,
) -> anyhow::Result<()> {
    let mut tx = facts::snapshot(pool).await?;
    region.journal_problems.extend(
        facts::journal_problems(&mut tx)
            .await?
            .into_iter()
            .map(|p| (shard, p)),
    );
    region.ledger.extend(facts::ledger_sums(&mut tx).await?);
    region.intents.extend(facts::intents(&mut tx).await?);
    region.attempts.extend(facts::attempts(&mut tx).await?);
    region.refunds.extend(facts::refunds(&mut tx).await?);
    region.keys.extend(facts::key_creations(&mut tx).await?);
    region.outbox.push((
        shard,
        facts::outbox_backlog(&mut tx, options.settle_seconds).await?,
    ));
    tx.rollback().await?;
    Ok(())
}

/// Lookups over the region's facts.
struct Index<'a> {
    all_intents: &'a [IntentFacts],
    all_refunds: &'a [RefundFacts],
    intents: HashMap<&'a str, &'a IntentFacts>,
    attempts: HashMap<&'a str, &'a AttemptFacts>,
    attempts_of: HashMap<&'a str, Vec<&'a AttemptFacts>>,
    refunds: HashMap<&'a str, &'a RefundFacts>,
    refunds_of: HashMap<&'a str, Vec<&'a RefundFacts>>,
}

impl<'a> Index<'a> {
    fn new(region: &'a RegionFacts) -> Index<'a> {
        let mut attempts_of: HashMap<&str, Vec<&AttemptFacts>> = HashMap::new();
        for attempt in &region.attempts {
            attempts_of
                .entry(attempt.payment_intent_id.as_str())
                .or_default()
                .push(attempt);
        }
        let mut refunds_of: HashMap<&str, Vec<&RefundFacts>> = HashMap::new();
        for refund in &region.refunds {
            refunds_of
                .entry(refund.payment_intent_id.as_str())
                .or_default()
                .push(refund);
        }
        Index {
            all_intents: &region.intents,
            all_refunds: &region.refunds,
            intents: region.intents.iter().map(|i| (i.id.as_str(), i)).collect(),
            attempts: region.attempts.iter().map(|a| (a.id.as_str(), a)).collect(),
            attempts_of,
            refunds: region.refunds.iter().map(|r| (r.id.as_str(), r)).collect(),
            refunds_of,
        }
    }

    fn refund_totals(&self, intent: &str) -> (i64, i64) {
        let mut succeeded = 0_i64;
        let mut pending = 0_i64;
        for refund in self.refunds_of.get(intent).into_iter().flatten() {
            if refund.status == RefundStatus::Succeeded.as_str() {
                succeeded = succeeded.saturating_add(refund.amount);
            } else if refund.status == RefundStatus::Pending.as_str() {
                pending = pending.saturating_add(refund.amount);
            }
        }
        (succeeded, pending)
    }
}

/// Where the quiet-system checks draw the line.
#[derive(Debug, Clone, Copy)]
struct Quiet {
    now_unix: i64,
    settle_seconds: f64,
    /// How long a payment may be in flight before it is stuck.
    in_flight_seconds: f64,
}

impl Quiet {
    /// Whether a processor object last changed at `unix` is too recent to judge.
    fn is_recent(self, unix: i64) -> bool {
        (self.now_unix.saturating_sub(unix) as f64) < self.settle_seconds
    }
}

fn violation(kind: Kind, resource: impl Into<String>, reason: impl Into<String>) -> Violation {
    Violation {
        kind,
        resource: resource.into(),
        reason: reason.into(),
    }
}

fn check_journals(region: &RegionFacts, out: &mut Vec<Violation>) {
    for (shard, problem) in &region.journal_problems {
        let about = problem
            .payment_intent_id
            .as_deref()
            .map(|id| format!(" (of {id})"))
            .unwrap_or_default();
        let reason = match &problem.fault {
            JournalFault::TooFewLines { lines } => {
                format!("has {lines} line(s); a journal needs at least two{about}")
            }
            JournalFault::Unbalanced {
                currency,
                debits,
                credits,
            } => format!("debits {debits} and credits {credits} in {currency} differ{about}"),
            JournalFault::ForeignLines { lines } => format!(
                "{lines} line(s) name another merchant or mode than the journal's {}{about}",
                problem.merchant_id
            ),
        };
        out.push(violation(
            Kind::JournalUnbalanced,
            format!("shard {shard} journal {}", problem.journal_id),
            reason,
        ));
    }
}

/// An account's balance on its normal side.
fn normal_balance(account: Account, debits_minus_credits: i64) -> i64 {
    match account.normal_side() {
        Side::Debit => debits_minus_credits,
        Side::Credit => debits_minus_credits.saturating_neg(),
    }
}

fn check_balances(region: &RegionFacts, index: &Index<'_>, out: &mut Vec<Violation>) {
    let mut ledger: BTreeMap<Option<&str>, Vec<&LedgerSum>> = BTreeMap::new();
    for sum in &region.ledger {
        ledger
            .entry(sum.payment_intent_id.as_deref())
            .or_default()
            .push(sum);
    }
    for (intent_id, sums) in &ledger {
        let Some(id) = intent_id else {
            out.push(violation(
                Kind::BalanceMismatch,
                "ledger",
                format!(
                    "{} ledger sum(s) belong to journals that name no payment intent",
                    sums.len()
                ),
            ));
            continue;
        };
        if !index.intents.contains_key(id) {
            out.push(violation(
                Kind::BalanceMismatch,
                *id,
                "ledger lines name a payment intent that does not exist",
            ));
        }
    }
    for intent in &region.intents {
        let sums = ledger
            .get(&Some(intent.id.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut balances: BTreeMap<Account, i64> = BTreeMap::new();
        for sum in sums {
            let Some(account) = Account::ALL.into_iter().find(|a| a.as_str() == sum.account) else {
                out.push(violation(
                    Kind::BalanceMismatch,
                    &intent.id,
                    format!("ledger lines on an unknown account {}", sum.account),
                ));
                continue;
            };
            if sum.currency != intent.currency {
                out.push(violation(
                    Kind::BalanceMismatch,
                    &intent.id,
                    format!(
                        "ledger lines on {account} in {}, but the intent is in {}",
                        sum.currency, intent.currency
                    ),
                ));
                continue;
            }
            let balance = balances.entry(account).or_insert(0);
            *balance = balance.saturating_add(normal_balance(account, sum.debits_minus_credits));
        }
        let owed = intent
            .amount_received
            .saturating_sub(intent.amount_refunded);
        for account in Account::ALL {
            let (expected, stored) = match account {
                Account::ProcessorReceivable | Account::MerchantPayable => (
                    owed,
                    format!(
                        "amount_received - amount_refunded = {} - {} = {owed}",
                        intent.amount_received, intent.amount_refunded
                    ),
                ),
                Account::AuthorizedFunds | Account::AuthorizationHolds => (
                    intent.amount_capturable,
                    format!("amount_capturable = {}", intent.amount_capturable),
                ),
            };
            let booked = balances.get(&account).copied().unwrap_or(0);
            if booked != expected {
                out.push(violation(
                    Kind::BalanceMismatch,
                    &intent.id,
                    format!(
                        "{account} sums to {booked} {} over its ledger lines, but the intent stores {stored}",
                        intent.currency
                    ),
                ));
            }
        }
        let (succeeded, pending) = index.refund_totals(&intent.id);
        if succeeded != intent.amount_refunded {
            out.push(violation(
                Kind::BalanceMismatch,
                &intent.id,
                format!(
                    "amount_refunded is {}, but its succeeded refunds sum to {succeeded}",
                    intent.amount_refunded
                ),
            ));
        }
        if pending != intent.amount_refund_pending {
            out.push(violation(
                Kind::BalanceMismatch,
                &intent.id,
                format!(
                    "amount_refund_pending is {}, but its pending refunds sum to {pending}",
                    intent.amount_refund_pending
                ),
            ));
        }
    }
    for refund in &region.refunds {
        let succeeded = refund.status == RefundStatus::Succeeded.as_str();
        let booked_right = if succeeded {
            refund.journals == 1 && refund.journal_amount == refund.amount
        } else {
            refund.journals == 0
        };
        if !booked_right {
            out.push(violation(
                Kind::BalanceMismatch,
                &refund.id,
                format!(
                    "a {} refund of {} {} is booked by {} journal(s) debiting {} from merchant_payable{}",
                    refund.status,
                    refund.amount,
                    refund.currency,
                    refund.journals,
                    refund.journal_amount,
                    if succeeded {
                        "; it needs exactly one, for its amount"
                    } else {
                        "; only a succeeded refund moves money"
                    }
                ),
            ));
        }
        if let Some(intent) = index.intents.get(refund.payment_intent_id.as_str())
            && intent.currency != refund.currency
        {
            out.push(violation(
                Kind::BalanceMismatch,
                &refund.id,
                format!(
                    "refund in {}, but {} is in {}",
                    refund.currency, intent.id, intent.currency
                ),
            ));
        }
    }
}

fn check_refund_limits(
    index: &Index<'_>,
    record: Option<&ProcessorRecord>,
    out: &mut Vec<Violation>,
) {
    for intent in index.all_intents {
        let (succeeded, pending) = index.refund_totals(&intent.id);
        let total = succeeded.saturating_add(pending);
        if total > intent.amount_received {
            out.push(violation(
                Kind::RefundExceedsReceived,
                &intent.id,
                format!(
                    "refunds succeeded {succeeded} + pending {pending} = {total} {} exceed the {} received",
                    intent.currency, intent.amount_received
                ),
            ));
        }
    }
    for authorization in record.iter().flat_map(|r| r.authorizations.values()) {
        if authorization.amount_refunded > authorization.amount_captured {
            out.push(violation(
                Kind::RefundExceedsReceived,
                &authorization.id,
                format!(
                    "the processor refunded {} {} of a capture of {}",
                    authorization.amount_refunded,
                    authorization.currency,
                    authorization.amount_captured
                ),
            ));
        }
    }
}

fn is_in_flight(status: &str) -> bool {
    status == PaymentIntentStatus::Processing.as_str()
        || status == PaymentIntentStatus::RequiresAction.as_str()
}

/// Whether the intent received money: it must have exactly one capture.
fn received_money(intent: &IntentFacts) -> bool {
    intent.status == PaymentIntentStatus::Succeeded.as_str() || intent.amount_received > 0
}

fn describe_charges(charges: &[&ProcessorAuthorization]) -> String {
    charges
        .iter()
        .map(|c| {
            format!(
                "{} ({} {} on {})",
                c.id, c.amount_captured, c.currency, c.reference
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_captures(
    index: &Index<'_>,
    record: &ProcessorRecord,
    quiet: Quiet,
    out: &mut Vec<Violation>,
) {
    // Every capture at the processor, by the intent its reference names.
    let mut charges_of: HashMap<&str, Vec<&ProcessorAuthorization>> = HashMap::new();
    let mut unowned: Vec<(&ProcessorAuthorization, String)> = Vec::new();
    for charge in record
        .authorizations
        .values()
        .filter(|a| a.amount_captured > 0)
    {
        let Some(attempt) = index.attempts.get(charge.reference.as_str()) else {
            unowned.push((
                charge,
                format!(
                    "its reference {:?} is no payment attempt of ours",
                    charge.reference
                ),
            ));
            continue;
        };
        let Some(intent) = index.intents.get(attempt.payment_intent_id.as_str()) else {
            unowned.push((
                charge,
                format!(
                    "its attempt {} names a payment intent that does not exist",
                    attempt.id
                ),
            ));
            continue;
        };
        if received_money(intent) {
            charges_of
                .entry(intent.id.as_str())
                .or_default()
                .push(charge);
        } else if is_in_flight(&intent.status) && intent.age_seconds < quiet.in_flight_seconds {
            // Captured a moment ago; the outcome is on its way to us.
        } else {
            unowned.push((
                charge,
                format!(
                    "on {} of {}, which is {} and received nothing",
                    attempt.id, intent.id, intent.status
                ),
            ));
        }
    }
    for (charge, why) in unowned {
        if quiet.is_recent(charge.updated) {
            continue;
        }
        out.push(violation(
            Kind::UnownedProcessorCharge,
            &charge.id,
            format!(
                "the processor captured {} {}, but no payment of ours received it: {why}",
                charge.amount_captured, charge.currency
            ),
        ));
    }

    for intent in index.all_intents.iter().filter(|i| received_money(i)) {
        let charges = charges_of
            .get(intent.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut problems = Vec::new();
        let authorized = intent
            .authorized_attempt_id
            .as_deref()
            .and_then(|id| index.attempts.get(id));
        match (intent.authorized_attempt_id.as_deref(), authorized) {
            (None, _) => problems.push("it has no authorized attempt".to_owned()),
            (Some(id), None) => {
                problems.push(format!("its authorized attempt {id} does not exist"))
            }
            (Some(id), Some(attempt)) if attempt.payment_intent_id != intent.id => {
                problems.push(format!(
                    "its authorized attempt {id} belongs to {}",
                    attempt.payment_intent_id
                ))
            }
            _ => {}
        }
        match charges {
            [] => {
                let attempts: Vec<&str> = index
                    .attempts_of
                    .get(intent.id.as_str())
                    .into_iter()
                    .flatten()
                    .map(|a| a.id.as_str())
                    .collect();
                problems.push(format!(
                    "the processor shows no capture for its attempts ({})",
                    attempts.join(", ")
                ));
            }
            [charge] => {
                if Some(charge.reference.as_str()) != intent.authorized_attempt_id.as_deref() {
                    problems.push(format!(
                        "the processor captured attempt {}, not its authorized attempt",
                        charge.reference
                    ));
                }
                if charge.amount_captured != intent.amount_received
                    || charge.currency != intent.currency
                {
                    problems.push(format!(
                        "the processor captured {} {} ({})",
                        charge.amount_captured, charge.currency, charge.id
                    ));
                }
                if let Some(known) = authorized.and_then(|a| a.processor_reference.as_deref())
                    && known != charge.id
                {
                    problems.push(format!(
                        "its attempt records authorization {known}, but the capture is {}",
                        charge.id
                    ));
                }
            }
            several => problems.push(format!(
                "the processor captured it {} times: {}",
                several.len(),
                describe_charges(several)
            )),
        }
        if !problems.is_empty() {
            out.push(violation(
                Kind::CaptureMismatch,
                &intent.id,
                format!(
                    "{}, received {} {}: {}",
                    intent.status,
                    intent.amount_received,
                    intent.currency,
                    problems.join("; ")
                ),
            ));
        }
    }
}

fn check_processor_refunds(
    index: &Index<'_>,
    record: &ProcessorRecord,
    quiet: Quiet,
    out: &mut Vec<Violation>,
) {
    let mut by_reference: HashMap<&str, Vec<&ProcessorRefund>> = HashMap::new();
    for refund in &record.refunds {
        match refund
            .reference
            .as_deref()
            .filter(|r| index.refunds.contains_key(r))
        {
            Some(reference) => by_reference.entry(reference).or_default().push(refund),
            None if quiet.is_recent(refund.at) => {}
            None => out.push(violation(
                Kind::ProcessorRefundMismatch,
                &refund.id,
                format!(
                    "the processor refunded {} {} on {} (reference {}), which is no refund of ours",
                    refund.amount,
                    refund.currency,
                    refund.authorization,
                    refund.reference.as_deref().unwrap_or("none")
                ),
            )),
        }
    }
    for refund in index.all_refunds {
        let at_processor = by_reference
            .get(refund.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let problem = if refund.status == RefundStatus::Succeeded.as_str() {
            match at_processor {
                [] => Some("the processor has no such refund".to_owned()),
                [one] => {
                    let on = record
                        .authorizations
                        .get(&one.authorization)
                        .map(|a| a.reference.as_str());
                    if one.amount != refund.amount || one.currency != refund.currency {
                        Some(format!(
                            "the processor refunded {} {} ({})",
                            one.amount, one.currency, one.id
                        ))
                    } else if on != Some(refund.attempt_id.as_str()) {
                        Some(format!(
                            "the processor refunded it on {} (attempt {}), not on attempt {}",
                            one.authorization,
                            on.unwrap_or("unknown"),
                            refund.attempt_id
                        ))
                    } else {
                        None
                    }
                }
                several => Some(format!(
                    "the processor refunded it {} times: {}",
                    several.len(),
                    several
                        .iter()
                        .map(|r| format!("{} ({} {})", r.id, r.amount, r.currency))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        } else if refund.status == RefundStatus::Failed.as_str() && !at_processor.is_empty() {
            Some(format!(
                "the processor refunded {} {} ({})",
                at_processor.iter().map(|r| r.amount).sum::<i64>(),
                refund.currency,
                at_processor
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            // Pending: in flight, or stuck (reported as such).
            None
        };
        if let Some(problem) = problem {
            out.push(violation(
                Kind::ProcessorRefundMismatch,
                &refund.id,
                format!(
                    "{} refund of {} {}: {problem}",
                    refund.status, refund.amount, refund.currency
                ),
            ));
        }
    }
}

fn check_idempotency(region: &RegionFacts, out: &mut Vec<Violation>) {
    for key in &region.keys {
        let resource = format!(
            "{} {} idempotency key {:?}",
            key.merchant_id,
            if key.livemode { "live" } else { "test" },
            key.key
        );
        let created = &key.created_intents;
        let reason = match created.as_slice() {
            [] => None,
            [only] => match key.response_status {
                None => Some(format!(
                    "its request {} created {only}, but no response is stored under the key: a retry would create another intent",
                    key.request_id
                )),
                Some(status) if (200..300).contains(&status) => key
                    .response_body
                    .as_deref()
                    .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok())
                    .filter(|body| {
                        body.get("object").and_then(|o| o.as_str()) == Some("payment_intent")
                    })
                    .and_then(|body| body.get("id").and_then(|id| id.as_str()).map(str::to_owned))
                    .filter(|replayed| replayed != only)
                    .map(|replayed| {
                        format!(
                            "a retry replays {replayed}, but its request {} created {only}",
                            key.request_id
                        )
                    }),
                Some(_) => None,
            },
            several => Some(format!(
                "its request {} created {} intents: {}",
                key.request_id,
                several.len(),
                several.join(", ")
            )),
        };
        if let Some(reason) = reason {
            out.push(violation(Kind::DuplicateIntentForKey, resource, reason));
        }
    }
}

fn check_stuck(region: &RegionFacts, options: &Options, out: &mut Vec<Violation>) {
    let limit = options.reconcile_window_seconds + options.settle_seconds;
    let window = format!(
        "longer than the reconciliation window ({} s) and the settle margin ({} s)",
        options.reconcile_window_seconds, options.settle_seconds
    );
    for intent in &region.intents {
        if intent.status == PaymentIntentStatus::Processing.as_str() && intent.age_seconds > limit {
            let operation = intent
                .pending
                .as_ref()
                .map(|p| {
                    format!(
                        "; at the processor: {} of {}",
                        p.get("kind")
                            .and_then(|k| k.as_str())
                            .unwrap_or("an operation"),
                        p.get("attempt")
                            .and_then(|a| a.as_str())
                            .unwrap_or("an unknown attempt")
                    )
                })
                .unwrap_or_default();
            out.push(violation(
                Kind::StuckPayment,
                &intent.id,
                format!(
                    "processing for {:.0} s, {window}{operation}",
                    intent.age_seconds
                ),
            ));
        }
    }
    for refund in &region.refunds {
        if refund.status == RefundStatus::Pending.as_str() && refund.age_seconds > limit {
            out.push(violation(
                Kind::StuckRefund,
                &refund.id,
                format!(
                    "pending for {:.0} s, {window} (of {})",
                    refund.age_seconds, refund.payment_intent_id
                ),
            ));
        }
    }
}

fn check_outbox(region: &RegionFacts, options: &Options, out: &mut Vec<Violation>) {
    for (shard, backlog) in &region.outbox {
        if backlog.unpublished == 0 {
            continue;
        }
        let oldest = backlog
            .oldest
            .as_ref()
            .map(|(id, routing_key, age)| {
                format!("; the oldest, row {id} ({routing_key}), for {age:.0} s")
            })
            .unwrap_or_default();
        out.push(violation(
            Kind::OutboxNotDrained,
            format!("shard {shard} outbox"),
            format!(
                "{} row(s) unpublished for more than {} s{oldest}",
                backlog.unpublished, options.settle_seconds
            ),
        ));
    }
}
