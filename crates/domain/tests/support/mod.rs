//! Shared builders for the domain's black-box tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use snakepay_domain::Currency;
use snakepay_domain::Money;
use snakepay_domain::effects::Effects;
use snakepay_domain::ids::{
    AttemptId, ChargeId, Id, IdKind, IdParts, PaymentIntentId, PaymentMethodId, RefundId,
    RegionNumber, ShardNumber,
};
use snakepay_domain::ledger::{Line, balances};
use snakepay_domain::payment_intent::{self, CaptureMethod, NewPaymentIntent, PaymentIntent};

pub const NOW: i64 = 1_790_000_000;

/// Deterministic IDs: the n-th ID of a kind.
pub fn id<K: IdKind>(n: u64) -> Id<K> {
    let mut random = [0_u8; 10];
    random[..8].copy_from_slice(&n.to_be_bytes());
    Id::from_parts(IdParts {
        unix_ms: 1_700_000_000_000 + n,
        region: RegionNumber(1),
        shard: ShardNumber(0),
        random,
    })
}

pub fn attempt(n: u64) -> AttemptId {
    id(n)
}

pub fn charge(n: u64) -> ChargeId {
    id(n)
}

pub fn refund_id(n: u64) -> RefundId {
    id(n)
}

pub fn card() -> PaymentMethodId {
    id(1)
}

pub fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD).unwrap()
}

pub fn new_intent(amount: i64, capture_method: CaptureMethod, with_card: bool) -> PaymentIntent {
    let id: PaymentIntentId = id(0);
    payment_intent::create(NewPaymentIntent {
        id,
        amount: usd(amount),
        capture_method,
        payment_method: with_card.then(card),
        created: NOW,
    })
    .intent
}

/// Every journal line a sequence of effects posted.
#[derive(Default)]
pub struct Books {
    pub lines: Vec<Line>,
}

impl Books {
    pub fn post(&mut self, effects: &Effects) {
        if let Some(journal) = &effects.journal {
            self.lines.extend_from_slice(journal.lines());
        }
    }

    pub fn balance(&self, account: snakepay_domain::ledger::Account) -> i64 {
        balances(&self.lines)
            .unwrap()
            .get(&(account, Currency::USD))
            .copied()
            .unwrap_or(0)
    }
}
