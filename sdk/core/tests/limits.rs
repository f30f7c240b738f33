//! Anything strict validation accepts travels: generated documents up to the limits
//! (nesting depth, key length, compiled size with shared `$ref`s) are put in snapshot
//! and delta frames, decoded as the SDK decodes them (and by a default JSON decoder, as
//! flagctl and other clients do), loaded, and evaluate exactly as the server's compiled
//! snapshot does. Documents past a limit are refused with a path. Flag count and
//! document size, too large for many cases, are tested in `sdk/tests/rollback_path.rs`
//! and `flagd/tests/api/limits.rs`.

use flagd_core::limits::{MAX_COMPILED_SIZE, MAX_DEPTH, MAX_FLAG_BYTES, MAX_KEY_BYTES};
use flagd_core::wire::{self, Change, ItemKind, ServerMsg};
use flagd_core::{EvaluationContext, FlagSet, Snapshot, Strictness};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A key: usually short, sometimes at or just past the byte limit, with spaces,
/// slashes, unicode, and now and then a character the syntax refuses.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z][a-z0-9-]{0,12}",
        1 => "[a-zA-Z0-9 /?#%ü✓.-]{1,24}",
        1 => (MAX_KEY_BYTES - 2..=MAX_KEY_BYTES + 1).prop_map(|n| "k".repeat(n)),
        1 => prop_oneof![Just(".".to_owned()), Just("..".to_owned()), Just("a\nb".to_owned()), Just("nul\u{0}".to_owned())],
    ]
}

