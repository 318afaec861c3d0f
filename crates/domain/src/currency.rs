//! ISO 4217 currencies and their minor-unit exponents.
//!
//! Amounts on the wire are integers in the currency's minor unit (cents for USD,
//! yen for JPY, fils for KWD), so the exponent decides what `amount=1000` means.
//! The table follows ISO 4217's list of active currencies; funds codes, precious
//! metals and testing codes (BOV, XAU, XTS, ...) are left out because nobody pays
//! with them.
//!
//! One deliberate deviation from Stripe: Stripe treats MGA as zero-decimal while
//! ISO 4217 gives it two. We follow ISO, which is what card processors settle in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A currency we can take payments in. Cheap to copy; holds an index into the
/// static table so that the exponent and limits are a lookup, not a match arm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(u8);

/// One row of the currency table.
struct CurrencyInfo {
    /// Lower-case ISO 4217 alphabetic code, as on the wire.
    code: &'static str,
    /// Number of digits after the decimal point in the major unit.
    exponent: u8,
    /// Stripe's published minimum charge amount in minor units, where one is
    /// published for the currency; `None` means "any positive amount".
    minimum_charge_minor: Option<i64>,
}

const fn c(code: &'static str, exponent: u8) -> CurrencyInfo {
    CurrencyInfo {
        code,
        exponent,
        minimum_charge_minor: None,
    }
}

const fn m(code: &'static str, exponent: u8, minimum: i64) -> CurrencyInfo {
    CurrencyInfo {
        code,
        exponent,
        minimum_charge_minor: Some(minimum),
    }
}

/// Sorted by code: lookups are binary searches and `Currency`'s ordering is the
/// alphabetical one. The minimums are Stripe's published minimum charge amounts
/// (e.g. USD 0.50, GBP 0.30, JPY 50).
static CURRENCIES: &[CurrencyInfo] = &[
    m("aed", 2, 200),
    c("afn", 2),
    c("all", 2),
    c("amd", 2),
    c("aoa", 2),
    c("ars", 2),
    m("aud", 2, 50),
    c("awg", 2),
    c("azn", 2),
    c("bam", 2),
    c("bbd", 2),
    c("bdt", 2),
    m("bgn", 2, 100),
    c("bhd", 3),
    c("bif", 0),
    c("bmd", 2),
    c("bnd", 2),
    c("bob", 2),
    m("brl", 2, 50),
    c("bsd", 2),
    c("btn", 2),
    c("bwp", 2),
    c("byn", 2),
    c("bzd", 2),
    m("cad", 2, 50),
    c("cdf", 2),
    m("chf", 2, 50),
    c("clp", 0),
    c("cny", 2),
    c("cop", 2),
    c("crc", 2),
    c("cup", 2),
    c("cve", 2),
    m("czk", 2, 1500),
    c("djf", 0),
    m("dkk", 2, 250),
    c("dop", 2),
    c("dzd", 2),
    c("egp", 2),
    c("ern", 2),
    c("etb", 2),
    m("eur", 2, 50),
    c("fjd", 2),
    c("fkp", 2),
    m("gbp", 2, 30),
    c("gel", 2),
    c("ghs", 2),
    c("gip", 2),
    c("gmd", 2),
    c("gnf", 0),
    c("gtq", 2),
    c("gyd", 2),
    m("hkd", 2, 400),
    c("hnl", 2),
    c("htg", 2),
    m("huf", 2, 17500),
    c("idr", 2),
    c("ils", 2),
    m("inr", 2, 50),
    c("iqd", 3),
    c("irr", 2),
    c("isk", 0),
    c("jmd", 2),
    c("jod", 3),
    m("jpy", 0, 50),
    c("kes", 2),
    c("kgs", 2),
    c("khr", 2),
    c("kmf", 0),
    c("kpw", 2),
    c("krw", 0),
    c("kwd", 3),
    c("kyd", 2),
    c("kzt", 2),
    c("lak", 2),
    c("lbp", 2),
    c("lkr", 2),
    c("lrd", 2),
    c("lsl", 2),
    c("lyd", 3),
    c("mad", 2),
    c("mdl", 2),
    c("mga", 2),
    c("mkd", 2),
    c("mmk", 2),
    c("mnt", 2),
    c("mop", 2),
    c("mru", 2),
    c("mur", 2),
    c("mvr", 2),
    c("mwk", 2),
    m("mxn", 2, 1000),
    m("myr", 2, 200),
    c("mzn", 2),
    c("nad", 2),
    c("ngn", 2),
    c("nio", 2),
    m("nok", 2, 300),
    c("npr", 2),
    m("nzd", 2, 50),
    c("omr", 3),
    c("pab", 2),
    c("pen", 2),
    c("pgk", 2),
    c("php", 2),
    c("pkr", 2),
    m("pln", 2, 200),
    c("pyg", 0),
    c("qar", 2),
    m("ron", 2, 200),
    c("rsd", 2),
    c("rub", 2),
    c("rwf", 0),
    c("sar", 2),
    c("sbd", 2),
    c("scr", 2),
    c("sdg", 2),
    m("sek", 2, 300),
    m("sgd", 2, 50),
    c("shp", 2),
    c("sle", 2),
    c("sos", 2),
    c("srd", 2),
    c("ssp", 2),
    c("stn", 2),
    c("svc", 2),
    c("syp", 2),
    c("szl", 2),
    m("thb", 2, 1000),
    c("tjs", 2),
    c("tmt", 2),
    c("tnd", 3),
    c("top", 2),
    c("try", 2),
    c("ttd", 2),
    c("twd", 2),
    c("tzs", 2),
    c("uah", 2),
    c("ugx", 0),
    m("usd", 2, 50),
    c("uyu", 2),
    c("uzs", 2),
    c("ved", 2),
    c("ves", 2),
    c("vnd", 0),
    c("vuv", 0),
    c("wst", 2),
    c("xaf", 0),
    c("xcd", 2),
    c("xcg", 2),
    c("xof", 0),
    c("xpf", 0),
    c("yer", 2),
    m("zar", 2, 50),
    c("zmw", 2),
    c("zwg", 2),
];

