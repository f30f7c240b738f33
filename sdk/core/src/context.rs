//! The evaluation context: a targeting key plus typed attributes, as in OpenFeature.

use std::collections::HashMap;
use std::fmt;

/// A short fingerprint of a name: its length, first and last eight bytes. Two names
/// with equal tags and at most sixteen bytes are equal, so the usual attribute names
/// and flag keys compare without reading their bytes and without a `memcmp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tag {
    prefix: u64,
    /// The last eight bytes of a name longer than eight bytes.
    suffix: u64,
    len: usize,
}

impl Tag {
    #[inline]
    pub(crate) fn of(s: &str) -> Self {
        let b = s.as_bytes();
        let suffix = if b.len() > 8 {
            prefix(&b[b.len() - 8..])
        } else {
            0
        };
        Self {
            prefix: prefix(b),
            suffix,
            len: b.len(),
        }
    }

    /// Whether `a` (with this tag) equals `b` (with tag `other`).
    #[inline(always)]
    pub(crate) fn same(self, a: &str, other: Self, b: &str) -> bool {
        if self != other {
            return false;
        }
        // Up to sixteen bytes, the first and last eight cover the whole name.
        self.len <= 16 || a.as_bytes()[8..] == b.as_bytes()[8..]
    }
}

/// The first eight bytes, zero-padded, little-endian; built from at most two loads
/// so that short names need no `memcpy`.
#[inline]
fn prefix(b: &[u8]) -> u64 {
    let n = b.len();
    let u32_at = |i: usize| u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    if n >= 8 {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    } else if n >= 4 {
        // Overlapping loads: the shared bytes land on the same positions.
        u32_at(0) | (u32_at(n - 4) << ((n - 4) * 8))
    } else if n > 0 {
        u64::from(b[0])
            | (u64::from(b[n / 2]) << (n / 2 * 8))
            | (u64::from(b[n - 1]) << ((n - 1) * 8))
    } else {
        0
    }
}

/// Above this many entries a map also keeps a hash index; below, a scan over tags is
/// faster than hashing.
const INDEX_ABOVE: usize = 16;

/// Attribute names to values, in insertion order. Contexts are small, so lookups scan
/// precomputed name tags; large maps add a hash index.
#[derive(Clone, Default)]
pub struct Map {
    entries: Vec<(Tag, String, Value)>,
    index: Option<HashMap<String, usize, foldhash::fast::RandomState>>,
}

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `name`.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.get_tagged(Tag::of(name), name)
    }

    // Inlined into each `var` of a rule, the scan included: over a context's few
    // attributes it is shorter than the call it would take; a large map's index is
    // out of line.
    #[inline(always)]
    pub(crate) fn get_tagged(&self, tag: Tag, name: &str) -> Option<&Value> {
        if self.index.is_some() {
            return self.get_indexed(name);
        }
        for (t, n, v) in &self.entries {
            if tag.same(name, *t, n) {
                return Some(v);
            }
        }
        None
    }

    #[inline(never)]
    fn get_indexed(&self, name: &str) -> Option<&Value> {
        let i = *self.index.as_ref()?.get(name)?;
        self.entries.get(i).map(|(_, _, v)| v)
    }

    fn position(&self, tag: Tag, name: &str) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(name).copied(),
            None => self
                .entries
                .iter()
                .position(|(t, n, _)| tag.same(name, *t, n)),
        }
    }

    fn reindex(&mut self) {
        self.index = (self.entries.len() > INDEX_ABOVE).then(|| {
            self.entries
                .iter()
                .enumerate()
                .map(|(i, (_, n, _))| (n.clone(), i))
                .collect()
        });
    }

    /// Sets `name`, returning the value it replaces.
    pub fn insert(&mut self, name: String, value: Value) -> Option<Value> {
        let tag = Tag::of(&name);
        if let Some(i) = self.position(tag, &name) {
            return Some(std::mem::replace(&mut self.entries[i].2, value));
        }
        self.entries.push((tag, name, value));
        match &mut self.index {
            Some(ix) => {
                let i = self.entries.len() - 1;
                ix.insert(self.entries[i].1.clone(), i);
            }
            None => self.reindex(),
        }
        None
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let i = self.position(Tag::of(name), name)?;
        let (_, _, v) = self.entries.remove(i);
        self.reindex();
        Some(v)
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(_, n, v)| (n.as_str(), v))
    }

    /// Names in insertion order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(_, n, _)| n.as_str())
    }
}