/// A condition nested `depth` levels (operators) deep.
fn chain(depth: usize, leaf: Value) -> Value {
    let mut v = leaf;
    for i in 0..depth {
        v = if i % 3 == 2 {
            json!({"and": [v, true]})
        } else {
            json!({ "!": v })
        };
    }
    v
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"var": "x"})),
        Just(json!({"==": [{"var": "country"}, "NO"]})),
        Just(json!({"in": [{"var": "targetingKey"}, ["u1", "u2", "u3"]]})),
        Just(json!({"starts_with": [{"var": "email"}, "a"]})),
        Just(json!({"sem_ver": [{"var": "v"}, ">=", "1.2.0"]})),
        Just(json!({"$ref": "shared"})),
        Just(json!({"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]})),
    ]
}

/// Targeting: a condition of some depth (now and then right at the limit) choosing
/// between the variants, or a `fractional` split, or many references to the shared
/// evaluator (now and then past the compiled-size budget).
fn targeting() -> impl Strategy<Value = Value> {
    let depth = prop_oneof![
        8 => 0usize..12,
        1 => (MAX_DEPTH - 8)..=(MAX_DEPTH - 2),
    ];
    prop_oneof![
        4 => (depth, leaf()).prop_map(|(d, l)| json!({"if": [chain(d, l), "on", "off"]})),
        1 => (0u64..100).prop_map(|p| json!({"fractional": [["on", p], ["off", 100 - p]]})),
        1 => (0u64..100).prop_map(|p| json!({"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["on", p], ["off", 100 - p]]})),
        1 => (1usize..3_000).prop_map(|n| json!({"if": [{"or": vec![json!({"$ref": "shared"}); n]}, "on", "off"]})),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    let flags = proptest::collection::vec((key(), targeting(), any::<bool>()), 1..6);
    // The shared evaluator: small, or large enough that a few hundred references pass
    // the compiled-size budget.
    let shared = prop_oneof![
        3 => Just(json!({"==": [{"var": "plan"}, "pro"]})),
        1 => (100usize..200).prop_map(|n| json!({"or": (0..n).map(|i| json!({"==": [{"var": "x"}, format!("v{i}")]})).collect::<Vec<_>>()})),
    ];
    (flags, shared).prop_map(|(flags, shared)| {
        let mut m = serde_json::Map::new();
        for (k, t, disabled) in flags {
            m.insert(
                k,
                json!({"state": if disabled { "DISABLED" } else { "ENABLED" }, "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": t}),
            );
        }
        json!({"flags": m, "$evaluators": {"shared": shared}})
    })
}

fn contexts() -> Vec<EvaluationContext> {
    [
        json!({}),
        json!({"targetingKey": "u1", "x": true, "country": "NO", "email": "a@x", "v": "1.3.0", "plan": "pro"}),
        json!({"targetingKey": "u9", "x": "v3", "country": "SE", "v": "0.9.0"}),
        json!({"targetingKey": "user-42", "email": "b@y"}),
    ]
    .iter()
    .map(|c| EvaluationContext::from_json(c).unwrap())
    .collect()
}

fn same_evaluations(server: &Snapshot, sdk: &Snapshot, doc: &Value) -> Result<(), TestCaseError> {
    for key in doc["flags"].as_object().unwrap().keys() {
        for ctx in contexts() {
            let (a, b) = (server.evaluate(key, &ctx), sdk.evaluate(key, &ctx));
            prop_assert_eq!(
                (a.value, a.variant, a.reason, a.error_code),
                (b.value, b.variant, b.reason, b.error_code),
                "flag {:?}",
                key
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn accepted_documents_travel_and_evaluate_as_on_the_server(doc in document()) {
        let set = match FlagSet::parse(&doc, Strictness::Strict) {
            Ok(set) => set,
            Err(e) => {
                // Refused: every problem names where, and the document really is past a
                // limit or wrong (the generator only makes limit problems).
                for p in &e.0 {
                    prop_assert!(p.path.starts_with("flags") || p.path.starts_with("$evaluators"), "{p}");
                }
                return Ok(());
            }
        };
        let server = Snapshot::compile(&set, 7);
        prop_assert!(server.problems().is_empty(), "accepted but does not compile: {:?}", server.problems());

        // A snapshot frame.
        let frame = serde_json::to_string(&ServerMsg::Snapshot {
            version: 7, document: doc.clone(), store: Some("s".into()), at: Some(1), reset: false,
        }).unwrap();
        prop_assert!(serde_json::from_str::<Value>(&frame).is_ok(), "a default decoder reads it");
        let ServerMsg::Snapshot { document, .. } = wire::decode_server(frame.as_bytes()).unwrap() else {
            panic!("not a snapshot");
        };
        let sdk = Snapshot::load(&document, 7).unwrap();
        prop_assert!(sdk.problems().is_empty(), "{:?}", sdk.problems());
        same_evaluations(&server, &sdk, &doc)?;

        // The same set as delta frames from an empty set, one per item.
        let mut held = json!({"flags": {}});
        let items = doc["$evaluators"].as_object().unwrap().iter().map(|(k, v)| (ItemKind::Evaluator, k, v))
            .chain(doc["flags"].as_object().unwrap().iter().map(|(k, v)| (ItemKind::Flag, k, v)));
        for (i, (kind, key, def)) in items.enumerate() {
            let frame = serde_json::to_string(&ServerMsg::Delta {
                from: i as u64, version: i as u64 + 1, restores: None, at: None,
                changes: vec![Change { kind, key: key.clone(), definition: Some(def.clone()) }],
            }).unwrap();
            prop_assert!(serde_json::from_str::<Value>(&frame).is_ok(), "a default decoder reads it");
            let ServerMsg::Delta { changes, .. } = wire::decode_server(frame.as_bytes()).unwrap() else {
                panic!("not a delta");
            };
            flagd_core::document::apply_changes(&mut held, &changes);
        }
        let sdk = Snapshot::load(&held, 7).unwrap();
        same_evaluations(&server, &sdk, &doc)?;
    }
}

#[test]
fn past_each_limit_is_refused_with_its_path() {
    let flag = |t: Value| json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": t});
    let problems = |doc: Value| -> Vec<String> {
        match FlagSet::parse(&doc, Strictness::Strict) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    };
    // Depth: document, flags, the flag, `if` and its array are 5 levels; `n` nots and
    // the `var` they wrap n + 1 more.
    let nots = |n: usize| {
        let mut v = json!({"var": "x"});
        for _ in 0..n {
            v = json!({ "!": v });
        }
        flag(json!({"if": [v, "on", "off"]}))
    };
    assert!(problems(json!({"flags": {"f": nots(94)}})).is_empty());
    assert_eq!(
        problems(json!({"flags": {"f": nots(95)}})),
        vec!["flags.f: is nested 101 levels deep in the document; at most 100 levels are allowed"]
    );
    // Compiled size: references count as their evaluator every time.
    let big = json!({"or": (0..999).map(|i| json!({"==": [{"var": "x"}, i]})).collect::<Vec<_>>()});
    let refs =
        |n: usize| flag(json!({"if": [{"or": vec![json!({"$ref": "big"}); n]}, "on", "off"]}));
    // `or` and its array, then per comparison: `==`, its array, `var`, "x" and the number.
    let size_of_big = 2 + 999 * 5;
    // `if` and its array, `or` and its array, "on" and "off", and the references.
    let fits = (MAX_COMPILED_SIZE - 6) / size_of_big;
    assert!(problems(json!({"$evaluators": {"big": big}, "flags": {"f": refs(fits)}})).is_empty());
    assert_eq!(
        problems(json!({"$evaluators": {"big": big}, "flags": {"f": refs(fits + 1)}})),
        vec![format!(
            "flags.f.targeting: compiles to more than {MAX_COMPILED_SIZE} nodes (each \"$ref\" counts as the size of its evaluator every time it is used)"
        )]
    );
    // The SDK compiles the same budget: a set written before the limit existed loads,
    // with that one flag in error.
    let doc =
        json!({"$evaluators": {"big": big}, "flags": {"f": refs(10_000), "g": flag(json!({}))}});
    let snap = Snapshot::load(&doc, 1).unwrap();
    assert_eq!(snap.problems().len(), 1);
    let ctx = EvaluationContext::new("u");
    assert_eq!(snap.evaluate("f", &ctx).reason, flagd_core::Reason::Error);
    assert_eq!(snap.evaluate("g", &ctx).variant, Some("off"));
}

/// One flag's definition is at most `MAX_FLAG_BYTES` of compact JSON on write; a set
/// stored before the limit existed still loads and evaluates that flag.
#[test]
fn a_flag_past_its_size_limit_is_refused_on_write_and_loads_anyway() {
    let sized = |n: usize| {
        let base =
            json!({"state": "ENABLED", "variants": {"on": "", "off": "x"}, "defaultVariant": "on"});
        let pad = n - flagd_core::limits::json_bytes(&base);
        json!({"state": "ENABLED", "variants": {"on": "y".repeat(pad), "off": "x"}, "defaultVariant": "on"})
    };
    let at = sized(MAX_FLAG_BYTES);
    assert_eq!(flagd_core::limits::json_bytes(&at), MAX_FLAG_BYTES);
    assert!(FlagSet::parse(&json!({"flags": {"f": at}}), Strictness::Strict).is_ok());
    let over = json!({"flags": {"f": sized(MAX_FLAG_BYTES + 1), "g": sized(100)}});
    let e = FlagSet::parse(&over, Strictness::Strict).unwrap_err();
    assert_eq!(e.0.len(), 1, "{:?}", e.0);
    assert_eq!(e.0[0].path, "flags.f");
    assert!(
        e.0[0].message.contains("at most 1048576 bytes"),
        "{}",
        e.0[0].message
    );
    let snap = Snapshot::load(&over, 1).unwrap();
    assert!(snap.problems().is_empty());
    assert_eq!(
        snap.evaluate("f", &EvaluationContext::new("u")).variant,
        Some("on")
    );
}