/// Stripe's maximum amount: eight digits of minor units ($999,999.99).
pub const MAXIMUM_CHARGE_MINOR: i64 = 99_999_999;

/// A currency code that is not in the table, or not written the way the wire
/// writes it (three lower-case ASCII letters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a supported ISO 4217 currency code (three lower-case letters, e.g. `usd`)")]
pub struct UnknownCurrency(pub String);

impl Currency {
    pub const USD: Currency = Currency::const_lookup("usd");
    pub const EUR: Currency = Currency::const_lookup("eur");
    pub const GBP: Currency = Currency::const_lookup("gbp");
    pub const JPY: Currency = Currency::const_lookup("jpy");
    pub const KWD: Currency = Currency::const_lookup("kwd");

    /// Parses a lower-case ISO 4217 code as sent on the wire (`usd`, `jpy`).
    /// Upper-case is rejected: the API's currencies are lower-case, and
    /// accepting both would make two spellings of one idempotent request.
    pub fn parse(code: &str) -> Result<Currency, UnknownCurrency> {
        CURRENCIES
            .binary_search_by(|info| info.code.cmp(code))
            .ok()
            .and_then(|index| u8::try_from(index).ok())
            .map(Currency)
            .ok_or_else(|| UnknownCurrency(code.to_owned()))
    }

    /// Evaluated at compile time for the named constants above; a typo there
    /// fails the build instead of panicking at run time.
    // Indexing is bounded by the loop condition; `get` is not usable in const fns.
    #[allow(clippy::indexing_slicing)]
    const fn const_lookup(code: &str) -> Currency {
        let mut index = 0;
        while index < CURRENCIES.len() {
            if const_str_eq(CURRENCIES[index].code, code) {
                return Currency(index as u8);
            }
            index += 1;
        }
        #[allow(clippy::panic)] // const evaluation only: a compile error, never a runtime panic
        {
            panic!("currency constant is not in the table")
        }
    }

