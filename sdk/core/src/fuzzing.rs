//! The bodies of the fuzz targets (`sdk/core/fuzz/`), behind the off-by-default cargo
//! feature `fuzzing`.
//!
//! Each function takes arbitrary bytes, never panics on any input that the crate handles
//! correctly, and panics (an `assert!`) when an invariant breaks. The coverage-guided
//! fuzz targets call them, and `tests/fuzz_corpus.rs` replays the committed corpus
//! and the crash reproducers through them in the ordinary test suite.

use std::sync::OnceLock;

use serde_json::Value as Json;

use crate::document::apply_changes;
use crate::wire::{ClientMsg, ItemKind, ServerMsg};
use crate::{Detail, EvaluationContext, FlagSet, Reason, Snapshot, Strictness, Value, ValueType};

/// A flag-set document (UTF-8 JSON), optionally followed by a NUL byte and an evaluation
/// context (a JSON object).
///
/// Invariants: a document accepted strictly is accepted leniently as the same flag set,
/// validates clean and is written back as it was; a document accepted leniently
/// compiles; the written-back document reads and writes back as itself, also through
/// text; every flag
/// evaluates, with every context, to a well-formed [`Detail`]; an unknown key is
/// `FLAG_NOT_FOUND`.
pub fn flag_set(data: &[u8]) {
    let (doc, ctx) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(doc) else {
        return;
    };
    loads_in_parts_as_whole(text);
    let strict = FlagSet::parse_str(text, Strictness::Strict);
    let Ok(set) = FlagSet::parse_str(text, Strictness::Lenient) else {
        assert!(strict.is_err(), "accepted strictly but not leniently");
        return;
    };
    if let Ok(s) = &strict {
        assert_eq!(s, &set, "strict and lenient reads differ");
        assert_eq!(
            set.validate(),
            Vec::new(),
            "accepted strictly, invalid later"
        );
    }
    // A valid document is written back as it was read (lossless), and any written-back
    // document reads and writes back as itself, as strict as before.
    let json = set.to_json();
    if strict.is_ok()
        && let Ok(original) = serde_json::from_str::<Json>(text)
    {
        assert_eq!(json, original, "a valid document changed when written back");
        assert!(FlagSet::parse(&json, Strictness::Strict).is_ok());
    }
    let Ok(reread) = FlagSet::parse(&json, Strictness::Lenient) else {
        panic!("the written-back document does not read: {json}");
    };
    assert_eq!(
        reread.to_json(),
        json,
        "the written-back document is not a fixed point"
    );
    // The same through text.
    let (text, json_again) = through_text(&json);
    let Ok(again) = FlagSet::parse_str(&text, Strictness::Lenient) else {
        panic!("written back, the document does not read: {text}");
    };
    assert_eq!(
        again.to_json(),
        json_again,
        "the document changed on a round trip"
    );
    let mut contexts = standard_contexts();
    if let Some(c) = ctx.and_then(|c| serde_json::from_slice::<Json>(c).ok())
        && let Ok(c) = EvaluationContext::from_json(&c)
    {
        contexts.push(c);
    }
    evaluate_all(&set, &contexts);
}

