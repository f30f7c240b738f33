use crate::{FlagSet, Strictness};
use serde_json::json;

fn errors(targeting: serde_json::Value) -> Vec<String> {
    let doc = json!({
        "flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": targeting}},
        "$evaluators": {"beta": {"in": [{"var": "email"}, ["a@x"]]}}
    });
    match FlagSet::parse(&doc, Strictness::Strict) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn good_rules_pass() {
    assert!(errors(json!({})).is_empty());
    assert!(
        errors(json!({"if": [{"$ref": "beta"}, "on", {"fractional": [["on", 25], ["off", 75]]}]}))
            .is_empty()
    );
    assert!(
        errors(json!({"if": [{"sem_ver": [{"var": "v"}, ">=", "1.2.0"]}, "on", "off"]})).is_empty()
    );
    assert!(errors(json!({"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["on"], ["off", 3]]})).is_empty());
}

#[test]
fn every_problem_with_its_path() {
    let errs = errors(json!({"if": [
        {"and": [{"sem_ver": [{"var": "v"}, "===", "v1.0"]}, {"starts_with": ["a"]}, {"invalid": 1}, {"$ref": "nope"}]},
        "onn",
        {"fractional": [["on", 1.5], ["off", -1], "x"]}
    ]}));
    assert_eq!(
        errs,
        vec![
            r#"flags.f.targeting.if[0].and[0].sem_ver[1]: "===" is not a sem_ver operator (=, !=, <, <=, >, >=, ~, ^)"#,
            r#"flags.f.targeting.if[0].and[0].sem_ver[2]: "v1.0" is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0, without a v prefix)"#,
            r#"flags.f.targeting.if[0].and[1].starts_with: "starts_with" takes exactly 2 arguments, found 1"#,
            r#"flags.f.targeting.if[0].and[2]: unknown operator "invalid""#,
            r#"flags.f.targeting.if[0].and[3]: "$ref": "nope" names no evaluator in $evaluators (beta)"#,
            "flags.f.targeting.if[2].fractional[0][1]: a weight must be a whole number from 0 to 2147483647, found 1.5",
            "flags.f.targeting.if[2].fractional[1][1]: a weight must be a whole number from 0 to 2147483647, found -1",
            "flags.f.targeting.if[2].fractional[2]: a bucket must be an array [variant, weight], found a string",
            r#"flags.f.targeting.if[1]: targeting can return "onn", which is not a variant (on, off)"#,
        ]
    );
}

#[test]
fn flagd_properties_and_multi_key_objects() {
    assert_eq!(
        errors(json!({"==": [{"var": "$flagd.key"}, {"a": 1, "b": 2}]})),
        vec![
            r#"flags.f.targeting["=="][0].var: "$flagd.key" is not a flagd property ($flagd.flagKey, $flagd.timestamp)"#,
            r#"flags.f.targeting["=="][1]: a rule must have exactly one operator, found 2 keys (a, b)"#,
        ]
    );
}