    fn info(self) -> &'static CurrencyInfo {
        // Invariant: a `Currency` is only ever built from a valid index into
        // CURRENCIES (see `parse` and `const_lookup`).
        #[allow(clippy::indexing_slicing)]
        &CURRENCIES[usize::from(self.0)]
    }

    /// The lower-case ISO code, as on the wire.
    pub fn code(self) -> &'static str {
        self.info().code
    }

    /// Digits after the decimal point: 0 for JPY, 2 for USD, 3 for KWD.
    pub fn exponent(self) -> u8 {
        self.info().exponent
    }

    /// The smallest amount a charge in this currency may have, in minor units.
    pub fn minimum_charge_minor(self) -> i64 {
        self.info()
            .minimum_charge_minor
            .unwrap_or_else(|| self.smallest_chargeable_step())
    }

    /// Three-decimal currencies are charged in steps of 10 minor units: card
    /// networks settle them to two decimals, so Stripe requires the last digit
    /// to be zero.
    pub fn smallest_chargeable_step(self) -> i64 {
        if self.exponent() == 3 { 10 } else { 1 }
    }

    /// Every currency in the table, in alphabetical order.
    pub fn all() -> impl Iterator<Item = Currency> {
        (0..CURRENCIES.len()).filter_map(|index| u8::try_from(index).ok().map(Currency))
    }
}

// Indexing is bounded by the equal-length check and the loop condition.
#[allow(clippy::indexing_slicing)]
const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = UnknownCurrency;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_has_no_duplicates_so_binary_search_is_correct() {
        for pair in CURRENCIES.windows(2) {
            assert!(
                pair[0].code < pair[1].code,
                "{} before {}",
                pair[0].code,
                pair[1].code
            );
        }
        assert!(CURRENCIES.len() < usize::from(u8::MAX));
    }

    #[test]
    fn codes_are_three_lower_case_letters() {
        for info in CURRENCIES {
            assert_eq!(info.code.len(), 3);
            assert!(
                info.code.bytes().all(|b| b.is_ascii_lowercase()),
                "{}",
                info.code
            );
        }
    }

    #[test]
    fn exponents_match_iso_4217_for_zero_two_and_three_decimal_currencies() {
        for (code, exponent) in [
            ("jpy", 0),
            ("krw", 0),
            ("vnd", 0),
            ("clp", 0),
            ("usd", 2),
            ("eur", 2),
            ("gbp", 2),
            ("kwd", 3),
            ("bhd", 3),
            ("jod", 3),
            ("omr", 3),
            ("tnd", 3),
        ] {
            assert_eq!(
                Currency::parse(code).unwrap().exponent(),
                exponent,
                "{code}"
            );
        }
    }

    #[test]
    fn parse_accepts_lower_case_and_rejects_everything_else() {
        assert_eq!(Currency::parse("usd").unwrap(), Currency::USD);
        for bad in ["USD", "Usd", "us", "usdd", "", "xxx", "xau", "u$d"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn minimums_follow_stripe_where_published_and_the_smallest_step_elsewhere() {
        assert_eq!(Currency::USD.minimum_charge_minor(), 50);
        assert_eq!(Currency::GBP.minimum_charge_minor(), 30);
        assert_eq!(Currency::JPY.minimum_charge_minor(), 50);
        assert_eq!(
            Currency::parse("huf").unwrap().minimum_charge_minor(),
            17_500
        );
        assert_eq!(Currency::KWD.minimum_charge_minor(), 10);
        assert_eq!(Currency::parse("krw").unwrap().minimum_charge_minor(), 1);
    }

    #[test]
    fn serde_round_trips_through_the_wire_code() {
        assert_eq!(serde_json::to_string(&Currency::EUR).unwrap(), "\"eur\"");
        assert_eq!(
            serde_json::from_str::<Currency>("\"jpy\"").unwrap(),
            Currency::JPY
        );
        assert!(serde_json::from_str::<Currency>("\"EUR\"").is_err());
        assert_eq!(Currency::all().count(), CURRENCIES.len());
    }
}
