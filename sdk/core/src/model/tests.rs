use serde_json::{Value, json};

use super::{FlagSet, Strictness};

fn strict_errors(v: Value) -> Vec<String> {
    match FlagSet::parse(&v, Strictness::Strict) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn default_variant_must_exist() {
    let doc = json!({"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "onn"}}});
    assert_eq!(
        strict_errors(doc.clone()),
        vec![r#"flags.new-checkout.defaultVariant: "onn" is not a variant (on, off)"#]
    );
    assert!(
        FlagSet::parse(&doc, Strictness::Lenient).is_err(),
        "flagd refuses this too"
    );
}

#[test]
fn reports_every_problem() {
    let doc = json!({
        "flags": {
            "a": {"state": "ON", "variants": {"x": 1, "y": "two"}},
            "b": {"variants": {}},
            "c": {"state": "ENABLED", "variants": {"n": null}, "colour": 1}
        },
        "metadata": {"owner": {"team": "x"}}
    });
    let errs = strict_errors(doc);
    assert_eq!(
        errs,
        vec![
            "metadata.owner: metadata values must be strings, numbers or booleans, found an object",
            r#"flags.a.state: "ON" is not a state (ENABLED, DISABLED)"#,
            r#"flags.a.variants.y: is a string but variant "x" is a number: all variants of a flag must have one type"#,
            "flags.b.state: is required (ENABLED or DISABLED)",
            "flags.b.variants: a flag needs at least one variant",
            "flags.c.variants.n: a variant must be a boolean, string, number or object, found null",
            "flags.c.colour: is not a flag property (state, variants, defaultVariant, targeting, metadata)",
        ]
    );
}

#[test]
fn lenient_accepts_schema_invalid_flags() {
    let doc = json!({"flags": {"a": {"state": "ON", "variants": {"x": 1, "y": "two"}, "targeting": {"invalid": [1]}}}});
    assert!(FlagSet::parse(&doc, Strictness::Lenient).is_ok());
    assert!(!strict_errors(doc).is_empty());
}

#[test]
fn array_form_round_trips() {
    let doc = json!({"flags": [{"key": "a", "state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}], "$schema": "x"});
    let set = FlagSet::parse(&doc, Strictness::Strict).unwrap();
    assert!(set.flags.contains_key("a"));
    assert_eq!(set.to_json(), doc);
    let text = serde_json::to_string(&set.to_json()).unwrap();
    assert_eq!(text, serde_json::to_string(&doc).unwrap());
}

#[test]
fn round_trip_keeps_order_null_default_and_unknown_keys() {
    let text = r#"{"metadata":{"b":1,"a":2},"$schema":"s","flags":{"z":{"variants":{"off":false,"on":true},"state":"DISABLED","defaultVariant":null,"targeting":{}},"a":{"state":"ENABLED","variants":{"x":{"k":[1,2.5]}}}},"$evaluators":{"e":{"==":[1,1]}},"x-owner":"team"}"#;
    let set = FlagSet::parse_str(text, Strictness::Lenient).unwrap();
    assert_eq!(serde_json::to_string(&set).unwrap(), text);
}

#[test]
fn invalid_json_names_the_position() {
    let e = FlagSet::parse_str("{\"flags\": {", Strictness::Lenient).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid JSON at line 1 column 11"),
        "{e}"
    );
}
