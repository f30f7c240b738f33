//! Contexts read straight from JSON text, without a `serde_json::Value` in between: the
//! form a remote evaluation request carries, decoded once per request.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::context::{EvaluationContext, Map, Value};

/// The same values as [`Value::from_json`] gives for the same JSON: integers beyond
/// `i64` become floats; of repeated object keys the last wins.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        #[allow(clippy::cast_precision_loss)]
        Ok(i64::try_from(u).map_or(Value::Float(u as f64), Value::Int))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// A context from a JSON object, as [`EvaluationContext::from_json`] reads one. Any other
/// JSON is refused (see [`LenientContext`] for the form that takes it as empty).
impl<'de> Deserialize<'de> for EvaluationContext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ContextVisitor { lenient: false })
            .map(|c| c.unwrap_or_default())
    }
}

/// A context read leniently, as flagd reads a request's `context`: an object is the
/// context, anything else (a string, an array, `null`) is the empty context.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LenientContext(pub EvaluationContext);

impl<'de> Deserialize<'de> for LenientContext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContextVisitor { lenient: true })
            .map(|c| Self(c.unwrap_or_default()))
    }
}

struct ContextVisitor {
    lenient: bool,
}

impl ContextVisitor {
    fn other<E: de::Error>(
        &self,
        found: de::Unexpected<'_>,
    ) -> Result<Option<EvaluationContext>, E> {
        if self.lenient {
            Ok(None)
        } else {
            Err(E::invalid_type(found, self))
        }
    }
}

impl<'de> Visitor<'de> for ContextVisitor {
    type Value = Option<EvaluationContext>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an evaluation context (a JSON object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut ctx = EvaluationContext::default();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            ctx.set(k, v);
        }
        Ok(Some(ctx))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if !self.lenient {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.other(de::Unexpected::Unit)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.other(de::Unexpected::Option)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        self.other(de::Unexpected::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Self::Value, E> {
        self.other(de::Unexpected::Signed(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Self::Value, E> {
        self.other(de::Unexpected::Unsigned(u))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Self::Value, E> {
        self.other(de::Unexpected::Float(f))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        self.other(de::Unexpected::Str(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read from the text directly, a context is what the `serde_json::Value` route makes.
    #[test]
    fn reading_text_matches_reading_a_json_value() {
        let texts = [
            r#"{"targetingKey": "u-1", "country": "NO", "plan": "pro", "age": 42}"#,
            r#"{"n": 18446744073709551615, "f": 1.5, "neg": -3, "z": null, "b": true}"#,
            r#"{"nested": {"a": [1, "x", {"b": null}], "a": 2}, "list": []}"#,
            r#"{"targetingKey": "a", "targetingKey": 5}"#,
            r#"{"targetingKey": 5, "targetingKey": "b"}"#,
            r#"{"k": "é\u00e9\n", "": 0}"#,
            "{}",
        ];
        for text in texts {
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            let direct: EvaluationContext = serde_json::from_str(text).unwrap();
            let via = EvaluationContext::from_json(&json).unwrap();
            assert_eq!(direct.targeting_key(), via.targeting_key(), "{text}");
            assert_eq!(direct.to_json(), via.to_json(), "{text}");
            let lenient: LenientContext = serde_json::from_str(text).unwrap();
            assert_eq!(lenient.0.to_json(), via.to_json(), "{text}");
        }
    }

    #[test]
    fn a_context_that_is_not_an_object_is_refused_or_empty_when_lenient() {
        for text in [
            "[1, {\"a\": 2}]",
            "\"user\"",
            "null",
            "3",
            "-3",
            "2.5",
            "true",
        ] {
            assert!(
                serde_json::from_str::<EvaluationContext>(text).is_err(),
                "{text}"
            );
            let lenient: LenientContext = serde_json::from_str(text).unwrap();
            assert_eq!(lenient, LenientContext::default(), "{text}");
        }
        // Malformed JSON is an error either way.
        assert!(serde_json::from_str::<LenientContext>("{\"a\": ").is_err());
    }
}
