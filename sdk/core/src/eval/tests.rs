use serde_json::{Value as Json, json};

use super::{ErrorCode, Reason, Snapshot, ValueType};
use crate::context::EvaluationContext;
use crate::model::{FlagSet, Strictness};

fn snap(doc: Json) -> Snapshot {
    let set = FlagSet::parse(&doc, Strictness::Lenient).unwrap();
    Snapshot::compile(&set, 3)
}

#[test]
fn outcomes() {
    let s = snap(json!({
        "metadata": {"team": "web", "tier": 1},
        "flags": {
            "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"tier": 2}},
            "nodefault": {"state": "ENABLED", "variants": {"on": true}},
            "off": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
            "rule": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "b",
                     "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "a", {"if": [{"var": "x"}, "zzz", null]}]}},
            "bad": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": {"nope": []}},
            "num": {"state": "ENABLED", "variants": {"1": 10, "2.5": 20}, "targeting": {"var": "n"}}
        }
    }));
    let ctx = EvaluationContext::new("u");
    let d = s.evaluate("static", &ctx);
    assert_eq!(
        (d.value, d.variant, d.reason, d.version),
        (Some(&json!(true)), Some("on"), Reason::Static, 3)
    );
    assert_eq!(
        d.flag_metadata,
        json!({"team": "web", "tier": 2}).as_object().unwrap()
    );

    let d = s.evaluate("nodefault", &ctx);
    assert_eq!((d.value, d.reason), (None, Reason::Default));
    assert_eq!(s.evaluate("off", &ctx).reason, Reason::Disabled);
    assert!(!s.enabled("off", &ctx));

    let d = s.evaluate("missing", &ctx);
    assert_eq!(
        (d.reason, d.error_code),
        (Reason::Error, Some(ErrorCode::FlagNotFound))
    );

    let pro = EvaluationContext::new("u").with("plan", "pro");
    assert_eq!(s.evaluate("rule", &pro).variant, Some("a"));
    assert_eq!(s.evaluate("rule", &pro).reason, Reason::TargetingMatch);
    let d = s.evaluate("rule", &ctx);
    assert_eq!((d.variant, d.reason), (Some("b"), Reason::Default));
    let d = s.evaluate("rule", &ctx.clone().with("x", true));
    assert_eq!(
        (d.reason, d.error_code),
        (Reason::Error, Some(ErrorCode::General))
    );
    assert_eq!(
        d.error_message.as_deref(),
        Some("targeting returned \"zzz\", which is not a variant of this flag")
    );

    let d = s.evaluate("bad", &ctx);
    assert_eq!(
        (d.reason, d.error_code, d.value),
        (Reason::Error, Some(ErrorCode::ParseError), None)
    );

    assert_eq!(s.int_value("num", &ctx.clone().with("n", 1), 0), 10);
    assert_eq!(s.int_value("num", &ctx.clone().with("n", 2.5), 0), 20);
}

#[test]
fn typed_getters() {
    let s = snap(json!({"flags": {
        "b": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
        "s": {"state": "ENABLED", "variants": {"x": "hello"}, "defaultVariant": "x"},
        "i": {"state": "ENABLED", "variants": {"x": 10.0}, "defaultVariant": "x"},
        "f": {"state": "ENABLED", "variants": {"x": 0.5}, "defaultVariant": "x"},
        "o": {"state": "ENABLED", "variants": {"x": {"a": 1}}, "defaultVariant": "x"}
    }}));
    let c = EvaluationContext::empty();
    assert!(s.enabled("b", &c));
    assert!(!s.enabled("s", &c));
    assert!(s.bool_value("b", &c, false));
    assert_eq!(s.string_value("s", &c, "d"), "hello");
    assert_eq!(s.string_value("b", &c, "d"), "d");
    assert_eq!(s.int_value("i", &c, 0), 10);
    assert_eq!(s.int_value("f", &c, 7), 7);
    assert_eq!(s.float_value("f", &c, 0.0), 0.5);
    assert_eq!(s.json_value("o", &c, json!(null)), json!({"a": 1}));
    let d = s.evaluate_as("s", &c, ValueType::Integer);
    assert_eq!(
        (d.reason, d.error_code),
        (Reason::Error, Some(ErrorCode::TypeMismatch))
    );
    assert_eq!(
        s.evaluate_as("i", &c, ValueType::Integer).reason,
        Reason::Static
    );
    assert_eq!(
        s.evaluate_as("f", &c, ValueType::Integer).error_code,
        Some(ErrorCode::TypeMismatch)
    );
}
