//! Card data types: [`Pan`], [`Cvc`], [`Expiry`] and the clear-text
//! [`CardSummary`].
//!
//! PCI DSS forbids the card number and the CVC from appearing in logs, traces,
//! error messages or storage. The types enforce that where the compiler can:
//! their fields are private, they have no `Display` and no `Serialize`, their
//! `Debug` prints a mask, their buffers are wiped on drop, and the digits come
//! out only through `expose_digits`, so a reviewer can grep for every use.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::brand::CardBrand;
use crate::luhn;

/// Shortest card number in use (some private-label and older Maestro cards).
pub const PAN_MIN_DIGITS: usize = 12;
/// Longest card number ISO/IEC 7812 allows.
pub const PAN_MAX_DIGITS: usize = 19;
/// A generous bound on the raw input (19 digits plus separators), so a huge
/// request field is rejected before we copy it anywhere.
const PAN_MAX_INPUT_CHARS: usize = 64;

/// Why card input was rejected. Messages never contain the input itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("the card number contains characters other than digits, spaces and dashes")]
    InvalidCharacter,
    #[error("the card number must have {PAN_MIN_DIGITS} to {PAN_MAX_DIGITS} digits")]
    InvalidLength,
    #[error("the card number fails the Luhn check")]
    LuhnCheckFailed,
    #[error("the CVC must be 3 digits, or 4 for American Express")]
    InvalidCvc,
    #[error("the expiry month must be between 1 and 12")]
    InvalidExpiryMonth,
    #[error("the expiry year must have 2 or 4 digits")]
    InvalidExpiryYear,
}

impl CardError {
    /// The Stripe error code the API returns for this error.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidCharacter | Self::InvalidLength | Self::LuhnCheckFailed => {
                "incorrect_number"
            }
            Self::InvalidCvc => "invalid_cvc",
            Self::InvalidExpiryMonth => "invalid_expiry_month",
            Self::InvalidExpiryYear => "invalid_expiry_year",
        }
    }
}

/// A primary account number: 12–19 digits that pass the Luhn check.
///
/// Holds only ASCII digits (separators stripped) in a buffer that is zeroed on
/// drop. Clones are zeroed on drop as well.
#[derive(Clone)]
pub struct Pan {
    digits: Zeroizing<String>,
}

impl Pan {
    /// Parses a card number as a customer types it: digits, optionally grouped
    /// with spaces or dashes (`4242 4242 4242 4242`, `4242-4242-4242-4242`).
    /// Leading and trailing spaces are ignored too.
    pub fn parse(input: &str) -> Result<Self, CardError> {
        if input.len() > PAN_MAX_INPUT_CHARS {
            return Err(CardError::InvalidLength);
        }
        // Reserve the full size up front: a growing `String` would reallocate
        // and leave copies of earlier digits in freed memory that nobody wipes.
        let mut digits = Zeroizing::new(String::with_capacity(PAN_MAX_INPUT_CHARS));
        for ch in input.chars() {
            match ch {
                '0'..='9' => digits.push(ch),
                ' ' | '-' => {}
                _ => return Err(CardError::InvalidCharacter),
            }
        }
        if !(PAN_MIN_DIGITS..=PAN_MAX_DIGITS).contains(&digits.len()) {
            return Err(CardError::InvalidLength);
        }
        if !luhn::is_valid(digits.as_bytes()) {
            return Err(CardError::LuhnCheckFailed);
        }
        Ok(Self { digits })
    }

    /// The full card number, digits only. The one way to get it out: call it
    /// only to encrypt it or to send it to the processor.
    pub fn expose_digits(&self) -> &str {
        &self.digits
    }

    /// The card network, detected from the leading digits.
    pub fn brand(&self) -> CardBrand {
        CardBrand::detect(&self.digits)
    }

    /// The first six digits (the BIN/IIN), which PCI DSS allows to display.
    pub fn first6(&self) -> &str {
        // The length is at least PAN_MIN_DIGITS (12) by construction.
        self.digits.get(..6).unwrap_or_default()
    }

    /// Same as [`first6`](Self::first6), under the industry's name.
    pub fn bin(&self) -> &str {
        self.first6()
    }

    /// The last four digits, which PCI DSS allows to display.
    pub fn last4(&self) -> &str {
        let len = self.digits.len();
        self.digits.get(len.saturating_sub(4)..).unwrap_or_default()
    }

    /// The number of digits (12–19).
    pub fn len(&self) -> usize {
        self.digits.len()
    }

    /// Always `false`: a `Pan` has at least 12 digits. Present because
    /// clippy expects `is_empty` next to `len`.
    pub fn is_empty(&self) -> bool {
        self.digits.is_empty()
    }

