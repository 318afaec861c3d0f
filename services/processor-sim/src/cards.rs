//! The test cards and what each one makes the simulator do.
//!
//! The first group are the numbers the public API documents (API.md); the
//! second group are the simulator's own trigger cards for the failure modes a
//! real processor has. All are Luhn-valid, so they pass the platform's own
//! card checks and reach the processor. Any other Luhn-valid number approves.

pub const CARD_APPROVED_VISA: &str = "4242424242424242";
pub const CARD_APPROVED_MASTERCARD: &str = "5555555555554444";
pub const CARD_APPROVED_AMEX: &str = "378282246310005";
pub const CARD_DECLINED_GENERIC: &str = "4000000000000002";
pub const CARD_DECLINED_INSUFFICIENT_FUNDS: &str = "4000000000009995";
pub const CARD_DECLINED_EXPIRED: &str = "4000000000000069";
pub const CARD_DECLINED_INCORRECT_CVC: &str = "4000000000000127";
pub const CARD_REQUIRES_3DS: &str = "4000002760003184";
pub const CARD_PROCESSING_ERROR: &str = "4000000000000119";

/// Answers 500 before doing anything: nothing is recorded, a retry with the
/// same idempotency key does the work for real.
pub const CARD_FAIL_BEFORE_WORK: &str = "4000000000005001";
/// Authorizes and records the authorization, then answers 500.
pub const CARD_FAIL_AFTER_WORK: &str = "4000000000005019";
/// Authorizes and records the authorization, then answers only after
/// `timeout_ms` (default 30 s), longer than any client should wait.
pub const CARD_TIMEOUT_AFTER_WORK: &str = "4000000000004087";
/// Approves, but only after `slow_ms` (default 5 s).
pub const CARD_SLOW_APPROVAL: &str = "4000000000007775";

/// What a card number makes the simulator do, before expiry is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardBehaviour {
    Approve,
    Decline(DeclineCode),
    RequireAuthentication,
    FailBeforeWork,
    FailAfterWork,
    TimeoutAfterWork,
    SlowApproval,
}

/// Why an authorization was declined, with its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineCode {
    GenericDecline,
    InsufficientFunds,
    ExpiredCard,
    IncorrectCvc,
    ProcessingError,
    IncorrectNumber,
    AuthenticationRequired,
}

impl DeclineCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GenericDecline => "generic_decline",
            Self::InsufficientFunds => "insufficient_funds",
            Self::ExpiredCard => "expired_card",
            Self::IncorrectCvc => "incorrect_cvc",
            Self::ProcessingError => "processing_error",
            Self::IncorrectNumber => "incorrect_number",
            Self::AuthenticationRequired => "authentication_required",
        }
    }

    /// The human-readable message sent with the code.
    pub fn message(self) -> &'static str {
        match self {
            Self::GenericDecline => "The card was declined.",
            Self::InsufficientFunds => "The card has insufficient funds.",
            Self::ExpiredCard => "The card has expired.",
            Self::IncorrectCvc => "The card's security code is incorrect.",
            Self::ProcessingError => "An error occurred while processing the card.",
            Self::IncorrectNumber => "The card number is incorrect.",
            Self::AuthenticationRequired => "The cardholder did not complete authentication.",
        }
    }
}

/// The behaviour of a valid card number (digits only, as `Pan` holds them).
pub fn behaviour(digits: &str) -> CardBehaviour {
    match digits {
        CARD_DECLINED_GENERIC => CardBehaviour::Decline(DeclineCode::GenericDecline),
        CARD_DECLINED_INSUFFICIENT_FUNDS => CardBehaviour::Decline(DeclineCode::InsufficientFunds),
        CARD_DECLINED_EXPIRED => CardBehaviour::Decline(DeclineCode::ExpiredCard),
        CARD_DECLINED_INCORRECT_CVC => CardBehaviour::Decline(DeclineCode::IncorrectCvc),
        CARD_PROCESSING_ERROR => CardBehaviour::Decline(DeclineCode::ProcessingError),
        CARD_REQUIRES_3DS => CardBehaviour::RequireAuthentication,
        CARD_FAIL_BEFORE_WORK => CardBehaviour::FailBeforeWork,
        CARD_FAIL_AFTER_WORK => CardBehaviour::FailAfterWork,
        CARD_TIMEOUT_AFTER_WORK => CardBehaviour::TimeoutAfterWork,
        CARD_SLOW_APPROVAL => CardBehaviour::SlowApproval,
        _ => CardBehaviour::Approve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snakepay_vault::Pan;

    #[test]
    fn every_test_card_is_luhn_valid_and_distinct() {
        let cards = [
            CARD_APPROVED_VISA,
            CARD_APPROVED_MASTERCARD,
            CARD_APPROVED_AMEX,
            CARD_DECLINED_GENERIC,
            CARD_DECLINED_INSUFFICIENT_FUNDS,
            CARD_DECLINED_EXPIRED,
            CARD_DECLINED_INCORRECT_CVC,
            CARD_REQUIRES_3DS,
            CARD_PROCESSING_ERROR,
            CARD_FAIL_BEFORE_WORK,
            CARD_FAIL_AFTER_WORK,
            CARD_TIMEOUT_AFTER_WORK,
            CARD_SLOW_APPROVAL,
        ];
        for card in cards {
            assert_eq!(Pan::parse(card).unwrap().expose_digits(), card);
        }
        let mut unique = cards.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), cards.len());
    }
}
