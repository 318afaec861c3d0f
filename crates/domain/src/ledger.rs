//! Double-entry ledger: accounts, journals, and the posting rules of each
//! payment event.
//!
//! Every transition that moves money produces one [`Journal`]: lines that debit
//! and credit accounts and that balance per currency. The store writes those
//! lines as they are (the database checks the balance again at commit), and
//! balances are the sums of lines, so they can always be re-derived.
//!
//! Accounts are per merchant and currency (the store adds the merchant):
//!
//! | account | side | holds |
//! | --- | --- | --- |
//! | `processor_receivable` | asset (debit) | money the processor owes us for captured payments, less refunds |
//! | `merchant_payable` | liability (credit) | money we owe the merchant for captured payments, less refunds |
//! | `authorized_funds` | memo asset (debit) | customer funds authorized but not captured |
//! | `authorization_holds` | memo liability (credit) | the hold placed against those funds |
//!
//! The memo pair records authorizations without pretending that uncaptured
//! money was received: it nets to zero the moment a hold is captured or released.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::money::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    ProcessorReceivable,
    MerchantPayable,
    AuthorizedFunds,
    AuthorizationHolds,
}

impl Account {
    pub const ALL: [Account; 4] = [
        Account::ProcessorReceivable,
        Account::MerchantPayable,
        Account::AuthorizedFunds,
        Account::AuthorizationHolds,
    ];

    /// The name stored in the database and shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Account::ProcessorReceivable => "processor_receivable",
            Account::MerchantPayable => "merchant_payable",
            Account::AuthorizedFunds => "authorized_funds",
            Account::AuthorizationHolds => "authorization_holds",
        }
    }

    /// The side on which the account's balance grows: assets grow by debits,
    /// liabilities by credits.
    pub fn normal_side(self) -> Side {
        match self {
            Account::ProcessorReceivable | Account::AuthorizedFunds => Side::Debit,
            Account::MerchantPayable | Account::AuthorizationHolds => Side::Credit,
        }
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Debit,
    Credit,
}

/// One line of a journal: an amount on one side of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub account: Account,
    pub side: Side,
    pub amount: Money,
}

/// Why a set of lines is not a journal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("a journal needs at least two lines")]
    TooFewLines,
    #[error("journal lines must have positive amounts")]
    ZeroAmount,
    #[error("journal does not balance in {currency}: debits {debits}, credits {credits}")]
    Unbalanced {
        currency: Currency,
        debits: i64,
        credits: i64,
    },
    #[error("journal amounts overflow")]
    Overflow,
}

/// Lines that balance per currency. The only way to build one is
/// [`Journal::new`], which checks; so every `Journal` in the program balances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Journal {
    lines: Vec<Line>,
}

impl Journal {
    pub fn new(lines: Vec<Line>) -> Result<Journal, JournalError> {
        if lines.len() < 2 {
            return Err(JournalError::TooFewLines);
        }
        let mut totals: BTreeMap<Currency, (i64, i64)> = BTreeMap::new();
        for line in &lines {
            if line.amount.is_zero() {
                return Err(JournalError::ZeroAmount);
            }
            let entry = totals.entry(line.amount.currency()).or_insert((0, 0));
            let slot = match line.side {
                Side::Debit => &mut entry.0,
                Side::Credit => &mut entry.1,
            };
            *slot = slot
                .checked_add(line.amount.minor())
                .ok_or(JournalError::Overflow)?;
        }
        for (currency, (debits, credits)) in totals {
            if debits != credits {
                return Err(JournalError::Unbalanced {
                    currency,
                    debits,
                    credits,
                });
            }
        }
        Ok(Journal { lines })
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// Two journals as one (both balance, so the union does).
    pub fn merge(mut self, other: Journal) -> Journal {
        self.lines.extend(other.lines);
        self
    }

    fn pair(debit: Account, credit: Account, amount: Money) -> Result<Journal, JournalError> {
        Journal::new(vec![
            Line {
                account: debit,
                side: Side::Debit,
                amount,
            },
            Line {
                account: credit,
                side: Side::Credit,
                amount,
            },
        ])
    }
}

/// The posting rules: which journal each money-moving event produces.
pub mod postings {
    use super::*;

    /// An authorization approved without capture: place a hold.
    pub fn authorization_hold(amount: Money) -> Result<Journal, JournalError> {
        Journal::pair(
            Account::AuthorizedFunds,
            Account::AuthorizationHolds,
            amount,
        )
    }

