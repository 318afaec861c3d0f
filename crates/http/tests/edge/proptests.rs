//! No input panics the parameter parsers or readers.

use proptest::prelude::*;
use snakepay_http::{Param, ParamReader, Params};

/// Exercises every accessor on whatever was decoded.
fn read_everything(params: Params) {
    let _ = params.canonical();
    let names: Vec<String> = params.clone().into_map().into_keys().collect();
    let mut reader = params.reader();
    for (i, name) in names.iter().enumerate() {
        match i % 7 {
            0 => drop(reader.string(name)),
            1 => drop(reader.i64(name)),
            2 => drop(reader.bool(name)),
            3 => drop(reader.string_list(name)),
            4 => drop(reader.metadata(name)),
            5 => {
                if let Ok(Some(nested)) = reader.nested(name) {
                    read_nested(nested);
                }
            }
            _ => drop(reader.nested_list(name)),
        }
    }
    let _ = reader.finish();
}

fn read_nested(mut reader: ParamReader) {
    let _ = reader.string("a");
    let _ = reader.nested("b");
    let _ = reader.finish();
}

fn bracket_soup() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r"[a-c0-2\[\]=&%+;é\x00 ]{0,80}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_panic_the_form_or_query_parser(input in any::<String>()) {
        if let Ok(params) = Params::from_form(input.as_bytes()) {
            read_everything(params);
        }
        if let Ok(params) = Params::from_query(&input) {
            read_everything(params);
        }
    }

    #[test]
    fn bracket_heavy_strings_never_panic(input in bracket_soup()) {
        if let Ok(params) = Params::from_form(input.as_bytes()) {
            read_everything(params);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_form_or_json_parser(input in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(params) = Params::from_form(&input) {
            read_everything(params);
        }
        if let Ok(params) = Params::from_json(&input) {
            read_everything(params);
        }
    }

    #[test]
    fn decoded_forms_reencode_to_the_same_canonical_text(keys in proptest::collection::btree_map("[a-z]{1,5}", "[a-z0-9 ]{1,8}", 0..10)) {
        // Any order of the same pairs gives the same fingerprint.
        let forward: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={}", v.replace(' ', "+"))).collect();
        let mut backward = forward.clone();
        backward.reverse();
        let a = Params::from_form(forward.join("&").as_bytes()).unwrap();
        let b = Params::from_form(backward.join("&").as_bytes()).unwrap();
        prop_assert_eq!(a.canonical(), b.canonical());
        for (k, v) in &keys {
            prop_assert_eq!(a.get(k), Some(&Param::Value(v.clone())));
        }
    }
}
