//! JSON and protobuf's `Struct`, both ways.

use flagd_core::EvaluationContext;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde_json::{Map, Value as Json};

/// A JSON value as protobuf's `Value` (numbers become doubles, as protobuf has no other).
pub(super) fn value(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(object(o)),
    };
    Value { kind: Some(kind) }
}

/// A JSON object as a `Struct`.
pub(super) fn object(o: &Map<String, Json>) -> Struct {
    Struct {
        fields: o.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
    }
}

/// A flag's metadata (or the set's) with `flagSetVersion`, as remote evaluation (OFREP)
/// answers it.
pub(super) fn metadata(entries: &Map<String, Json>, version: u64) -> Struct {
    let mut s = object(entries);
    s.fields.insert(
        "flagSetVersion".to_owned(),
        Value {
            kind: Some(Kind::NumberValue(version as f64)),
        },
    );
    s
}

/// An evaluation context from a request's `Struct`. A whole number arrives as a double
/// (protobuf has no other): it is read as the integer it is, as the same context sent
/// as JSON to OFREP is, so that both evaluate alike (`cat`, `fractional` seeds).
pub(super) fn context(s: Option<&Struct>) -> EvaluationContext {
    let mut ctx = EvaluationContext::empty();
    for (k, v) in s.map(|s| &s.fields).into_iter().flatten() {
        ctx.set(k.clone(), core(v));
    }
    ctx
}

fn core(v: &Value) -> flagd_core::Value {
    use flagd_core::Value as V;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => V::Null,
        Some(Kind::BoolValue(b)) => V::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            // Exactly representable whole numbers only (|n| < 2^53).
            if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
                V::Int(*n as i64)
            } else {
                V::Float(*n)
            }
        }
        Some(Kind::StringValue(s)) => V::String(s.clone()),
        Some(Kind::ListValue(l)) => V::Array(l.values.iter().map(core).collect()),
        Some(Kind::StructValue(s)) => {
            V::Object(s.fields.iter().map(|(k, v)| (k.clone(), core(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_context_reads_whole_numbers_as_integers_as_json_does() {
        let s = object(
            json!({"targetingKey": "u-1", "age": 42, "ratio": 0.5, "tags": ["a"], "o": {"n": null}})
                .as_object()
                .unwrap(),
        );
        let ctx = context(Some(&s));
        let from_json = EvaluationContext::from_json(
            &json!({"targetingKey": "u-1", "age": 42, "ratio": 0.5, "tags": ["a"], "o": {"n": null}}),
        )
        .unwrap();
        assert_eq!(ctx, from_json);
        assert_eq!(ctx.targeting_key(), Some("u-1"));
    }
}
