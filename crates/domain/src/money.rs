//! Money: integer minor units with their currency, checked arithmetic, no floats.
//!
//! `Money` is never negative: direction (debit/credit, charge/refund) is carried
//! by the type that holds the amount, not by a sign, so a sign error cannot turn
//! a refund into a charge.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::currency::{Currency, MAXIMUM_CHARGE_MINOR};

/// A non-negative amount in a currency's minor unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

/// Arithmetic or construction that would break money's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amounts in {left} and {right} cannot be combined")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount must not be negative")]
    Negative,
    #[error("amount overflows 64 bits")]
    Overflow,
}

impl Money {
    /// Any non-negative amount (ledger lines, refund totals, zero balances).
    pub fn new(minor: i64, currency: Currency) -> Result<Money, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Money { minor, currency })
    }

    pub fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn is_zero(self) -> bool {
        self.minor == 0
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    /// Subtraction that refuses to go below zero.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Money::new(minor, self.currency)
    }

    /// The same currency with another amount; negative amounts are refused.
    pub fn with_minor(self, minor: i64) -> Result<Money, MoneyError> {
        Money::new(minor, self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

/// Major units with the currency's own number of decimals, e.g. `0.50 usd`,
/// `50 jpy`, `1.250 kwd`. Integer formatting only: no float ever sees money.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = u32::from(self.currency.exponent());
        let scale = 10_i64.pow(exponent);
        let major = self.minor / scale;
        let fraction = self.minor % scale;
        if exponent == 0 {
            write!(f, "{major} {}", self.currency)
        } else {
            let width = exponent as usize;
            write!(f, "{major}.{fraction:0width$} {}", self.currency)
        }
    }
}

/// Why an amount cannot be charged. Codes follow Stripe's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("Amount must be at least {minimum}")]
    BelowMinimum { minimum: Money },
    #[error("Amount must be no more than {maximum}")]
    AboveMaximum { maximum: Money },
    #[error(
        "Amounts in {currency} must be a multiple of {step} minor units: card networks settle it to two decimals"
    )]
    NotChargeableStep { currency: Currency, step: i64 },
}

impl AmountError {
    /// The Stripe error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            AmountError::BelowMinimum { .. } => "amount_too_small",
            AmountError::AboveMaximum { .. } => "amount_too_large",
            AmountError::NotChargeableStep { .. } => "parameter_invalid_integer",
        }
    }
}

/// Validates an amount a customer is to be charged: within Stripe's minimum for
/// the currency and its eight-digit maximum, and in a step the networks settle.
pub fn charge_amount(minor: i64, currency: Currency) -> Result<Money, AmountError> {
    let minimum = currency.minimum_charge_minor();
    if minor < minimum {
        return Err(AmountError::BelowMinimum {
            // The table's minimums are positive, so this is a valid amount.
            minimum: Money {
                minor: minimum,
                currency,
            },
        });
    }
    if minor > MAXIMUM_CHARGE_MINOR {
        return Err(AmountError::AboveMaximum {
            maximum: Money {
                minor: MAXIMUM_CHARGE_MINOR,
                currency,
            },
        });
    }
    let step = currency.smallest_chargeable_step();
    if minor % step != 0 {
        return Err(AmountError::NotChargeableStep { currency, step });
    }
    Ok(Money { minor, currency })
}

/// Validates a partial amount (capture, refund) of an existing charge: positive,
/// at most the eight-digit maximum, in a chargeable step. Unlike a new charge,
/// it may be below the currency's minimum (a 10-cent partial refund is fine).
pub fn partial_amount(minor: i64, currency: Currency) -> Result<Money, AmountError> {
    let step = currency.smallest_chargeable_step();
    if minor < step {
        return Err(AmountError::BelowMinimum {
            minimum: Money {
                minor: step,
                currency,
            },
        });
    }
    if minor > MAXIMUM_CHARGE_MINOR {
        return Err(AmountError::AboveMaximum {
            maximum: Money {
                minor: MAXIMUM_CHARGE_MINOR,
                currency,
            },
        });
    }
    if minor % step != 0 {
        return Err(AmountError::NotChargeableStep { currency, step });
    }
    Ok(Money { minor, currency })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::USD).unwrap()
    }

    #[test]
    fn arithmetic_is_checked_and_never_mixes_currencies() {
        assert_eq!(usd(150).checked_add(usd(50)).unwrap(), usd(200));
        assert_eq!(usd(150).checked_sub(usd(50)).unwrap(), usd(100));
        assert_eq!(usd(50).checked_sub(usd(51)), Err(MoneyError::Negative));
        assert_eq!(usd(i64::MAX).checked_add(usd(1)), Err(MoneyError::Overflow));
        let eur = Money::new(1, Currency::EUR).unwrap();
        assert!(matches!(
            usd(1).checked_add(eur),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert_eq!(Money::new(-1, Currency::USD), Err(MoneyError::Negative));
    }

    #[test]
    fn display_uses_the_currency_exponent() {
        assert_eq!(usd(50).to_string(), "0.50 usd");
        assert_eq!(usd(123_456).to_string(), "1234.56 usd");
        assert_eq!(Money::new(50, Currency::JPY).unwrap().to_string(), "50 jpy");
        assert_eq!(
            Money::new(1_250, Currency::KWD).unwrap().to_string(),
            "1.250 kwd"
        );
        assert_eq!(
            Money::new(5, Currency::KWD).unwrap().to_string(),
            "0.005 kwd"
        );
    }

    #[test]
    fn charge_amounts_respect_stripe_minimums_and_the_eight_digit_maximum() {
        assert_eq!(charge_amount(50, Currency::USD).unwrap(), usd(50));
        assert_eq!(
            charge_amount(49, Currency::USD).unwrap_err().code(),
            "amount_too_small"
        );
        assert_eq!(
            charge_amount(99_999_999, Currency::USD).unwrap().minor(),
            99_999_999
        );
        assert_eq!(
            charge_amount(100_000_000, Currency::USD)
                .unwrap_err()
                .code(),
            "amount_too_large"
        );
        assert!(charge_amount(0, Currency::USD).is_err());
        assert!(charge_amount(-50, Currency::USD).is_err());
        assert!(charge_amount(49, Currency::JPY).is_err());
        assert!(charge_amount(50, Currency::JPY).is_ok());
    }

    #[test]
    fn three_decimal_currencies_are_charged_in_steps_of_ten() {
        assert!(charge_amount(1_000, Currency::KWD).is_ok());
        assert_eq!(
            charge_amount(1_005, Currency::KWD).unwrap_err().code(),
            "parameter_invalid_integer"
        );
        assert!(partial_amount(10, Currency::KWD).is_ok());
        assert!(partial_amount(5, Currency::KWD).is_err());
    }

    #[test]
    fn partial_amounts_may_be_below_the_charge_minimum_but_must_be_positive() {
        assert_eq!(partial_amount(1, Currency::USD).unwrap(), usd(1));
        assert!(partial_amount(0, Currency::USD).is_err());
        assert!(partial_amount(100_000_000, Currency::USD).is_err());
    }

    #[test]
    fn money_error_messages_name_the_limit_for_the_api() {
        let error = charge_amount(10, Currency::GBP).unwrap_err();
        assert_eq!(error.to_string(), "Amount must be at least 0.30 gbp");
    }
}