    /// `424242******4242`: first six, a star per hidden digit, last four.
    fn masked(&self) -> String {
        let hidden = self.digits.len().saturating_sub(10);
        format!("{}{}{}", self.first6(), "*".repeat(hidden), self.last4())
    }
}

impl std::fmt::Debug for Pan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

/// A card verification code: 3 digits, or 4 on American Express cards.
///
/// Zeroed on drop. PCI DSS forbids storing it after authorization, so it is
/// only ever sealed for the short time between tokenization and the
/// processor call.
#[derive(Clone)]
pub struct Cvc {
    digits: Zeroizing<String>,
}

impl Cvc {
    /// Parses a 3- or 4-digit CVC. Use [`parse_for_brand`](Self::parse_for_brand)
    /// when the card number is known.
    pub fn parse(input: &str) -> Result<Self, CardError> {
        Self::parse_with_lengths(input, 3, 4)
    }

    /// Parses a CVC with the length the brand prints: exactly 4 for Amex,
    /// exactly 3 for the other known brands, 3 or 4 for `Unknown`.
    pub fn parse_for_brand(input: &str, brand: CardBrand) -> Result<Self, CardError> {
        match brand.cvc_length() {
            Some(len) => Self::parse_with_lengths(input, len, len),
            None => Self::parse(input),
        }
    }

    fn parse_with_lengths(input: &str, min: usize, max: usize) -> Result<Self, CardError> {
        let input = input.trim_matches(' ');
        if !(min..=max).contains(&input.len()) || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::InvalidCvc);
        }
        Ok(Self {
            digits: Zeroizing::new(input.to_owned()),
        })
    }

    /// The CVC digits. The one way to get them out: call it only to encrypt
    /// them or to send them to the processor.
    pub fn expose_digits(&self) -> &str {
        &self.digits
    }
}

impl std::fmt::Debug for Cvc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not even the length: it would tell an Amex apart.
        f.write_str("Cvc(***)")
    }
}

/// A card's expiry month and year (four digits). The card is valid through the
/// last day of that month.
///
/// Not secret: the expiry may be stored and shown (it is in [`CardSummary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expiry {
    month: u8,
    year: u16,
}

impl Expiry {
    /// Builds an expiry from a month (1–12) and a 2-digit (`0`–`99`, meaning
    /// 2000–2099) or 4-digit (2000–2099) year.
    pub fn new(month: u32, year: u32) -> Result<Self, CardError> {
        let month = u8::try_from(month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or(CardError::InvalidExpiryMonth)?;
        let year = match year {
            0..=99 => 2000 + year,
            2000..=2099 => year,
            _ => return Err(CardError::InvalidExpiryYear),
        };
        let year = u16::try_from(year).map_err(|_| CardError::InvalidExpiryYear)?;
        Ok(Self { month, year })
    }

    /// Parses the month and year as the API receives them (`"4"`, `"04"`;
    /// `"27"`, `"2027"`). Surrounding spaces are ignored.
    pub fn parse(month: &str, year: &str) -> Result<Self, CardError> {
        let month_text = month.trim();
        if month_text.is_empty()
            || month_text.len() > 2
            || !month_text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(CardError::InvalidExpiryMonth);
        }
        let month: u32 = month_text
            .parse()
            .map_err(|_| CardError::InvalidExpiryMonth)?;
        let year_text = year.trim();
        if !matches!(year_text.len(), 2 | 4) || !year_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::InvalidExpiryYear);
        }
        let year: u32 = year_text
            .parse()
            .map_err(|_| CardError::InvalidExpiryYear)?;
        Self::new(month, year)
    }

    /// The month, 1–12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The four-digit year.
    pub fn year(self) -> u16 {
        self.year
    }

    /// Whether the card is expired in the given calendar month. The caller
    /// passes today's year and month, so this stays a pure function tests can
    /// drive. A card expiring 2027-04 still works throughout April 2027.
    pub fn is_expired_at(self, year: u16, month: u8) -> bool {
        (year, month) > (self.year, self.month)
    }
}

/// The card data that may be stored and shown in clear: brand, first six and
/// last four digits, and expiry (PCI DSS 4.0 requirement 3.4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSummary {
    pub brand: CardBrand,
    pub first6: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
}

