//! Turning card details into a stored payment method: parse, check, seal.
//! The clear number and CVC live only in this function's locals, in the
//! vault's zeroized types, and are never logged.

use snakepay_domain::ids::{CustomerId, MerchantId, PaymentMethodId};
use snakepay_http::ApiError;
use snakepay_store::intents::{CardRecord, SealedColumns};
use snakepay_vault::{CardError, Cvc, Expiry, Pan, SealedRecord, Vault};

/// Card details from `payment_method_data[card]`.
pub struct CardInput {
    pub number: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub cvc: Option<String>,
}

impl std::fmt::Debug for CardInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardInput(***)")
    }
}

/// Stripe's test payment method IDs and the test card each stands for. They
/// work in test mode only.
const TEST_PAYMENT_METHODS: &[(&str, &str)] = &[
    ("pm_card_visa", "4242424242424242"),
    ("pm_card_mastercard", "5555555555554444"),
    ("pm_card_amex", "378282246310005"),
    ("pm_card_chargeDeclined", "4000000000000002"),
    (
        "pm_card_chargeDeclinedInsufficientFunds",
        "4000000000009995",
    ),
    ("pm_card_chargeDeclinedExpiredCard", "4000000000000069"),
    ("pm_card_chargeDeclinedIncorrectCvc", "4000000000000127"),
    ("pm_card_chargeDeclinedProcessingError", "4000000000000119"),
    ("pm_card_authenticationRequired", "4000002760003184"),
    ("pm_card_threeDSecure2Required", "4000002760003184"),
];

/// The card numbers API.md names as test cards; refused in live mode.
const TEST_CARD_NUMBERS: &[&str] = &[
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

/// The test card behind a test payment method ID, if `id` is one.
pub fn test_payment_method(id: &str) -> Option<CardInput> {
    TEST_PAYMENT_METHODS
        .iter()
        .find(|(name, _)| *name == id)
        .map(|(_, number)| CardInput {
            number: (*number).to_owned(),
            exp_month: 12,
            exp_year: 2034,
            cvc: Some(if number.len() == 15 { "1234" } else { "123" }.to_owned()),
        })
}

fn card_error(error: CardError, param: &str) -> ApiError {
    ApiError::card_error(
        error.code(),
        None,
        &error.to_string(),
        serde_json::Value::Null,
    )
    .with_param(param)
}

/// A card that passed every check, not yet sealed. Its number and CVC are
/// the vault's zeroized types.
pub struct ParsedCard {
    pan: Pan,
    expiry: Expiry,
    cvc: Option<Cvc>,
}

impl std::fmt::Debug for ParsedCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedCard({:?})", self.pan)
    }
}

/// Checks card details: number, expiry (at `now`), CVC, and no test cards in
/// live mode. Runs before the idempotency key is claimed, so a mistyped
/// card is a validation error that is not stored (API.md).
pub fn parse(input: &CardInput, livemode: bool, now: i64) -> Result<ParsedCard, ApiError> {
    const PARAM: &str = "payment_method_data[card]";
    let pan = Pan::parse(&input.number).map_err(|e| card_error(e, &format!("{PARAM}[number]")))?;
    let month = u32::try_from(input.exp_month).map_err(|_| {
        card_error(
            CardError::InvalidExpiryMonth,
            &format!("{PARAM}[exp_month]"),
        )
    })?;
    let year = u32::try_from(input.exp_year)
        .map_err(|_| card_error(CardError::InvalidExpiryYear, &format!("{PARAM}[exp_year]")))?;
    let expiry = Expiry::new(month, year).map_err(|e| {
        let field = if e == CardError::InvalidExpiryMonth {
            "exp_month"
        } else {
            "exp_year"
        };
        card_error(e, &format!("{PARAM}[{field}]"))
    })?;
    let (current_year, current_month) = year_month(now);
    if expiry.is_expired_at(current_year, current_month) {
        return Err(ApiError::card_error(
            "expired_card",
            None,
            "Your card has expired.",
            serde_json::Value::Null,
        )
        .with_param(&format!("{PARAM}[exp_year]")));
    }
    if livemode && TEST_CARD_NUMBERS.contains(&pan.expose_digits()) {
        return Err(ApiError::card_error(
            "card_declined",
            Some("test_mode_live_card"),
            "Your card was declined. Your request was in live mode, but used a known test card.",
            serde_json::Value::Null,
        ));
    }
    let cvc = input
        .cvc
        .as_deref()
        .map(|text| Cvc::parse_for_brand(text, pan.brand()))
        .transpose()
        .map_err(|e| card_error(e, &format!("{PARAM}[cvc]")))?;
    Ok(ParsedCard { pan, expiry, cvc })
}

/// Seals a checked card for `merchant` as payment method `id`.
pub fn seal(
    vault: &Vault,
    id: PaymentMethodId,
    merchant: MerchantId,
    livemode: bool,
    customer: Option<CustomerId>,
    card: &ParsedCard,
    now: i64,
) -> Result<CardRecord, ApiError> {
    // The record's ID is bound into the ciphertext: it cannot be moved to
    // another payment method.
    let aad = id.to_string();
    let internal = |e: snakepay_vault::VaultError| {
        ApiError::internal(&anyhow::anyhow!("sealing card data: {e}"))
    };
    let sealed_pan = vault
        .seal_pan(&card.pan, aad.as_bytes())
        .map_err(internal)?;
    let sealed_cvc = card
        .cvc
        .as_ref()
        .map(|c| vault.seal_cvc(c, aad.as_bytes()))
        .transpose()
        .map_err(internal)?;
    Ok(CardRecord {
        id,
        merchant_id: merchant,
        livemode,
        customer,
        brand: card.pan.brand().as_str().to_owned(),
        first6: card.pan.first6().to_owned(),
        last4: card.pan.last4().to_owned(),
        exp_month: i16::from(card.expiry.month()),
        exp_year: i16::try_from(card.expiry.year()).unwrap_or(i16::MAX),
        fingerprint: vault.fingerprint(&card.pan).to_string(),
        pan: columns(sealed_pan),
        cvc: sealed_cvc.map(columns),
        created: now,
    })
}

fn columns(sealed: SealedRecord) -> SealedColumns {
    let (key_id, wrapped_key, ciphertext) = sealed.into_parts();
    SealedColumns {
        key_id,
        wrapped_key,
        ciphertext,
    }
}

/// The calendar year and month (UTC) of a Unix time, by the civil-from-days
/// algorithm: no time-zone database is needed for a card's expiry month.
pub fn year_month(unix_seconds: i64) -> (u16, u8) {
    let days = unix_seconds.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        u16::try_from(year).unwrap_or(u16::MAX),
        u8::try_from(month).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_month_follows_the_calendar() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(951_782_400), (2000, 2)); // 2000-02-29
        assert_eq!(year_month(1_798_761_599), (2026, 12)); // 2026-12-31 23:59:59
        assert_eq!(year_month(1_798_761_600), (2027, 1));
    }

    #[test]
    fn test_payment_methods_map_to_test_cards() {
        assert_eq!(
            test_payment_method("pm_card_visa").unwrap().number,
            "4242424242424242"
        );
        assert!(test_payment_method("pm_card_nonsense").is_none());
        assert_eq!(
            format!("{:?}", test_payment_method("pm_card_visa").unwrap()),
            "CardInput(***)"
        );
    }
}
