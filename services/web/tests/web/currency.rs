//! The checkout formats amounts with its own table of currency exponents
//! (web/src/money.ts); it must be the platform's, or `amount=1000` would
//! read differently on the page than in the API.

use snakepay_domain::currency::Currency;

use crate::support::repo_root;

#[test]
fn the_checkout_knows_every_currency_exponent_the_platform_uses() {
    let source = std::fs::read_to_string(repo_root().join("web/src/money.ts")).unwrap();
    let table = source
        .split("EXPONENTS: Readonly<Record<string, number>> = {")
        .nth(1)
        .and_then(|rest| rest.split("};").next())
        .expect("the EXPONENTS table in money.ts");
    let mut theirs: Vec<(String, u8)> = table
        .split(',')
        .filter_map(|entry| entry.split_once(':'))
        .map(|(code, exponent)| (code.trim().to_owned(), exponent.trim().parse().unwrap()))
        .collect();
    theirs.sort();
    let ours: Vec<(String, u8)> = Currency::all()
        .filter(|currency| currency.exponent() != 2)
        .map(|currency| (currency.code().to_owned(), currency.exponent()))
        .collect();
    assert_eq!(theirs, ours);
}