/// Loaded from its text split to the single flag ([`Snapshot::load_text`] in parts),
/// a document loads as it does whole on one thread: the same flags in the same order,
/// the same problems, metadata and answers, or the same error.
fn loads_in_parts_as_whole(text: &str) {
    let Some(split) = crate::document::DocumentText::parse(text) else {
        return;
    };
    let Ok(json) = crate::limits::from_slice_deep::<Json>(text.as_bytes()) else {
        panic!("split, but does not parse");
    };
    let whole = crate::on_this_thread(|| Snapshot::load(&json, 1));
    let parts = crate::eval::load_in_parts(&split, 1, 1, 1);
    match (whole, parts) {
        (Ok(a), Ok(b)) => {
            let keys: Vec<&str> = a.keys().collect();
            assert_eq!(keys, b.keys().collect::<Vec<_>>(), "the flags differ");
            assert_eq!(a.problems(), b.problems(), "the problems differ");
            assert_eq!(a.metadata(), b.metadata(), "the metadata differs");
            for c in &standard_contexts() {
                for k in &keys {
                    assert_eq!(
                        format!("{:?}", a.evaluate(k, c)),
                        format!("{:?}", b.evaluate(k, c)),
                        "{k} evaluates differently"
                    );
                }
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "the errors differ"),
        (a, b) => panic!("whole: {a:?}, in parts: {b:?}"),
    }
}

/// A stream frame (UTF-8 JSON text), decoded as the SDK decodes a server's message and
/// as flagd decodes a client's.
///
/// Invariants: a decoded message encodes and decodes to the same message; a snapshot's
/// document and a delta applied with [`apply_changes`] to a base document (as the SDK
/// does) load and evaluate without panicking; in a delta that does not replace `flags`
/// or `$evaluators` wholesale, the last change of each item decides it.
pub fn wire_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = serde_json::from_str::<ClientMsg>(text) {
        re_encodes(&msg);
    }
    // As the SDK decodes: deeper than a default decoder, with its own depth check.
    let Ok(msg) = crate::wire::decode_server(data) else {
        assert!(
            serde_json::from_str::<ServerMsg>(text).is_err(),
            "a default decoder reads a frame the SDK's does not"
        );
        return;
    };
    if serde_json::from_str::<ServerMsg>(text).is_ok() {
        re_encodes(&msg);
    }
    match msg {
        ServerMsg::Snapshot { document, .. } => load_and_evaluate(&document),
        ServerMsg::Delta { changes, .. } => {
            for base in [base_document(), Json::Object(Default::default())] {
                let mut doc = base;
                apply_changes(&mut doc, &changes);
                check_last_change_wins(&doc, &changes);
                load_and_evaluate(&doc);
            }
            let mut not_an_object = Json::Array(Vec::new());
            apply_changes(&mut not_an_object, &changes);
            assert_eq!(not_an_object, Json::Array(Vec::new()));
        }
        ServerMsg::Restore { .. } | ServerMsg::Ping | ServerMsg::Pong => {}
    }
}

/// An evaluation context as JSON text, as OFREP, `flagctl eval` and the SDK's callers
/// pass it ([`EvaluationContext::from_json`]).
///
/// Invariants: only an object is a context; a string `targetingKey` is the targeting key
/// and every other property an attribute with its value; the context written as JSON
/// reads back equal; a fixed flag set evaluates with it to well-formed details.
pub fn context(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<Json>(data) else {
        return;
    };
    let Ok(ctx) = EvaluationContext::from_json(&json) else {
        assert!(!json.is_object(), "an object was refused as a context");
        return;
    };
    let Json::Object(map) = &json else {
        panic!("a non-object was accepted as a context: {json}");
    };
    let key = map.get("targetingKey").and_then(Json::as_str);
    assert_eq!(ctx.targeting_key(), key);
    for (name, v) in map {
        if name == "targetingKey" && key.is_some() {
            assert!(ctx.get(name).is_none());
        } else {
            assert_eq!(
                ctx.get(name),
                Some(&Value::from_json(v)),
                "attribute {name}"
            );
        }
    }
    assert_eq!(
        ctx.attributes().len() + usize::from(key.is_some()),
        map.len()
    );
    let back = EvaluationContext::from_json(&ctx.to_json());
    assert_eq!(
        back.as_ref(),
        Ok(&ctx),
        "the context changed on a round trip"
    );
    static FIXED: OnceLock<(FlagSet, Snapshot)> = OnceLock::new();
    let (set, snap) = FIXED.get_or_init(|| {
        let Ok(set) = FlagSet::parse_str(CONTEXT_FLAGS, Strictness::Strict) else {
            panic!("the fixed flag set is invalid");
        };
        let snap = Snapshot::compile(&set, 1);
        assert!(
            snap.problems().is_empty(),
            "the fixed flag set does not compile"
        );
        (set, snap)
    });
    for key in set.flags.keys() {
        check_detail(set, key, &snap.evaluate(key, &ctx), 1);
    }
}