    /// A hold released (captured, voided or expired): reverse it.
    pub fn hold_release(amount: Money) -> Result<Journal, JournalError> {
        Journal::pair(
            Account::AuthorizationHolds,
            Account::AuthorizedFunds,
            amount,
        )
    }

    /// Money captured: the processor owes it to us, and we owe it to the merchant.
    pub fn capture(amount: Money) -> Result<Journal, JournalError> {
        Journal::pair(
            Account::ProcessorReceivable,
            Account::MerchantPayable,
            amount,
        )
    }

    /// A refund paid out: both sides shrink by the refunded amount.
    pub fn refund(amount: Money) -> Result<Journal, JournalError> {
        Journal::pair(
            Account::MerchantPayable,
            Account::ProcessorReceivable,
            amount,
        )
    }

    /// A manual capture of `captured` out of a hold of `held`: release the whole
    /// hold and record the capture, in one journal.
    pub fn capture_of_hold(held: Money, captured: Money) -> Result<Journal, JournalError> {
        Ok(hold_release(held)?.merge(capture(captured)?))
    }
}

/// Balances derived from lines: for each (account, currency), the amount on
/// the account's normal side minus the other side. Used by tests, reports and
/// the invariant checker; the database computes the same from its rows.
pub fn balances<'a>(
    lines: impl IntoIterator<Item = &'a Line>,
) -> Result<BTreeMap<(Account, Currency), i64>, JournalError> {
    let mut result = BTreeMap::new();
    for line in lines {
        let balance = result
            .entry((line.account, line.amount.currency()))
            .or_insert(0_i64);
        let amount = line.amount.minor();
        *balance = if line.side == line.account.normal_side() {
            balance.checked_add(amount)
        } else {
            balance.checked_sub(amount)
        }
        .ok_or(JournalError::Overflow)?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::USD).unwrap()
    }

    fn line(account: Account, side: Side, amount: Money) -> Line {
        Line {
            account,
            side,
            amount,
        }
    }

    #[test]
    fn a_journal_must_balance_per_currency() {
        let eur = Money::new(100, Currency::EUR).unwrap();
        // Balanced in total amount but not per currency.
        let mixed = Journal::new(vec![
            line(Account::ProcessorReceivable, Side::Debit, usd(100)),
            line(Account::MerchantPayable, Side::Credit, eur),
        ]);
        assert!(matches!(mixed, Err(JournalError::Unbalanced { .. })));
        let unbalanced = Journal::new(vec![
            line(Account::ProcessorReceivable, Side::Debit, usd(100)),
            line(Account::MerchantPayable, Side::Credit, usd(99)),
        ]);
        assert_eq!(
            unbalanced,
            Err(JournalError::Unbalanced {
                currency: Currency::USD,
                debits: 100,
                credits: 99
            })
        );
        assert_eq!(
            Journal::new(vec![line(Account::MerchantPayable, Side::Credit, usd(1))]),
            Err(JournalError::TooFewLines)
        );
        assert_eq!(
            Journal::new(vec![
                line(Account::ProcessorReceivable, Side::Debit, usd(0)),
                line(Account::MerchantPayable, Side::Credit, usd(0)),
            ]),
            Err(JournalError::ZeroAmount)
        );
    }

    #[test]
    fn a_partial_capture_releases_the_whole_hold_and_books_the_captured_part() {
        let authorized = postings::authorization_hold(usd(1_000)).unwrap();
        let captured = postings::capture_of_hold(usd(1_000), usd(600)).unwrap();
        let all: Vec<Line> = authorized
            .lines()
            .iter()
            .chain(captured.lines())
            .copied()
            .collect();
        let balances = balances(&all).unwrap();
        assert_eq!(balances[&(Account::AuthorizationHolds, Currency::USD)], 0);
        assert_eq!(balances[&(Account::AuthorizedFunds, Currency::USD)], 0);
        assert_eq!(balances[&(Account::MerchantPayable, Currency::USD)], 600);
        assert_eq!(
            balances[&(Account::ProcessorReceivable, Currency::USD)],
            600
        );
    }

    #[test]
    fn a_refund_reduces_what_is_owed_on_both_sides() {
        let lines: Vec<Line> = postings::capture(usd(500))
            .unwrap()
            .lines()
            .iter()
            .chain(postings::refund(usd(200)).unwrap().lines())
            .copied()
            .collect();
        let balances = balances(&lines).unwrap();
        assert_eq!(balances[&(Account::MerchantPayable, Currency::USD)], 300);
        assert_eq!(
            balances[&(Account::ProcessorReceivable, Currency::USD)],
            300
        );
    }
}
