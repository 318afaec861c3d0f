//! Stripe request parameters: bracket-notation forms, query strings and JSON
//! bodies decoded into one tree ([`Params`]), and a reader that consumes them
//! by name and refuses whatever the handler did not ask for ([`ParamReader`]).
//!
//! Values stay strings in the tree (JSON numbers and booleans become their
//! text), so one set of typed accessors serves forms and JSON alike, and the
//! canonical text used for idempotency fingerprints is the same for both.
//!
//! Lists: `expand[]=a` appends; `expand[0]=a` is an explicit index. A map whose
//! keys are exactly `0..n` becomes a list, so both spellings (and a JSON array)
//! give the same tree. A map with numeric keys that are not dense stays a map,
//! because metadata keys may be numbers; reading it as a list is refused.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::error::ApiError;

mod reader;

pub use reader::{MetadataUpdate, ParamReader};

/// More parameters than any endpoint of ours takes, by a wide margin; a body
/// with more is abuse, not a payment.
pub const MAX_PARAMS: usize = 1_000;
/// Bracket segments after the top-level name (`a[b][c]` has two). Our deepest
/// real parameter, `payment_method_data[card][number]`, has two.
pub const MAX_DEPTH: usize = 8;
/// Stripe's metadata limits.
pub const METADATA_MAX_KEYS: usize = 50;
pub const METADATA_KEY_MAX_CHARS: usize = 40;
pub const METADATA_VALUE_MAX_CHARS: usize = 500;

/// Error codes of the `parameter_invalid` family used by this module.
pub mod codes {
    pub const NAME: &str = "parameter_invalid_name";
    pub const ENCODING: &str = "parameter_invalid_encoding";
    pub const DUPLICATE: &str = "parameter_invalid_duplicate";
    pub const CONFLICT: &str = "parameter_invalid_conflict";
    pub const DEPTH: &str = "parameter_invalid_depth";
    pub const COUNT: &str = "parameter_invalid_count";
    pub const ARRAY: &str = "parameter_invalid_array";
    pub const OBJECT: &str = "parameter_invalid_object";
    pub const STRING: &str = "parameter_invalid_string";
    pub const INTEGER: &str = "parameter_invalid_integer";
    pub const BOOLEAN: &str = "parameter_invalid_boolean";
    pub const ENUM: &str = "parameter_invalid_enum";
    pub const METADATA: &str = "parameter_invalid_metadata";
    pub const JSON: &str = "parameter_invalid_json";
}

/// One decoded parameter. `Debug` never shows values: they may be card data.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Param {
    Value(String),
    Map(BTreeMap<String, Param>),
    List(Vec<Param>),
}

impl fmt::Debug for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Value(v) => write!(f, "Value(<{} chars>)", v.chars().count()),
            Param::Map(m) => f.debug_map().entries(m.iter()).finish(),
            Param::List(l) => f.debug_list().entries(l.iter()).finish(),
        }
    }
}

impl Param {
    fn kind(&self) -> &'static str {
        match self {
            Param::Value(_) => "a string",
            Param::Map(_) => "an object",
            Param::List(_) => "an array",
        }
    }
}

/// The decoded parameters of one request. Serializes as its tree (the
/// canonical form's JSON), never logged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Params {
    root: BTreeMap<String, Param>,
}

impl Params {
    /// Decodes an `application/x-www-form-urlencoded` body with bracket notation.
    pub fn from_form(body: &[u8]) -> Result<Params, ApiError> {
        let mut root = BTreeMap::new();
        let mut count = 0_usize;
        for pair in body.split(|b| *b == b'&') {
            if pair.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_PARAMS {
                return Err(too_many());
            }
            let (raw_key, raw_value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (
                    pair.get(..i).unwrap_or_default(),
                    pair.get(i + 1..).unwrap_or_default(),
                ),
                None => (pair, &[][..]),
            };
            let key = percent_decode(raw_key)?;
            let value = percent_decode(raw_value)?;
            let (base, segments) = parse_key(&key)?;
            insert(&mut root, &base, &segments, value, &key)?;
        }
        Ok(Params {
            root: normalize_map(root),
        })
    }

    /// Decodes a query string (with or without its leading `?`); same notation as forms.
    pub fn from_query(query: &str) -> Result<Params, ApiError> {
        Params::from_form(query.strip_prefix('?').unwrap_or(query).as_bytes())
    }

