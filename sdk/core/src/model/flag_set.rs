//! The whole document, and how it is written back.

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::flag::Flag;
use crate::problem::Problem;

/// A flagd flag-set document: flags, shared `$evaluators` and flag-set metadata.
///
/// Reading and writing back keeps the meaning, the order of keys and unknown top-level
/// keys such as `$schema`.
///
/// ```
/// use flagd_core::{FlagSet, Strictness};
/// let doc = r#"{"$schema": "https://flagd.dev/schema/v0/flags.json",
///   "flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
///   "defaultVariant": "off"}}}"#;
/// let set = FlagSet::parse_str(doc, Strictness::Strict).unwrap();
/// assert_eq!(set.flags["new-checkout"].default_variant.as_deref(), Some("off"));
/// let back = set.to_json();
/// assert_eq!(back, serde_json::from_str::<serde_json::Value>(doc).unwrap());
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FlagSet {
    /// Flag key to flag, in document order.
    pub flags: IndexMap<String, Flag>,
    /// Shared targeting rules, referenced from targeting as `{"$ref": "<name>"}`.
    pub evaluators: Map<String, Value>,
    /// Flag-set metadata (string, number or boolean values).
    pub metadata: Map<String, Value>,
    /// `flags` was written as an array of flags with `key`.
    pub(super) flags_as_array: bool,
    /// Top-level keys flagd does not know, such as `$schema`.
    pub(super) extra: Map<String, Value>,
    /// Top-level key names in document order.
    pub(super) order: Vec<String>,
    /// Flags an isolating load could not read, with what is wrong with each; they
    /// evaluate with reason `ERROR`.
    pub(super) broken: IndexMap<String, String>,
    /// Problems an isolating load set aside (broken flags, unusable evaluators).
    pub(super) problems: Vec<Problem>,
    /// `$evaluators` or `metadata` written as an explicit `null`, kept for the round trip.
    pub(super) nulls: Vec<String>,
}

impl FlagSet {
    /// An empty flag set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Flags that an isolating load ([`FlagSet::parse_isolated`]) could not read, with
    /// what is wrong with each.
    pub fn broken(&self) -> &IndexMap<String, String> {
        &self.broken
    }

    /// What an isolating load set aside, with JSON paths.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The document as JSON, keys in their original order.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        let flags = || {
            if self.flags_as_array {
                Value::Array(
                    self.flags
                        .iter()
                        .map(|(k, f)| f.to_json_with_key(Some(k)))
                        .collect(),
                )
            } else {
                Value::Object(
                    self.flags
                        .iter()
                        .map(|(k, f)| (k.clone(), f.to_json()))
                        .collect(),
                )
            }
        };
        let put = |out: &mut Map<String, Value>, name: &str| {
            if out.contains_key(name) {
                return;
            }
            let v = match name {
                "flags" => Some(flags()),
                "$evaluators" if self.evaluators.is_empty() && self.was_null(name) => {
                    Some(Value::Null)
                }
                "metadata" if self.metadata.is_empty() && self.was_null(name) => Some(Value::Null),
                "$evaluators"
                    if !self.evaluators.is_empty() || self.order.iter().any(|k| k == name) =>
                {
                    Some(Value::Object(self.evaluators.clone()))
                }
                "metadata" if !self.metadata.is_empty() || self.order.iter().any(|k| k == name) => {
                    Some(Value::Object(self.metadata.clone()))
                }
                "$evaluators" | "metadata" => None,
                other => self.extra.get(other).cloned(),
            };
            if let Some(v) = v {
                out.insert(name.to_owned(), v);
            }
        };
        for name in &self.order {
            put(&mut out, name);
        }
        for name in ["flags", "$evaluators", "metadata"] {
            put(&mut out, name);
        }
        for name in self.extra.keys() {
            put(&mut out, name);
        }
        Value::Object(out)
    }
}

impl FlagSet {
    fn was_null(&self, key: &str) -> bool {
        self.nulls.iter().any(|k| k == key)
    }
}

impl serde::Serialize for FlagSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}