impl PartialEq for Map {
    /// Equal when the same names have equal values, in any order.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Map {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Self::new();
        for (k, v) in iter {
            m.insert(k.into(), v.into());
        }
        m
    }
}

/// A typed context value. Integers and floats stay distinct so that they round-trip
/// through JSON unchanged; JsonLogic compares them as numbers.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    /// JSON `null`.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object.
    Object(Map),
}

impl Value {
    /// Converts from JSON. Integers beyond `i64` become floats, as in JavaScript.
    pub fn from_json(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Self::Null,
            serde_json::Value::Bool(b) => Self::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Self::Int(i),
                None => Self::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Self::String(s.clone()),
            serde_json::Value::Array(a) => Self::Array(a.iter().map(Self::from_json).collect()),
            serde_json::Value::Object(o) => Self::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Self::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts to JSON. Non-finite floats, which JSON cannot hold, become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Null => serde_json::Value::Null,
            Self::Bool(b) => serde_json::Value::Bool(*b),
            Self::Int(i) => serde_json::Value::from(*i),
            Self::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
            }
            Self::String(s) => serde_json::Value::String(s.clone()),
            Self::Array(a) => serde_json::Value::Array(a.iter().map(Self::to_json).collect()),
            Self::Object(o) => serde_json::Value::Object(
                o.iter().map(|(k, v)| (k.to_owned(), v.to_json())).collect(),
            ),
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::String(v)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Self::Array(v.into_iter().map(Into::into).collect())
    }
}

/// The context a flag is evaluated for: who is asking (the targeting key) and what is
/// known about them (attributes such as `country`, `plan` or a nested `user.name`).
///
/// ```
/// use flagd_core::EvaluationContext;
/// let ctx = EvaluationContext::new("user-42").with("country", "NO").with("plan", "pro");
/// assert_eq!(ctx.targeting_key(), Some("user-42"));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvaluationContext {
    targeting_key: Option<String>,
    attributes: Map,
}

/// The context JSON is not usable: it is not an object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the evaluation context must be a JSON object, found {found}")]
pub struct InvalidContext {
    /// The JSON type that was found instead.
    pub found: &'static str,
}

impl EvaluationContext {
    /// A context with a targeting key and no attributes.
    pub fn new(targeting_key: impl Into<String>) -> Self {
        Self {
            targeting_key: Some(targeting_key.into()),
            attributes: Map::default(),
        }
    }