    /// Decodes a JSON body, which must be an object. An empty body is `{}`.
    pub fn from_json(body: &[u8]) -> Result<Params, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params::default());
        }
        // serde_json's error text may quote the input, which may be card data;
        // the client gets only the position.
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid_request(
                Some(codes::JSON),
                None,
                format!(
                    "Invalid JSON body: syntax error at line {}, column {}.",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let serde_json::Value::Object(object) = value else {
            return Err(ApiError::invalid_request(
                Some(codes::JSON),
                None,
                "Invalid JSON body: it must be an object.",
            ));
        };
        let mut count = 0_usize;
        let mut root = BTreeMap::new();
        for (key, value) in object {
            check_json_key(&key, &key)?;
            let param = from_json_value(value, &key, 0, &mut count)?;
            root.insert(key, param);
        }
        Ok(Params {
            root: normalize_map(root),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// The top-level parameter `name`, if given.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.root.get(name)
    }

    pub fn into_map(self) -> BTreeMap<String, Param> {
        self.root
    }

    /// Adds `other`'s parameters; a top-level name present in both is refused
    /// as a duplicate (used to combine a POST's query string with its body).
    pub fn merge(&mut self, other: Params) -> Result<(), ApiError> {
        for (key, value) in other.root {
            if self.root.contains_key(&key) {
                return Err(duplicate(&key));
            }
            self.root.insert(key, value);
        }
        Ok(())
    }

    /// Canonical, order-independent text of the decoded parameters: JSON with
    /// sorted keys, every leaf a string. Form and JSON spellings of the same
    /// request, in any order, give the same text; the idempotency fingerprint
    /// hashes it.
    pub fn canonical(&self) -> String {
        // Serializing string-keyed maps of strings cannot fail.
        serde_json::to_string(&self.root).unwrap_or_default()
    }

    pub fn reader(self) -> ParamReader {
        ParamReader::new(self.root)
    }
}

fn too_many() -> ApiError {
    ApiError::invalid_request(
        Some(codes::COUNT),
        None,
        format!("Too many parameters: at most {MAX_PARAMS} are accepted."),
    )
}

fn duplicate(path: &str) -> ApiError {
    ApiError::parameter_invalid(
        codes::DUPLICATE,
        path,
        format!("Parameter {path} was given more than once."),
    )
}

fn conflict(path: &str) -> ApiError {
    ApiError::parameter_invalid(
        codes::CONFLICT,
        path,
        format!("Parameter {path} was given both as a value and as an object or array."),
    )
}

fn too_deep(path: &str) -> ApiError {
    ApiError::parameter_invalid(
        codes::DEPTH,
        path,
        format!("Parameter {path} is nested too deeply: at most {MAX_DEPTH} levels are accepted."),
    )
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
/// A `%` not followed by two hex digits stays as it is (as browsers and the URL
/// standard do); the bytes must then be UTF-8, since silently replacing bytes
/// would change what the merchant sent.
fn percent_decode(input: &[u8]) -> Result<String, ApiError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = input.get(i + 1).and_then(|c| hex_value(*c));
                let lo = input.get(i + 2).and_then(|c| hex_value(*c));
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi * 16 + lo);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| {
        ApiError::invalid_request(
            Some(codes::ENCODING),
            None,
            "Invalid parameter encoding: parameters must be UTF-8 text.",
        )
    })
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    /// `[]`: append to a list.
    Append,
}

fn malformed(key: &str, why: &str) -> ApiError {
    ApiError::parameter_invalid(
        codes::NAME,
        key,
        format!("Invalid parameter name {key:?}: {why}."),
    )
}

/// Splits `a[b][c]` into `a` and its segments.
fn parse_key(key: &str) -> Result<(String, Vec<Segment>), ApiError> {
    let (base, mut rest) = match key.find('[') {
        Some(i) => (
            key.get(..i).unwrap_or_default(),
            key.get(i..).unwrap_or_default(),
        ),
        None => (key, ""),
    };
    if base.is_empty() {
        return Err(malformed(key, "the name is empty"));
    }
    if base.contains(']') {
        return Err(malformed(key, "unbalanced brackets"));
    }
    let mut segments = Vec::new();
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('[') else {
            return Err(malformed(key, "text after a closing bracket"));
        };
        let Some(close) = inner.find(']') else {
            return Err(malformed(key, "unbalanced brackets"));
        };
        let segment = inner.get(..close).unwrap_or_default();
        if segment.contains('[') {
            return Err(malformed(key, "unbalanced brackets"));
        }
        if matches!(segments.last(), Some(Segment::Append)) {
            return Err(malformed(
                key,
                "`[]` may only end a name; use explicit indices such as items[0][price]",
            ));
        }
        segments.push(if segment.is_empty() {
            Segment::Append
        } else {
            Segment::Key(segment.to_owned())
        });
        if segments.len() > MAX_DEPTH {
            return Err(too_deep(key));
        }
        rest = inner.get(close + 1..).unwrap_or_default();
    }
    Ok((base.to_owned(), segments))
}

