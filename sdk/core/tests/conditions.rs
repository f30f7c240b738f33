//! A condition on a top-level attribute is decided in the operator that holds it
//! (`and`, `or`, `!`, `if`) without a call into the evaluator; it must answer exactly as
//! the general evaluator does, which a dotted path to the same value still takes.

use flagd_core::{EvaluationContext, Snapshot};
use serde_json::{Value, json};

fn conditions(var: &str) -> Vec<Value> {
    let v = json!({ "var": var });
    let large: Vec<String> = (0..40)
        .map(|i| format!("plan-{i}"))
        .chain(["pro".into()])
        .collect();
    vec![
        json!({"==": [v, "pro"]}),
        json!({"==": ["1", v]}),
        json!({"in": [v, ["pro", "team", "1"]]}),
        json!({"in": [v, large]}),
        json!({"!": {"==": [v, "pro"]}}),
        json!({"and": [{"==": [v, "pro"]}, {"in": [v, ["pro", "x"]]}]}),
        json!({"or": [{"==": [v, "free"]}, {"in": [v, ["pro", "true"]]}]}),
        json!({"if": [{"==": [v, "pro"]}, true, {"in": [v, ["", "free"]]}]}),
    ]
}

fn snapshot(var: &str) -> Snapshot {
    let mut flags = serde_json::Map::new();
    for (i, cond) in conditions(var).into_iter().enumerate() {
        flags.insert(
            format!("c{i}"),
            json!({"state": "ENABLED", "variants": {"on": "on", "off": "off"},
                   "defaultVariant": "off", "targeting": {"if": [cond, "on", "off"]}}),
        );
    }
    Snapshot::from_json_str(&json!({ "flags": flags }).to_string(), 1).unwrap()
}

#[test]
fn a_condition_decided_in_its_caller_matches_the_evaluator() {
    let (top, nested) = (snapshot("plan"), snapshot("x.plan"));
    let values = [
        json!("pro"),
        json!("free"),
        json!(""),
        json!("1"),
        json!("true"),
        json!("plan-7"),
        json!(1),
        json!(1.0),
        json!(true),
        json!(false),
        json!(null),
        json!(["pro"]),
        json!({"a": 1}),
    ];
    let mut contexts: Vec<EvaluationContext> = values
        .iter()
        .map(|v| {
            let ctx = json!({"targetingKey": "u", "plan": v, "x": {"plan": v}});
            EvaluationContext::from_json(&ctx).unwrap()
        })
        .collect();
    contexts.push(EvaluationContext::from_json(&json!({"targetingKey": "u", "x": {}})).unwrap());
    let mut on = 0;
    for i in 0..conditions("plan").len() {
        let key = format!("c{i}");
        for (n, ctx) in contexts.iter().enumerate() {
            let (a, b) = (top.evaluate(&key, ctx), nested.evaluate(&key, ctx));
            let what = format!("{key} context {n}");
            assert_eq!(
                (a.value, a.variant, a.reason, a.error_code),
                (b.value, b.variant, b.reason, b.error_code),
                "{what}"
            );
            on += usize::from(a.variant == Some("on"));
        }
    }
    // Both paths share the loose equality of a non-string attribute, so it is also
    // checked outright: `"1" == 1` and `"1" == 1.0` hold, as `"1" == "1"` does.
    for n in [3, 6, 7] {
        let d = top.evaluate("c1", &contexts[n]);
        assert_eq!(d.variant, Some("on"), "c1 context {n}");
    }
    let missing = contexts.last().unwrap();
    assert_eq!(top.evaluate("c0", missing).variant, Some("off"));
    // Both answers occur, so the comparison covers matches and misses alike.
    assert!(on > 10 && on < 80, "{on} of 112 matched");
}
