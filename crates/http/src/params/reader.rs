//! [`ParamReader`]: reads decoded parameters by name, typed, and refuses
//! whatever was not read; [`MetadataUpdate`] for Stripe's metadata semantics.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::{
    METADATA_KEY_MAX_CHARS, METADATA_MAX_KEYS, METADATA_VALUE_MAX_CHARS, Param, child_path, codes,
    index_of,
};
use crate::error::ApiError;

/// A metadata change as Stripe defines it on create and update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataUpdate {
    /// `metadata=`: remove every key.
    ClearAll,
    /// `metadata[k]=v` sets `k`; `metadata[k]=` (None here) deletes it.
    Patch(BTreeMap<String, Option<String>>),
}

impl MetadataUpdate {
    /// Applies the change to an object's metadata, refusing a result with more
    /// than [`METADATA_MAX_KEYS`] keys. `param` names the parameter in the error.
    pub fn apply(
        &self,
        metadata: &mut BTreeMap<String, String>,
        param: &str,
    ) -> Result<(), ApiError> {
        let mut next = metadata.clone();
        match self {
            MetadataUpdate::ClearAll => next.clear(),
            MetadataUpdate::Patch(changes) => {
                for (key, value) in changes {
                    match value {
                        Some(v) => next.insert(key.clone(), v.clone()),
                        None => next.remove(key),
                    };
                }
            }
        }
        if next.len() > METADATA_MAX_KEYS {
            return Err(ApiError::parameter_invalid(
                codes::METADATA,
                param,
                format!(
                    "Invalid {param}: an object can have at most {METADATA_MAX_KEYS} metadata keys."
                ),
            ));
        }
        *metadata = next;
        Ok(())
    }

    /// The metadata of a newly created object.
    pub fn into_new_metadata(self) -> BTreeMap<String, String> {
        match self {
            MetadataUpdate::ClearAll => BTreeMap::new(),
            MetadataUpdate::Patch(changes) => changes
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
        }
    }
}

/// Consumes parameters by name; [`ParamReader::finish`] refuses the rest.
///
/// Readers made by [`ParamReader::nested`] report their own leftovers when
/// finished; one dropped unfinished hands them to its parent, so an unknown
/// nested parameter is refused even if the handler forgets the inner
/// `finish` — provided the nested reader is gone before the parent finishes.
pub struct ParamReader {
    remaining: BTreeMap<String, Param>,
    /// The bracket path of this object, `None` at the top level.
    prefix: Option<String>,
    /// Leftover paths of nested readers dropped unfinished, shared by the tree.
    leftovers: Arc<Mutex<Vec<String>>>,
}