fn child_path(prefix: &str, name: &str) -> String {
    format!("{prefix}[{name}]")
}

/// Inserts one decoded pair into the tree, refusing duplicates and a name used
/// both as a value and as a container.
fn insert(
    root: &mut BTreeMap<String, Param>,
    base: &str,
    segments: &[Segment],
    value: String,
    full_key: &str,
) -> Result<(), ApiError> {
    let mut map = root;
    let mut name = base.to_owned();
    let mut path = base.to_owned();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                let node = map
                    .entry(name)
                    .or_insert_with(|| Param::Map(BTreeMap::new()));
                match node {
                    Param::Map(inner) => map = inner,
                    Param::Value(_) | Param::List(_) => return Err(conflict(&path)),
                }
                name = key.clone();
                path = child_path(&path, key);
            }
            Segment::Append => {
                let node = map.entry(name).or_insert_with(|| Param::List(Vec::new()));
                return match node {
                    Param::List(items) => {
                        items.push(Param::Value(value));
                        Ok(())
                    }
                    Param::Value(_) | Param::Map(_) => Err(conflict(&path)),
                };
            }
        }
    }
    match map.get(&name) {
        None => {
            map.insert(name, Param::Value(value));
            Ok(())
        }
        Some(Param::Value(_)) => Err(duplicate(full_key)),
        Some(Param::Map(_) | Param::List(_)) => Err(conflict(&path)),
    }
}

/// Turns maps keyed exactly `0..n` into lists, bottom-up.
fn normalize_map(map: BTreeMap<String, Param>) -> BTreeMap<String, Param> {
    map.into_iter()
        .map(|(key, value)| (key, normalize(value)))
        .collect()
}

fn normalize(param: Param) -> Param {
    match param {
        Param::Value(v) => Param::Value(v),
        Param::List(items) => Param::List(items.into_iter().map(normalize).collect()),
        Param::Map(map) => {
            let map = normalize_map(map);
            match dense_indices(&map) {
                Some(order) => {
                    let mut slots: Vec<Option<Param>> = (0..map.len()).map(|_| None).collect();
                    for ((_, value), index) in map.into_iter().zip(order) {
                        if let Some(slot) = slots.get_mut(index) {
                            *slot = Some(value);
                        }
                    }
                    Param::List(slots.into_iter().flatten().collect())
                }
                None => Param::Map(map),
            }
        }
    }
}

/// A list index as Stripe's SDKs write it: decimal, no sign, no leading zero.
fn index_of(key: &str) -> Option<usize> {
    let canonical = key == "0"
        || (!key.starts_with('0') && !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()));
    if canonical { key.parse().ok() } else { None }
}

/// For a non-empty map keyed exactly `0..n`, each entry's index in map order.
fn dense_indices(map: &BTreeMap<String, Param>) -> Option<Vec<usize>> {
    if map.is_empty() {
        return None;
    }
    let order: Vec<usize> = map
        .keys()
        .map(|k| index_of(k))
        .collect::<Option<Vec<_>>>()?;
    let mut seen = vec![false; map.len()];
    for &index in &order {
        *seen.get_mut(index)? = true;
    }
    seen.iter().all(|s| *s).then_some(order)
}

fn check_json_key(key: &str, path: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.contains('[') || key.contains(']') {
        return Err(ApiError::parameter_invalid(
            codes::NAME,
            path,
            format!(
                "Invalid parameter name {path:?}: names must be non-empty and contain no brackets."
            ),
        ));
    }
    Ok(())
}

