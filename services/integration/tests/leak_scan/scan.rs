//! Finding a canary card number or CVC in any text, in any form it could
//! realistically take: plain digits; grouped with spaces, dashes, dots,
//! `+` (form encoding) or other separators; percent-encoded; as JSON
//! `\u00XX` escapes (single or double escaped); as the hex of its ASCII
//! bytes (a `bytea` column, a hex dump); as base64 at any alignment. A CVC
//! is too short to search alone, so it counts only next to a field name that
//! means CVC (`cvc`, `cvv`, `cvc2`, `security_code`, `card_code`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// A secret to look for.
#[derive(Debug, Clone)]
pub enum Canary {
    /// A card number: the digits only.
    Pan(String),
    /// A CVC: the digits only.
    Cvc(String),
}

impl Canary {
    fn digits(&self) -> &str {
        match self {
            Canary::Pan(digits) | Canary::Cvc(digits) => digits,
        }
    }
}

/// One finding: where, which canary, and a little context around it (the
/// canary itself is masked in the context so a failing test does not print
/// it either).
#[derive(Debug, Clone)]
#[allow(dead_code)] // Read through `Debug`, in the failure message.
pub struct Hit {
    pub location: String,
    pub canary: String,
    pub form: &'static str,
    pub context: String,
}

/// Characters that may sit between the digits of a written card number.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '+' | '_' | '/' | '\t' | '\u{a0}' | ',')
}

/// Decodes `%XX` and `\u00XX` (with any number of backslashes) so that an
/// encoded digit or separator reads as itself.
pub fn normalize(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '%' && i + 2 < chars.len() {
            let hex: String = chars[i + 1..i + 3].iter().collect();
            if let Ok(byte) = u8::from_str_radix(&hex, 16) {
                out.push(char::from(byte));
                i += 3;
                continue;
            }
        }
        if c == '\\' {
            let mut j = i;
            while j < chars.len() && chars[j] == '\\' {
                j += 1;
            }
            if j + 4 < chars.len() && chars[j] == 'u' {
                let hex: String = chars[j + 1..j + 5].iter().collect();
                if let Some(decoded) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(decoded);
                    i = j + 5;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Finds `digits` in `text` allowing up to three separators between any two
/// digits, not preceded or followed by another digit. Returns the char
/// index of each match.
fn find_separated(text: &[char], digits: &[char]) -> Vec<usize> {
    let mut found = Vec::new();
    for start in 0..text.len() {
        if text[start] != digits[0] || (start > 0 && text[start - 1].is_ascii_digit()) {
            continue;
        }
        let (mut i, mut d) = (start + 1, 1);
        while d < digits.len() {
            let mut skipped = 0;
            while i < text.len() && is_separator(text[i]) && skipped < 3 {
                i += 1;
                skipped += 1;
            }
            if i < text.len() && text[i] == digits[d] {
                i += 1;
                d += 1;
            } else {
                break;
            }
        }
        if d == digits.len() && !(i < text.len() && text[i].is_ascii_digit()) {
            found.push(start);
        }
    }
    found
}

/// Field names that mean "CVC" in the formats we produce or receive.
const CVC_NAMES: &[&str] = &[
    "cvc",
    "cvc2",
    "cvv",
    "cvv2",
    "security_code",
    "card_code",
    "csc",
];

/// Finds every form of every canary in `text`.
pub fn scan(location: &str, text: &str, canaries: &[Canary]) -> Vec<Hit> {
    let mut hits = Vec::new();
    let normalized = normalize(text);
    let chars: Vec<char> = normalized.chars().collect();
    let lower = normalized.to_ascii_lowercase();
    for canary in canaries {
        let digits = canary.digits();
        let mut hit = |form: &'static str, at: usize| {
            let from = at.saturating_sub(40);
            let context: String = chars.iter().skip(from).take(100).collect();
            hits.push(Hit {
                location: location.to_owned(),
                canary: mask(canary),
                form,
                context: context.replace(digits, "<CANARY>"),
            });
        };
        match canary {
            Canary::Pan(_) => {
                let wanted: Vec<char> = digits.chars().collect();
                for at in find_separated(&chars, &wanted) {
                    hit("digits (with or without separators)", at);
                }
                for hex in [hex::encode(digits), hex::encode_upper(digits)] {
                    if let Some(at) = text.find(&hex) {
                        hit("hex of the ASCII digits", at);
                    }
                }
                for skip in 0..3 {
                    let tail = &digits.as_bytes()[skip..];
                    let whole = &tail[..tail.len() - tail.len() % 3];
                    if let Some(at) = text.find(&BASE64.encode(whole)) {
                        hit("base64", at);
                    }
                }
            }
            Canary::Cvc(_) => {
                for name in CVC_NAMES {
                    for (at, _) in lower.match_indices(name) {
                        // Skip what separates a field name from its value in
                        // JSON, forms, headers and debug output, then the
                        // value must be the CVC.
                        let value = lower[at + name.len()..]
                            .trim_start_matches(|c: char| "\"'=: ]>[\\".contains(c));
                        let rest = value.strip_prefix(digits);
                        if rest.is_some_and(|r| !r.starts_with(|c: char| c.is_ascii_digit())) {
                            hit("digits next to a CVC field name", at);
                        }
                    }
                }
            }
        }
    }
    hits
}

/// How a canary is named in a failure message: its kind and last digits.
fn mask(canary: &Canary) -> String {
    match canary {
        Canary::Pan(d) => format!("PAN …{}", &d[d.len() - 4..]),
        Canary::Cvc(_) => "CVC".to_owned(),
    }
}

/// The scanner's own checks, run by the leak-scan test before it scans.
pub fn self_test() {
    let pan = Canary::Pan("4000056655665556".to_owned());
    let cvc = Canary::Cvc("739".to_owned());
    let canaries = [pan, cvc];
    let found = |text: &str| !scan("self-test", text, &canaries).is_empty();
    for text in [
        "4000056655665556",
        "card 4000 0566 5566 5556 end",
        "4000-0566-5566-5556",
        "4000.0566.5566.5556",
        "card%5Bnumber%5D=4000+0566+5566+5556",
        "4000%2005665566%205556",
        r#"{"n":"\u0034\u0030\u0030\u0030056655665556"}"#,
        r#"{"n":"\\u0034000056655665556"}"#,
        r"\x34303030303536363535363635353536",
        &hex::encode_upper("4000056655665556"),
        &BASE64.encode("x4000056655665556y"),
        &BASE64.encode("xy4000056655665556"),
        &BASE64.encode("4000056655665556"),
        r#"{"card":{"cvc":"739"}}"#,
        "card%5Bcvc%5D=739",
        "cvv2: 739",
    ] {
        assert!(found(text), "the scanner misses {text:?}");
    }
    for text in [
        "400005******5556",
        "40000566556655561",
        "14000056655665556",
        "amount=739",
        "cvc_check=pass id=739x",
        r#"{"cvc":"7391"}"#,
        "4000056655665557",
    ] {
        assert!(!found(text), "false positive on {text:?}");
    }
}