impl fmt::Debug for ParamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParamReader")
            .field("prefix", &self.prefix)
            .field("remaining", &self.remaining.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Drop for ParamReader {
    fn drop(&mut self) {
        if self.prefix.is_some() && !self.remaining.is_empty() {
            let paths: Vec<String> = self.remaining.keys().map(|k| self.path(k)).collect();
            let mut sink = self.leftovers.lock().unwrap_or_else(|p| p.into_inner());
            sink.extend(paths);
        }
    }
}

impl ParamReader {
    pub(super) fn new(root: BTreeMap<String, Param>) -> ParamReader {
        ParamReader {
            remaining: root,
            prefix: None,
            leftovers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The full bracket path of `name` in this reader (`payment_method_data[card][number]`).
    pub fn path(&self, name: &str) -> String {
        match &self.prefix {
            None => name.to_owned(),
            Some(prefix) => child_path(prefix, name),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.remaining.contains_key(name)
    }

    /// Takes the raw parameter, for shapes the typed accessors do not cover.
    pub fn take(&mut self, name: &str) -> Option<Param> {
        self.remaining.remove(name)
    }

    /// A string; `""` means unset and gives `None`.
    pub fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Param::Value(v)) if v.is_empty() => Ok(None),
            Some(Param::Value(v)) => Ok(Some(v)),
            Some(other) => {
                let path = self.path(name);
                Err(ApiError::parameter_invalid(
                    codes::STRING,
                    &path,
                    format!("Invalid {path}: expected a string, got {}.", other.kind()),
                ))
            }
        }
    }

    pub fn required_string(&mut self, name: &str) -> Result<String, ApiError> {
        self.string(name)?
            .ok_or_else(|| ApiError::parameter_missing(&self.path(name)))
    }

    pub fn i64(&mut self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.string(name)? else {
            return Ok(None);
        };
        // Only plain decimal integers: no sign other than `-`, no spaces, no fractions.
        let digits = text.strip_prefix('-').unwrap_or(&text);
        let plain = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<i64>() {
            Ok(n) if plain => Ok(Some(n)),
            _ => {
                let path = self.path(name);
                Err(ApiError::parameter_invalid(
                    codes::INTEGER,
                    &path,
                    // The value is not echoed: a misplaced card number must not
                    // reach error messages, which may be logged downstream.
                    format!("Invalid integer: {path} must be a whole number such as 2000."),
                ))
            }
        }
    }

    pub fn required_i64(&mut self, name: &str) -> Result<i64, ApiError> {
        self.i64(name)?
            .ok_or_else(|| ApiError::parameter_missing(&self.path(name)))
    }

    /// Only `true` and `false`, as Stripe's SDKs send them.
    pub fn bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.string(name)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => {
                let path = self.path(name);
                Err(ApiError::parameter_invalid(
                    codes::BOOLEAN,
                    &path,
                    format!("Invalid boolean: {path} must be true or false."),
                ))
            }
        }
    }

    /// One of `allowed`'s names, mapped to its value.
    pub fn enumeration<T>(
        &mut self,
        name: &str,
        allowed: &[(&str, T)],
    ) -> Result<Option<T>, ApiError>
    where
        T: Copy,
    {
        let Some(text) = self.string(name)? else {
            return Ok(None);
        };
        if let Some((_, value)) = allowed.iter().find(|(n, _)| *n == text) {
            return Ok(Some(*value));
        }
        let path = self.path(name);
        let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
        let listed = match names.split_last() {
            None => String::from("(none)"),
            Some((last, [])) => (*last).to_owned(),
            Some((last, [first])) => format!("{first} or {last}"),
            Some((last, rest)) => format!("{}, or {last}", rest.join(", ")),
        };
        Err(ApiError::parameter_invalid(
            codes::ENUM,
            &path,
            format!("Invalid {path}: must be one of {listed}"),
        ))
    }

    /// A list of strings: `x[]=a&x[]=b`, `x[0]=a&x[1]=b`, a JSON array, or a
    /// single value (a one-element list). Missing or `""` gives an empty list.
    pub fn string_list(&mut self, name: &str) -> Result<Vec<String>, ApiError> {
        let path = self.path(name);
        let items = match self.take(name) {
            None => return Ok(Vec::new()),
            Some(Param::Value(v)) if v.is_empty() => return Ok(Vec::new()),
            Some(Param::Value(v)) => return Ok(vec![v]),
            Some(Param::List(items)) => items,
            Some(Param::Map(map)) => return Err(not_a_list(&path, &map)),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Param::Value(v) => Ok(v),
                other => {
                    let item_path = child_path(&path, &i.to_string());
                    Err(ApiError::parameter_invalid(
                        codes::STRING,
                        &item_path,
                        format!(
                            "Invalid {item_path}: expected a string, got {}.",
                            other.kind()
                        ),
                    ))
                }
            })
            .collect()
    }

    /// A list of objects (`items[0][price]=…&items[1][price]=…`), one reader each.
    pub fn nested_list(&mut self, name: &str) -> Result<Vec<ParamReader>, ApiError> {
        let path = self.path(name);
        let items = match self.take(name) {
            None => return Ok(Vec::new()),
            Some(Param::Value(v)) if v.is_empty() => return Ok(Vec::new()),
            Some(Param::List(items)) => items,
            Some(Param::Map(map)) => return Err(not_a_list(&path, &map)),
            Some(Param::Value(_)) => {
                return Err(ApiError::parameter_invalid(
                    codes::ARRAY,
                    &path,
                    format!("Invalid {path}: expected an array of objects."),
                ));
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = child_path(&path, &i.to_string());
                match item {
                    Param::Map(map) => Ok(self.child(map, item_path)),
                    other => Err(ApiError::parameter_invalid(
                        codes::OBJECT,
                        &item_path,
                        format!(
                            "Invalid {item_path}: expected an object, got {}.",
                            other.kind()
                        ),
                    )),
                }
            })
            .collect()
    }

    /// Stripe metadata (see [`MetadataUpdate`]), with Stripe's size limits.
    pub fn metadata(&mut self, name: &str) -> Result<Option<MetadataUpdate>, ApiError> {
        let path = self.path(name);
        let entries: Vec<(String, Param)> = match self.take(name) {
            None => return Ok(None),
            Some(Param::Value(v)) if v.is_empty() => return Ok(Some(MetadataUpdate::ClearAll)),
            Some(Param::Value(_)) => {
                return Err(ApiError::parameter_invalid(
                    codes::METADATA,
                    &path,
                    format!(
                        "Invalid {path}: it must be an object of string keys and values, or \"\" to clear it."
                    ),
                ));
            }
            Some(Param::Map(map)) => map.into_iter().collect(),
            // Numeric keys `0..n` were turned into a list; give them back.
            Some(Param::List(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
        };
        if entries.len() > METADATA_MAX_KEYS {
            return Err(ApiError::parameter_invalid(
                codes::METADATA,
                &path,
                format!("Invalid {path}: at most {METADATA_MAX_KEYS} keys are allowed."),
            ));
        }
        let mut changes = BTreeMap::new();
        for (key, value) in entries {
            let key_path = child_path(&path, &key);
            if key.chars().count() > METADATA_KEY_MAX_CHARS {
                return Err(ApiError::parameter_invalid(
                    codes::METADATA,
                    &key_path,
                    format!(
                        "Invalid {path}: keys must be at most {METADATA_KEY_MAX_CHARS} characters long."
                    ),
                ));
            }
            let value = match value {
                Param::Value(v) if v.is_empty() => None,
                Param::Value(v) if v.chars().count() > METADATA_VALUE_MAX_CHARS => {
                    return Err(ApiError::parameter_invalid(
                        codes::METADATA,
                        &key_path,
                        format!(
                            "Invalid {key_path}: values must be at most {METADATA_VALUE_MAX_CHARS} characters long."
                        ),
                    ));
                }
                Param::Value(v) => Some(v),
                other => {
                    return Err(ApiError::parameter_invalid(
                        codes::METADATA,
                        &key_path,
                        format!(
                            "Invalid {key_path}: metadata values must be strings, got {}.",
                            other.kind()
                        ),
                    ));
                }
            };
            changes.insert(key, value);
        }
        Ok(Some(MetadataUpdate::Patch(changes)))
    }

    /// A nested object (`payment_method_data`, `card`, `created[gte]`…). Missing
    /// or `""` gives `None`.
    pub fn nested(&mut self, name: &str) -> Result<Option<ParamReader>, ApiError> {
        let path = self.path(name);
        match self.take(name) {
            None => Ok(None),
            Some(Param::Value(v)) if v.is_empty() => Ok(None),
            Some(Param::Map(map)) => Ok(Some(self.child(map, path))),
            Some(other) => Err(ApiError::parameter_invalid(
                codes::OBJECT,
                &path,
                format!("Invalid {path}: expected an object, got {}.", other.kind()),
            )),
        }
    }

    fn child(&self, map: BTreeMap<String, Param>, path: String) -> ParamReader {
        ParamReader {
            remaining: map,
            prefix: Some(path),
            leftovers: Arc::clone(&self.leftovers),
        }
    }

    /// Refuses every parameter not consumed (here, or in nested readers dropped
    /// unfinished): 400 `parameter_unknown` naming the first path in sort order.
    pub fn finish(mut self) -> Result<(), ApiError> {
        let mut paths: Vec<String> = self.remaining.keys().map(|k| self.path(k)).collect();
        self.remaining.clear();
        if self.prefix.is_none() {
            let sink = self.leftovers.lock().unwrap_or_else(|p| p.into_inner());
            paths.extend(sink.iter().cloned());
        }
        paths.sort();
        match paths.first() {
            None => Ok(()),
            Some(first) => Err(ApiError::parameter_unknown(first)),
        }
    }
}

fn not_a_list(path: &str, map: &BTreeMap<String, Param>) -> ApiError {
    let numeric = map.keys().all(|k| index_of(k).is_some());
    let message = if numeric {
        format!(
            "Invalid {path}: array indices must be dense and start at 0 ({path}[0], {path}[1], …)."
        )
    } else {
        format!("Invalid {path}: expected an array, got an object.")
    };
    ApiError::parameter_invalid(codes::ARRAY, path, message)
}