fn from_json_value(
    value: serde_json::Value,
    path: &str,
    depth: usize,
    count: &mut usize,
) -> Result<Param, ApiError> {
    use serde_json::Value as J;
    let mut leaf = |text: String| {
        *count += 1;
        if *count > MAX_PARAMS {
            Err(too_many())
        } else {
            Ok(Param::Value(text))
        }
    };
    match value {
        // `null` is JSON's "unset", which forms spell as an empty string.
        J::Null => leaf(String::new()),
        J::Bool(b) => leaf(b.to_string()),
        J::Number(n) => leaf(n.to_string()),
        J::String(s) => leaf(s),
        J::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(too_deep(path));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                out.push(from_json_value(
                    item,
                    &child_path(path, &i.to_string()),
                    depth + 1,
                    count,
                )?);
            }
            Ok(Param::List(out))
        }
        J::Object(object) => {
            if depth >= MAX_DEPTH {
                return Err(too_deep(path));
            }
            let mut out = BTreeMap::new();
            for (key, item) in object {
                let item_path = child_path(path, &key);
                check_json_key(&key, &item_path)?;
                out.insert(key, from_json_value(item, &item_path, depth + 1, count)?);
            }
            Ok(Param::Map(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(s: &str) -> Params {
        Params::from_form(s.as_bytes()).unwrap()
    }

    fn v(s: &str) -> Param {
        Param::Value(s.to_owned())
    }

    #[test]
    fn nested_brackets_build_a_tree() {
        let p = form("payment_method_data[card][number]=4242&payment_method_data[type]=card");
        let Some(Param::Map(pmd)) = p.get("payment_method_data") else {
            panic!()
        };
        assert_eq!(pmd.get("type"), Some(&v("card")));
        let Some(Param::Map(card)) = pmd.get("card") else {
            panic!()
        };
        assert_eq!(card.get("number"), Some(&v("4242")));
    }

    #[test]
    fn both_array_spellings_give_the_same_list() {
        let a = form("expand[]=a&expand[]=b");
        let b = form("expand[1]=b&expand[0]=a");
        assert_eq!(a, b);
        assert_eq!(a.get("expand"), Some(&Param::List(vec![v("a"), v("b")])));
    }

    #[test]
    fn ten_or_more_explicit_indices_keep_numeric_order() {
        let body: Vec<String> = (0..12).map(|i| format!("x[{i}]={i}")).collect();
        let p = form(&body.join("&"));
        let Some(Param::List(items)) = p.get("x") else {
            panic!()
        };
        assert_eq!(items.get(10), Some(&v("10")));
        assert_eq!(items.get(2), Some(&v("2")));
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "a[b", "a]", "a[b]c", "[a]=1", "=1", "a[[b]]", "a[][b]", "a[b]]",
        ] {
            let err = Params::from_form(bad.as_bytes()).unwrap_err();
            assert_eq!(err.code.as_deref(), Some(codes::NAME), "{bad}");
        }
    }

    #[test]
    fn percent_decoding_is_strict_about_utf8_and_lenient_about_stray_percent() {
        assert_eq!(form("a=100%25+off%").get("a"), Some(&v("100% off%")));
        assert!(Params::from_form(b"a=%FF").is_err());
    }

    #[test]
    fn metadata_with_numeric_keys_survives_list_normalization() {
        let mut r = form("metadata[0]=x&metadata[1]=").reader();
        let Some(MetadataUpdate::Patch(changes)) = r.metadata("metadata").unwrap() else {
            panic!()
        };
        assert_eq!(changes.get("0"), Some(&Some("x".to_owned())));
        assert_eq!(changes.get("1"), Some(&None));
    }

    #[test]
    fn metadata_apply_enforces_the_key_limit() {
        let mut existing: BTreeMap<String, String> =
            (0..50).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let add = MetadataUpdate::Patch(BTreeMap::from([("new".to_owned(), Some("v".to_owned()))]));
        assert!(add.apply(&mut existing, "metadata").is_err());
        let remove = MetadataUpdate::Patch(BTreeMap::from([("k1".to_owned(), None)]));
        remove.apply(&mut existing, "metadata").unwrap();
        assert_eq!(existing.len(), 49);
        MetadataUpdate::ClearAll
            .apply(&mut existing, "metadata")
            .unwrap();
        assert!(existing.is_empty());
    }

    #[test]
    fn debug_never_shows_values() {
        let p = form("card[number]=4242424242424242");
        assert!(!format!("{p:?}").contains("4242"));
    }

    #[test]
    fn nested_reader_dropped_unfinished_reports_to_its_parent() {
        let mut r = form("card[number]=1&card[bogus]=2").reader();
        {
            let mut card = r.nested("card").unwrap().unwrap();
            assert_eq!(card.string("number").unwrap().as_deref(), Some("1"));
        }
        let err = r.finish().unwrap_err();
        assert_eq!(err.param.as_deref(), Some("card[bogus]"));
    }
}