    /// A context with neither targeting key nor attributes.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds or replaces an attribute. The name `targetingKey` sets the targeting key when
    /// the value is a string, as it does in a JSON context.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.set(name, value);
        self
    }

    /// Adds or replaces an attribute (see [`EvaluationContext::with`]).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        let name = name.into();
        let value = value.into();
        if name == "targetingKey" {
            if let Value::String(s) = value {
                self.targeting_key = Some(s);
                self.attributes.remove("targetingKey");
                return;
            }
            self.targeting_key = None;
        }
        self.attributes.insert(name, value);
    }

    /// Builds a context from a JSON object, the form OFREP and `flagctl eval` use. The
    /// property `targetingKey`, if it is a string, is the targeting key; a non-string
    /// `targetingKey` stays an ordinary attribute (flagd then treats the key as missing).
    pub fn from_json(json: &serde_json::Value) -> Result<Self, InvalidContext> {
        let serde_json::Value::Object(map) = json else {
            return Err(InvalidContext {
                found: json_type(json),
            });
        };
        let mut ctx = Self::default();
        for (k, v) in map {
            ctx.set(k.clone(), Value::from_json(v));
        }
        Ok(ctx)
    }

    /// The context as a JSON object, with the targeting key as `targetingKey`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if let Some(k) = &self.targeting_key {
            out.insert("targetingKey".into(), serde_json::Value::String(k.clone()));
        }
        for (k, v) in self.attributes.iter() {
            out.insert(k.to_owned(), v.to_json());
        }
        serde_json::Value::Object(out)
    }

    /// The targeting key, if set.
    pub fn targeting_key(&self) -> Option<&str> {
        self.targeting_key.as_deref()
    }

    /// One attribute.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.attributes.get(name)
    }

    #[inline(always)]
    pub(crate) fn get_tagged(&self, tag: Tag, name: &str) -> Option<&Value> {
        self.attributes.get_tagged(tag, name)
    }

    /// All attributes (the targeting key is not among them).
    pub fn attributes(&self) -> &Map {
        &self.attributes
    }
}

impl fmt::Display for EvaluationContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn map_small_and_large() {
        for n in [3usize, 40] {
            let mut m: Map = (0..n)
                .map(|i| (format!("attribute-name-{i}"), Value::Int(i as i64)))
                .collect();
            m.insert("a".into(), Value::Bool(true));
            assert_eq!(m.len(), n + 1);
            for i in 0..n {
                assert_eq!(
                    m.get(&format!("attribute-name-{i}")),
                    Some(&Value::Int(i as i64))
                );
            }
            assert_eq!(m.get("a"), Some(&Value::Bool(true)));
            assert_eq!(m.get("attribute-name-x"), None);
            assert_eq!(m.insert("a".into(), Value::Null), Some(Value::Bool(true)));
            assert_eq!(m.remove("attribute-name-1"), Some(Value::Int(1)));
            assert_eq!(m.get("attribute-name-1"), None);
            assert_eq!(m.get("attribute-name-2"), Some(&Value::Int(2)));
            assert_eq!(m.len(), n);
        }
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdef",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
        ] {
            let mut buf = [0u8; 8];
            let n = s.len().min(8);
            buf[..n].copy_from_slice(&s.as_bytes()[..n]);
            assert_eq!(prefix(s.as_bytes()), u64::from_le_bytes(buf), "{s:?}");
        }
        assert!(Tag::of("abcdefgh").same("abcdefgh", Tag::of("abcdefgh"), "abcdefgh"));
        assert!(!Tag::of("abcdefghX").same("abcdefghX", Tag::of("abcdefghY"), "abcdefghY"));
        assert!(!Tag::of("ab").same("ab", Tag::of("ab\0"), "ab\0"));
    }

    #[test]
    fn targeting_key_from_json() {
        let ctx = EvaluationContext::from_json(&json!({"targetingKey": "u1", "a": 1})).unwrap();
        assert_eq!(ctx.targeting_key(), Some("u1"));
        assert_eq!(ctx.get("a"), Some(&Value::Int(1)));
        assert!(ctx.get("targetingKey").is_none());

        let ctx = EvaluationContext::from_json(&json!({"targetingKey": 5})).unwrap();
        assert_eq!(ctx.targeting_key(), None);
        assert_eq!(ctx.get("targetingKey"), Some(&Value::Int(5)));

        assert_eq!(
            EvaluationContext::from_json(&json!([1])),
            Err(InvalidContext { found: "an array" })
        );
    }

    #[test]
    fn json_round_trip() {
        let j = json!({"targetingKey": "k", "a": [1, 2.5, "x", null, true], "b": {"c": "d"}});
        let ctx = EvaluationContext::from_json(&j).unwrap();
        assert_eq!(ctx.to_json(), j);
    }
}
