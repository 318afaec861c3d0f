//! The Luhn (mod 10) check digit used by every card network.
//!
//! It only catches typing mistakes (one wrong digit, most swaps of two
//! neighbours); it says nothing about whether a card exists. We run it at the
//! edge so an obviously mistyped number gets `incorrect_number` at once instead
//! of a processor round trip.

/// Whether `digits` (ASCII `0`–`9` only) pass the Luhn check.
///
/// Returns `false` for anything that is not an ASCII digit, so a caller that
/// forgot to strip separators gets a rejection, not a wrong answer.
pub(crate) fn is_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum: u32 = 0;
    // Walk from the check digit leftwards; every second digit is doubled.
    for (position, &byte) in digits.iter().rev().enumerate() {
        if !byte.is_ascii_digit() {
            return false;
        }
        let mut value = u32::from(byte - b'0');
        if position % 2 == 1 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
    }
    sum.is_multiple_of(10)
}

/// The digit that, appended to `payload`, makes it pass [`is_valid`].
/// Only tests need it, to build valid random card numbers.
#[cfg(test)]
pub(crate) fn check_digit(payload: &[u8]) -> u8 {
    let mut with_zero = payload.to_vec();
    with_zero.push(b'0');
    (b'0'..=b'9')
        .find(|&candidate| {
            with_zero[payload.len()] = candidate;
            is_valid(&with_zero)
        })
        .unwrap_or(b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRIPE_TEST_CARDS: &[&str] = &[
        "4242424242424242",
        "4000000000000002",
        "4000000000009995",
        "4000000000000069",
        "4000000000000127",
        "4000002760003184",
        "4000000000000119",
        "5555555555554444",
        "378282246310005",
    ];

    #[test]
    fn stripe_test_cards_pass() {
        for card in STRIPE_TEST_CARDS {
            assert!(is_valid(card.as_bytes()), "{card} should pass Luhn");
        }
    }

    #[test]
    fn changing_the_last_digit_fails() {
        for card in STRIPE_TEST_CARDS {
            let mut bytes = card.as_bytes().to_vec();
            let last = bytes.len() - 1;
            bytes[last] = b'0' + (bytes[last] - b'0' + 1) % 10;
            assert!(!is_valid(&bytes), "{card} with a changed check digit");
        }
    }

    #[test]
    fn classic_examples() {
        assert!(is_valid(b"79927398713"));
        assert!(!is_valid(b"79927398710"));
        assert!(!is_valid(b"4242424242424241"));
        assert!(is_valid(b"0"));
    }

    #[test]
    fn empty_and_non_digits_fail() {
        assert!(!is_valid(b""));
        assert!(!is_valid(b"4242 4242 4242 4242"));
        assert!(!is_valid(b"42424242424242a2"));
    }

    #[test]
    fn check_digit_completes_a_payload() {
        assert_eq!(check_digit(b"424242424242424"), b'2');
        assert_eq!(check_digit(b"7992739871"), b'3');
    }
}
