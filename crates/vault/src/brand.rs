//! Card network detection from the leading digits (the IIN/BIN ranges).
//!
//! The brand is a display and routing hint (card icon, CVC length, the
//! `brand` field in API responses). The processor has the final word; an
//! unrecognised prefix is `Unknown`, not an error, because networks add ranges
//! faster than we update this table.

use serde::{Deserialize, Serialize};

/// A card network, serialized with Stripe's wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardBrand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Diners,
    Jcb,
    Unionpay,
    Unknown,
}

impl CardBrand {
    /// Stripe's wire name: `visa`, `mastercard`, `amex`, `discover`, `diners`,
    /// `jcb`, `unionpay` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Visa => "visa",
            Self::Mastercard => "mastercard",
            Self::Amex => "amex",
            Self::Discover => "discover",
            Self::Diners => "diners",
            Self::Jcb => "jcb",
            Self::Unionpay => "unionpay",
            Self::Unknown => "unknown",
        }
    }

    /// The inverse of [`as_str`](Self::as_str).
    pub fn from_wire(name: &str) -> Option<Self> {
        [
            Self::Visa,
            Self::Mastercard,
            Self::Amex,
            Self::Discover,
            Self::Diners,
            Self::Jcb,
            Self::Unionpay,
            Self::Unknown,
        ]
        .into_iter()
        .find(|brand| brand.as_str() == name)
    }

    /// The CVC length this network prints on its cards (4 on the front of an
    /// Amex, 3 on the back of the others), or `None` when we cannot tell.
    pub fn cvc_length(self) -> Option<usize> {
        match self {
            Self::Amex => Some(4),
            Self::Unknown => None,
            _ => Some(3),
        }
    }

    /// Detects the brand from a card number's digits (ASCII, no separators).
    pub(crate) fn detect(digits: &str) -> Self {
        // The first `n` digits as a number; `None` when there are fewer.
        let prefix = |n: usize| -> Option<u32> { digits.get(..n)?.parse().ok() };
        let in_range = |n: usize, low: u32, high: u32| {
            prefix(n).is_some_and(|value| (low..=high).contains(&value))
        };

        if in_range(1, 4, 4) {
            Self::Visa
        } else if in_range(2, 51, 55) || in_range(4, 2221, 2720) {
            Self::Mastercard
        } else if in_range(2, 34, 34) || in_range(2, 37, 37) {
            Self::Amex
        } else if in_range(4, 6011, 6011) || in_range(3, 644, 649) || in_range(2, 65, 65) {
            Self::Discover
        } else if in_range(3, 300, 305)
            || in_range(3, 309, 309)
            || in_range(2, 36, 36)
            || in_range(2, 38, 39)
        {
            Self::Diners
        } else if in_range(4, 3528, 3589) {
            Self::Jcb
        } else if in_range(2, 62, 62) || in_range(2, 81, 81) {
            Self::Unionpay
        } else {
            Self::Unknown
        }
    }
}

impl std::fmt::Display for CardBrand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_network() {
        let cases = [
            ("4242424242424242", CardBrand::Visa),
            ("4000056655665556", CardBrand::Visa),
            ("5555555555554444", CardBrand::Mastercard),
            ("5105105105105100", CardBrand::Mastercard),
            ("2223003122003222", CardBrand::Mastercard),
            ("2720990000000000", CardBrand::Mastercard),
            ("378282246310005", CardBrand::Amex),
            ("371449635398431", CardBrand::Amex),
            ("340000000000009", CardBrand::Amex),
            ("6011111111111117", CardBrand::Discover),
            ("6445644564456445", CardBrand::Discover),
            ("6500000000000002", CardBrand::Discover),
            ("3056930009020004", CardBrand::Diners),
            ("36227206271667", CardBrand::Diners),
            ("3566002020360505", CardBrand::Jcb),
            ("6200000000000005", CardBrand::Unionpay),
            ("8100000000000000", CardBrand::Unionpay),
            ("9999999999999995", CardBrand::Unknown),
            ("1234567812345670", CardBrand::Unknown),
        ];
        for (digits, brand) in cases {
            assert_eq!(CardBrand::detect(digits), brand, "{digits}");
        }
    }

    #[test]
    fn mastercard_two_series_bounds() {
        assert_eq!(CardBrand::detect("2220990000000000"), CardBrand::Unknown);
        assert_eq!(CardBrand::detect("2221000000000000"), CardBrand::Mastercard);
        assert_eq!(CardBrand::detect("2721000000000000"), CardBrand::Unknown);
        assert_eq!(CardBrand::detect("5000000000000000"), CardBrand::Unknown);
        assert_eq!(CardBrand::detect("5600000000000000"), CardBrand::Unknown);
    }

    #[test]
    fn wire_names_round_trip() {
        for brand in [
            CardBrand::Visa,
            CardBrand::Mastercard,
            CardBrand::Amex,
            CardBrand::Discover,
            CardBrand::Diners,
            CardBrand::Jcb,
            CardBrand::Unionpay,
            CardBrand::Unknown,
        ] {
            let json = serde_json::to_string(&brand).unwrap();
            assert_eq!(json, format!("\"{}\"", brand.as_str()));
            assert_eq!(CardBrand::from_wire(brand.as_str()), Some(brand));
            let back: CardBrand = serde_json::from_str(&json).unwrap();
            assert_eq!(back, brand);
        }
        assert_eq!(CardBrand::from_wire("Visa"), None);
    }
}