/// Flags whose rules read the usual attributes with every kind of operator.
const CONTEXT_FLAGS: &str = r#"{
  "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
  "flags": {
    "rollout": {"state": "ENABLED", "variants": {"on": true, "off": false},
      "defaultVariant": "off", "targeting": {"fractional": [["on", 25], ["off", 75]]}},
    "by-email": {"state": "ENABLED", "variants": {"a": "a", "b": "b"},
      "defaultVariant": "a", "targeting": {"fractional": [{"var": "email"}, ["a", 50], ["b", 50]]}},
    "staff": {"state": "ENABLED", "variants": {"on": true, "off": false},
      "defaultVariant": "off", "targeting": {"if": [{"$ref": "staff"}, "on", null]}},
    "country": {"state": "ENABLED", "variants": {"on": true, "off": false},
      "defaultVariant": "off", "targeting": {"if": [{"and": [
        {"in": [{"var": "country"}, ["NO", "SE"]]}, {"==": [{"var": "plan"}, "pro"]},
        {">=": [{"var": "age"}, 18]}, {"!": {"missing": ["user.id"]}}]}, "on", "off"]}},
    "version": {"state": "ENABLED", "variants": {"new": 2, "old": 1},
      "defaultVariant": "old", "targeting": {"if": [
        {"sem_ver": [{"var": "appVersion"}, ">=", "4.2.0"]}, "new",
        {"sem_ver": [{"var": "appVersion"}, "^", "3.0.0"]}, "old", null]}},
    "echo": {"state": "ENABLED", "variants": {"x": {"x": 1}, "y": {"y": 2}},
      "defaultVariant": "x", "targeting": {"var": "variant"}},
    "lists": {"state": "ENABLED", "variants": {"true": true, "false": false},
      "defaultVariant": "false", "targeting": {"some": [{"var": "tags"}, {"starts_with": [{"var": ""}, "beta"]}]}},
    "sum": {"state": "ENABLED", "variants": {"1": 1, "2": 2, "3": 3},
      "defaultVariant": "1", "targeting": {"reduce": [{"var": "scores"},
        {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}},
    "text": {"state": "ENABLED", "variants": {"ab": "ab", "x": "x"},
      "defaultVariant": "x", "targeting": {"cat": [{"substr": [{"var": "name"}, 0, 1]},
        {"var": "user.name"}, {"var": "$flagd.flagKey"}, {"var": "$flagd.timestamp"}]}}
  }
}"#;

/// A message encodes to JSON that decodes to the same message, and to text that decodes
/// as the same JSON does.
fn re_encodes<M>(msg: &M)
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_value(msg).unwrap_or_else(|e| panic!("encode {msg:?}: {e}"));
    let again = serde_json::from_value::<M>(json.clone()).ok();
    assert_eq!(again.as_ref(), Some(msg), "re-encoded as {json}");
    let (text, json_again) = through_text(&json);
    let from_text = serde_json::from_str::<M>(&text).ok();
    let from_json = serde_json::from_value::<M>(json_again).ok();
    assert!(
        from_text.is_some(),
        "re-encoded as {text}, which does not decode"
    );
    assert_eq!(from_text, from_json, "{text}");
}

/// JSON written as text, and that text read back as JSON, which must be the same JSON
/// (floats included: serde_json's `float_roundtrip` is on).
fn through_text(json: &Json) -> (String, Json) {
    let text = json.to_string();
    let Ok(again) = serde_json::from_str::<Json>(&text) else {
        panic!("serde_json does not read what it wrote: {text}");
    };
    assert_eq!(&again, json, "JSON changed through text: {text}");
    (text, again)
}

/// Contexts without and with the attributes that rules usually read.
fn standard_contexts() -> Vec<EvaluationContext> {
    vec![
        EvaluationContext::empty(),
        EvaluationContext::new("user-1")
            .with("email", "ann@example.com")
            .with("country", "NO")
            .with("plan", "pro")
            .with("age", 42)
            .with("appVersion", "4.3.1")
            .with("ratio", 0.5)
            .with("beta", true),
    ]
}

/// The document a delta is applied to: one flag, one evaluator and metadata.
fn base_document() -> Json {
    serde_json::json!({
        "flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": "off", "targeting": {"if": [{"$ref": "e"}, "on", "off"]}}},
        "$evaluators": {"e": {"==": [{"var": "country"}, "NO"]}},
        "metadata": {"flagSetId": "base"}
    })
}