impl CardSummary {
    pub fn new(pan: &Pan, expiry: Expiry) -> Self {
        Self {
            brand: pan.brand(),
            first6: pan.first6().to_owned(),
            last4: pan.last4().to_owned(),
            exp_month: expiry.month(),
            exp_year: expiry.year(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_stripe_test_cards() {
        for card in [
            "4242424242424242",
            "4000000000000002",
            "4000000000009995",
            "4000000000000069",
            "4000000000000127",
            "4000002760003184",
            "4000000000000119",
            "5555555555554444",
            "378282246310005",
        ] {
            let pan = Pan::parse(card).unwrap();
            assert_eq!(pan.expose_digits(), card);
        }
    }

    #[test]
    fn accepts_spaces_and_dashes() {
        for input in [
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            " 4242424242424242 ",
            "4242 - 4242 4242-4242",
        ] {
            let pan = Pan::parse(input).unwrap();
            assert_eq!(pan.expose_digits(), "4242424242424242", "{input:?}");
        }
        let amex = Pan::parse("3782 822463 10005").unwrap();
        assert_eq!(amex.expose_digits(), "378282246310005");
    }

    #[test]
    fn rejects_letters_and_other_separators() {
        for input in [
            "4242a24242424242",
            "4242424242424242x",
            "4242.4242.4242.4242",
            "4242\t4242424242424242",
            "４２４２424242424242",
        ] {
            let err = Pan::parse(input).unwrap_err();
            assert_eq!(err, CardError::InvalidCharacter, "{input:?}");
            assert_eq!(err.code(), "incorrect_number");
        }
    }

    #[test]
    fn rejects_luhn_failures() {
        for input in ["4242424242424241", "5555555555554440", "378282246310006"] {
            let err = Pan::parse(input).unwrap_err();
            assert_eq!(err, CardError::LuhnCheckFailed, "{input}");
            assert_eq!(err.code(), "incorrect_number");
        }
    }

    #[test]
    fn length_bounds() {
        // 11 and 20 digits fail on length even though they pass Luhn.
        assert!(luhn::is_valid(b"79927398713"));
        assert_eq!(
            Pan::parse("79927398713").unwrap_err(),
            CardError::InvalidLength
        );
        let twenty = "42424242424242424242";
        assert_eq!(Pan::parse(twenty).unwrap_err(), CardError::InvalidLength);
        assert_eq!(Pan::parse("").unwrap_err(), CardError::InvalidLength);
        assert_eq!(Pan::parse("  -- ").unwrap_err(), CardError::InvalidLength);
        let long_input = " ".repeat(1000) + "4242424242424242";
        assert_eq!(
            Pan::parse(&long_input).unwrap_err(),
            CardError::InvalidLength
        );

        // 12 and 19 digits are accepted when the check digit is right.
        let twelve = format!("42424242424{}", luhn::check_digit(b"42424242424") as char);
        assert_eq!(Pan::parse(&twelve).unwrap().len(), 12);
        let payload = b"424242424242424242";
        let nineteen = format!(
            "{}{}",
            std::str::from_utf8(payload).unwrap(),
            luhn::check_digit(payload) as char
        );
        assert_eq!(Pan::parse(&nineteen).unwrap().len(), 19);
    }

    #[test]
    fn brand_bin_and_last4() {
        let pan = Pan::parse("5555 5555 5555 4444").unwrap();
        assert_eq!(pan.brand(), CardBrand::Mastercard);
        assert_eq!(pan.first6(), "555555");
        assert_eq!(pan.bin(), "555555");
        assert_eq!(pan.last4(), "4444");
        assert_eq!(
            Pan::parse("378282246310005").unwrap().brand(),
            CardBrand::Amex
        );
    }

    #[test]
    fn debug_masks_the_pan() {
        let pan = Pan::parse("4242424242424242").unwrap();
        let shown = format!("{pan:?}");
        assert_eq!(shown, "Pan(424242******4242)");
        assert!(!shown.contains("4242424242424242"));
        let pretty = format!("{pan:#?}");
        assert!(!pretty.contains("4242424242424242"));
        let amex = format!("{:?}", Pan::parse("378282246310005").unwrap());
        assert_eq!(amex, "Pan(378282*****0005)");
        // Inside other structures too.
        let wrapped = format!("{:?}", Some(vec![pan.clone()]));
        assert!(!wrapped.contains("4242424242424242"));
    }

    #[test]
    fn cvc_lengths_and_mask() {
        assert_eq!(Cvc::parse("123").unwrap().expose_digits(), "123");
        assert_eq!(Cvc::parse("1234").unwrap().expose_digits(), "1234");
        for bad in ["", "12", "12345", "12a", "abc", "1 23"] {
            let err = Cvc::parse(bad).unwrap_err();
            assert_eq!(err, CardError::InvalidCvc, "{bad:?}");
            assert_eq!(err.code(), "invalid_cvc");
        }
        assert!(Cvc::parse_for_brand("1234", CardBrand::Amex).is_ok());
        assert!(Cvc::parse_for_brand("123", CardBrand::Amex).is_err());
        assert!(Cvc::parse_for_brand("123", CardBrand::Visa).is_ok());
        assert!(Cvc::parse_for_brand("1234", CardBrand::Visa).is_err());
        assert!(Cvc::parse_for_brand("1234", CardBrand::Unknown).is_ok());

        let cvc = Cvc::parse("987").unwrap();
        assert_eq!(format!("{cvc:?}"), "Cvc(***)");
        assert_eq!(format!("{:?}", Cvc::parse("9876").unwrap()), "Cvc(***)");
    }

    #[test]
    fn expiry_normalises_years() {
        let expiry = Expiry::new(4, 27).unwrap();
        assert_eq!((expiry.month(), expiry.year()), (4, 2027));
        assert_eq!(Expiry::new(12, 2031).unwrap().year(), 2031);
        assert_eq!(Expiry::parse("04", "2027").unwrap(), expiry);
        assert_eq!(Expiry::parse(" 4 ", "27").unwrap(), expiry);
    }

    #[test]
    fn expiry_rejects_bad_values() {
        for (month, year) in [(0, 2027), (13, 2027), (255, 27), (256, 27)] {
            let err = Expiry::new(month, year).unwrap_err();
            assert_eq!(err.code(), "invalid_expiry_month");
        }
        for year in [100, 999, 1999, 2100, 20270] {
            let err = Expiry::new(1, year).unwrap_err();
            assert_eq!(err.code(), "invalid_expiry_year", "{year}");
        }
        assert_eq!(
            Expiry::parse("", "27").unwrap_err(),
            CardError::InvalidExpiryMonth
        );
        assert_eq!(
            Expiry::parse("ab", "27").unwrap_err(),
            CardError::InvalidExpiryMonth
        );
        assert_eq!(
            Expiry::parse("+4", "27").unwrap_err(),
            CardError::InvalidExpiryMonth
        );
        assert_eq!(
            Expiry::parse("004", "27").unwrap_err(),
            CardError::InvalidExpiryMonth
        );
        for year in ["7", "027", "+027", "20 7", "abcd", ""] {
            assert_eq!(
                Expiry::parse("4", year).unwrap_err(),
                CardError::InvalidExpiryYear,
                "{year:?}"
            );
        }
    }

    #[test]
    fn expiry_is_valid_through_its_month() {
        let expiry = Expiry::new(4, 2027).unwrap();
        assert!(!expiry.is_expired_at(2026, 12));
        assert!(!expiry.is_expired_at(2027, 3));
        assert!(!expiry.is_expired_at(2027, 4));
        assert!(expiry.is_expired_at(2027, 5));
        assert!(expiry.is_expired_at(2028, 1));
    }

    #[test]
    fn summary_holds_only_displayable_data() {
        let pan = Pan::parse("4242424242424242").unwrap();
        let summary = CardSummary::new(&pan, Expiry::new(4, 27).unwrap());
        let json = serde_json::to_string(&summary).unwrap();
        assert_eq!(
            json,
            r#"{"brand":"visa","first6":"424242","last4":"4242","exp_month":4,"exp_year":2027}"#
        );
        assert!(!json.contains(pan.expose_digits()));
        let back: CardSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, summary);
    }

    /// Random 12- to 19-digit numbers made valid with the right check digit.
    fn valid_pan_digits() -> impl Strategy<Value = String> {
        proptest::collection::vec(0u8..10, PAN_MIN_DIGITS - 2..=PAN_MAX_DIGITS - 2).prop_map(
            |payload| {
                let mut digits: Vec<u8> = payload.iter().map(|d| b'0' + d).collect();
                // Start with a non-zero digit so the string looks like a card.
                digits.insert(0, b'4');
                let check = luhn::check_digit(&digits);
                digits.push(check);
                String::from_utf8(digits).unwrap()
            },
        )
    }

    proptest! {
        #[test]
        fn valid_numbers_parse_and_never_show_in_debug(digits in valid_pan_digits()) {
            let pan = Pan::parse(&digits).unwrap();
            prop_assert_eq!(pan.expose_digits(), digits.as_str());
            let shown = format!("{pan:?}");
            prop_assert!(!shown.contains(&digits));
            // No run of 7 or more digits in a row: at most the first 6 show.
            let longest_run = shown
                .split(|c: char| !c.is_ascii_digit())
                .map(str::len)
                .max()
                .unwrap_or(0);
            prop_assert!(longest_run <= 6);
        }

        #[test]
        fn one_wrong_digit_is_always_caught(
            digits in valid_pan_digits(),
            index in any::<proptest::sample::Index>(),
            delta in 1u8..10,
        ) {
            let mut bytes = digits.into_bytes();
            let i = index.index(bytes.len());
            bytes[i] = b'0' + (bytes[i] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(Pan::parse(&changed).unwrap_err(), CardError::LuhnCheckFailed);
        }
    }
}
