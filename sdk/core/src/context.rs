//! The evaluation context: a targeting key plus typed attributes, as in OpenFeature.

use std::collections::HashMap;
use std::fmt;

/// A map of attribute names to values, hashed with foldhash: attribute lookups are on
/// the evaluation hot path.
pub type Map = HashMap<String, Value, foldhash::fast::RandomState>;

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
            Self::Object(o) => {
                // Sorted keys: a HashMap has no order, and output should be stable.
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), o[k].to_json()))
                        .collect(),
                )
            }
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
        let mut out = match Value::Object(self.attributes.clone()).to_json() {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        if let Some(k) = &self.targeting_key {
            out.insert("targetingKey".into(), serde_json::Value::String(k.clone()));
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
        let j = json!({"a": [1, 2.5, "x", null, true], "b": {"c": "d"}, "targetingKey": "k"});
        let ctx = EvaluationContext::from_json(&j).unwrap();
        assert_eq!(ctx.to_json(), j);
    }
}