/// Reads a document as the SDK does (leniently, every flag isolated), and if it loads,
/// evaluates every flag: the broken ones with reason `ERROR`, the others as a lenient
/// read of the same document would.
fn load_and_evaluate(document: &Json) {
    let Ok(set) = FlagSet::parse_isolated(document) else {
        assert!(
            FlagSet::parse(document, Strictness::Lenient).is_err(),
            "read leniently but not isolated"
        );
        return;
    };
    let snap = Snapshot::compile(&set, 7);
    for ctx in standard_contexts() {
        for key in set.broken().keys() {
            let d = snap.evaluate(key, &ctx);
            if !set.flags.contains_key(key) {
                assert_eq!(d.reason, Reason::Error, "broken flag {key}");
            }
        }
    }
    evaluate_all(&set, &standard_contexts());
    if let Ok(lenient) = FlagSet::parse(document, Strictness::Lenient) {
        assert!(
            set.broken().is_empty(),
            "lenient accepts what isolation set aside"
        );
        assert_eq!(lenient, set, "isolated and lenient reads differ");
    }
}

/// Compiles a leniently accepted set (which must succeed) and evaluates every flag, and a
/// key that is not there, with every context.
fn evaluate_all(set: &FlagSet, contexts: &[EvaluationContext]) {
    const VERSION: u64 = 7;
    let snap = Snapshot::compile(set, VERSION);
    let broken_only = set
        .broken()
        .keys()
        .filter(|k| !set.flags.contains_key(*k))
        .count();
    assert_eq!(snap.len(), set.flags.len() + broken_only);
    for ctx in contexts {
        for key in set.flags.keys() {
            check_detail(set, key, &snap.evaluate(key, ctx), VERSION);
            for ty in [ValueType::Boolean, ValueType::String, ValueType::Object] {
                let d = snap.evaluate_as(key, ctx, ty);
                check_detail(set, key, &d, VERSION);
            }
        }
        let missing = "\u{0}not-a-flag";
        if !set.flags.contains_key(missing) {
            let d = snap.evaluate(missing, ctx);
            assert_eq!(d.reason, Reason::Error);
            assert_eq!(d.error_code, Some(crate::ErrorCode::FlagNotFound));
        }
    }
}

/// A detail is consistent with its flag: an error has a code and no value, a value comes
/// with the name of a variant that has exactly that value, a disabled flag gives none.
fn check_detail(set: &FlagSet, key: &str, d: &Detail<'_>, version: u64) {
    let Some(flag) = set.flags.get(key) else {
        panic!("evaluated a flag that is not in the set: {key}");
    };
    assert_eq!(d.version, version);
    assert_eq!(
        d.reason == Reason::Error,
        d.error_code.is_some(),
        "{key}: {d:?}"
    );
    assert_eq!(d.value.is_some(), d.variant.is_some(), "{key}: {d:?}");
    if let (Some(value), Some(variant)) = (d.value, d.variant) {
        assert_eq!(flag.variants.get(variant), Some(value), "{key}: {d:?}");
    }
    match d.reason {
        Reason::Error | Reason::Disabled => assert!(d.value.is_none(), "{key}: {d:?}"),
        Reason::Static | Reason::TargetingMatch => assert!(d.value.is_some(), "{key}: {d:?}"),
        _ => {}
    }
    assert_eq!(
        d.reason == Reason::Disabled,
        flag.state == crate::FlagState::Disabled,
        "{key}: {d:?}"
    );
}

/// In a delta that never replaces `flags` or `$evaluators` as a whole, each item ends
/// as its last change left it.
fn check_last_change_wins(doc: &Json, changes: &[crate::wire::Change]) {
    let replaces_container = changes
        .iter()
        .any(|c| c.kind == ItemKind::Top && (c.key == "flags" || c.key == "$evaluators"));
    if replaces_container {
        return;
    }
    for (i, c) in changes.iter().enumerate() {
        if changes[i + 1..]
            .iter()
            .any(|l| l.kind == c.kind && l.key == c.key)
        {
            continue; // not the last change of this item
        }
        let found = match c.kind {
            ItemKind::Flag => doc.get("flags").and_then(|f| f.get(&c.key)),
            ItemKind::Evaluator => doc.get("$evaluators").and_then(|f| f.get(&c.key)),
            ItemKind::Top => doc.get(&c.key),
        };
        assert_eq!(found, c.definition.as_ref(), "{:?} {:?}", c.kind, c.key);
    }
}
