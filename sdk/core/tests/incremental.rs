//! `Snapshot::with_changes` (a delta applied by compiling only what changed) evaluates
//! exactly as a whole load of the changed document: the same flags, the same problems,
//! the same answer for every flag and context. Checked over every flag-set document of
//! the committed fuzz corpus (the testbed's files and what fuzzing grew from them), each
//! with changes of every kind: a flag changed, removed, added, an evaluator changed or
//! removed. And a load that reads the document in place (what the SDK and flagd do)
//! evaluates exactly as compiling the [`FlagSet`] read from it.

use flagd_core::document::{DocumentText, apply_changes};
use flagd_core::wire::{Change, ItemKind};
use flagd_core::{EvaluationContext, FlagSet, Snapshot};
use serde_json::{Value, json};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/flag_set");

fn contexts() -> Vec<EvaluationContext> {
    let mut out = vec![EvaluationContext::default()];
    for (i, (email, tier, age)) in [
        ("a@example.com", "gold", 20),
        ("b@faas.com", "silver", 41),
        ("c@example.org", "free", 70),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = EvaluationContext::new(format!("user-{i}"));
        c.set("email", email);
        c.set("tier", tier);
        c.set("age", age);
        c.set("locale", "de-DE");
        out.push(c);
    }
    out
}

/// What a snapshot answers, in a form two snapshots can be compared by.
fn answers(s: &Snapshot, ctxs: &[EvaluationContext]) -> Value {
    let mut keys: Vec<&str> = s.keys().collect();
    keys.sort_unstable();
    let per_flag: Vec<Value> = keys
        .iter()
        .map(|k| {
            let per_ctx: Vec<Value> = ctxs
                .iter()
                .map(|c| {
                    let d = s.evaluate(k, c);
                    json!([
                        d.value,
                        d.variant,
                        format!("{:?}", d.reason),
                        format!("{:?}", d.error_code),
                        d.error_message,
                        d.flag_metadata
                    ])
                })
                .collect();
            json!([k, per_ctx])
        })
        .collect();
    let problems: Vec<Value> = s
        .problems()
        .iter()
        .map(|p| json!([p.path, p.message]))
        .collect();
    json!({"flags": per_flag, "problems": problems, "version": s.version()})
}

/// Change lists to try on a document: one per kind of change, and all at once.
fn change_lists(doc: &Value) -> Vec<Vec<Change>> {
    let flags = doc.get("flags").and_then(Value::as_object);
    let evaluators = doc.get("$evaluators").and_then(Value::as_object);
    let mut lists = Vec::new();
    let flag = |key: &str, definition: Option<Value>| Change {
        kind: ItemKind::Flag,
        key: key.to_owned(),
        definition,
    };
    if let Some(f) = flags {
        let keys: Vec<&String> = f.keys().collect();
        if let Some(first) = keys.first() {
            let mut toggled = f[*first].clone();
            if let Some(o) = toggled.as_object_mut() {
                let off = o.get("state") == Some(&json!("DISABLED"));
                o.insert(
                    "state".into(),
                    json!(if off { "ENABLED" } else { "DISABLED" }),
                );
            }
            lists.push(vec![flag(first, Some(toggled))]);
            lists.push(vec![flag(first, None)]);
            lists.push(vec![flag("added-by-delta", Some(f[*first].clone()))]);
        }
        if keys.len() > 1 {
            // One flag takes another's definition (a broken one may become whole, or
            // the reverse), and one is removed, in one delta.
            lists.push(vec![
                flag(keys[0], Some(f[keys[1]].clone())),
                flag(keys[1], None),
            ]);
        }
        // Something that is not a flag at all.
        lists.push(vec![flag("not-a-flag", Some(json!([1, 2])))]);
    }
    if let Some(e) = evaluators {
        let names: Vec<&String> = e.keys().collect();
        if let Some(first) = names.first() {
            let ev = |key: &str, definition: Option<Value>| Change {
                kind: ItemKind::Evaluator,
                key: key.to_owned(),
                definition,
            };
            lists.push(vec![ev(first, None)]);
            lists.push(vec![ev(
                first,
                Some(json!({"in": ["@faas.com", {"var": "email"}]})),
            )]);
            lists.push(vec![ev(first, Some(json!({})))]);
            if let Some(second) = names.get(1) {
                lists.push(vec![ev(first, Some(e[*second].clone()))]);
            }
        }
    }
    let all: Vec<Change> = lists.iter().flatten().cloned().collect();
    if !all.is_empty() {
        lists.push(all);
    }
    lists
}

/// Every JSON document of the corpus, with its file.
fn corpus() -> Vec<(std::path::PathBuf, Value)> {
    let mut entries: Vec<_> = std::fs::read_dir(CORPUS)
        .expect("the corpus")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .filter_map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let doc_bytes = bytes.split(|b| *b == 0).next().unwrap_or_default();
            let doc = serde_json::from_slice::<Value>(doc_bytes).ok()?;
            Some((path, doc))
        })
        .collect()
}

#[test]
fn a_load_read_in_place_evaluates_as_its_flag_set_compiled() {
    let ctxs = contexts();
    let mut checked = 0;
    for (path, doc) in corpus() {
        let in_place = Snapshot::load(&doc, 1);
        let set = FlagSet::parse_isolated(&doc);
        match (in_place, set) {
            (Ok(s), Ok(set)) => {
                let compiled = Snapshot::compile(&set, 1);
                assert_eq!(
                    answers(&s, &ctxs),
                    answers(&compiled, &ctxs),
                    "{}",
                    path.display()
                );
                assert_eq!(s.metadata(), compiled.metadata(), "{}", path.display());
                checked += 1;
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("{}: {a:?} but {b:?}", path.display()),
        }
    }
    assert!(checked > 100, "only {checked} documents checked");
}

#[test]
fn a_delta_compiles_to_what_a_whole_load_gives() {
    let ctxs = contexts();
    let mut checked = 0;
    for (path, doc) in corpus() {
        // Deltas come from flagd, whose documents have flags as an object.
        if !doc.get("flags").is_some_and(Value::is_object) {
            continue;
        }
        let Ok(before) = Snapshot::load(&doc, 1) else {
            continue;
        };
        for changes in change_lists(&doc) {
            let mut after_doc = doc.clone();
            apply_changes(&mut after_doc, &changes);
            let whole = Snapshot::load(&after_doc, 2);
            let flags = after_doc.get("flags").and_then(Value::as_object);
            let part = before.with_changes(&changes, 2, |k| flags.and_then(|f| f.get(k)));
            match (whole, part) {
                (Ok(w), Some(p)) => {
                    assert_eq!(
                        answers(&p, &ctxs),
                        answers(&w, &ctxs),
                        "{}: {changes:?}",
                        path.display()
                    );
                    checked += 1;
                }
                // Only a whole load decides that a document is not a flag set.
                (Err(_), None) => {}
                (Err(e), Some(_)) => panic!(
                    "{}: {changes:?}: the whole load fails ({e}) but the delta applied",
                    path.display()
                ),
                (Ok(_), None) => panic!(
                    "{}: {changes:?}: the delta did not apply, the whole load did",
                    path.display()
                ),
            }
        }
    }
    assert!(checked > 500, "only {checked} deltas checked");
}

#[test]
fn set_metadata_and_whole_sections_need_a_whole_load_and_other_top_level_keys_do_not() {
    let doc = json!({"metadata": {"team": "a"}, "flags": {"f": {"state": "ENABLED",
        "variants": {"on": true}, "defaultVariant": "on", "metadata": {"owner": "x"}}}});
    let s = Snapshot::load(&doc, 1).unwrap();
    let meta = Change {
        kind: ItemKind::Top,
        key: "metadata".into(),
        definition: Some(json!({"team": "b"})),
    };
    assert!(s.with_changes(&[meta], 2, |_| None).is_none());
    for section in ["flags", "$evaluators"] {
        let whole = Change {
            kind: ItemKind::Top,
            key: section.into(),
            definition: Some(json!({})),
        };
        assert!(s.with_changes(&[whole], 2, |_| None).is_none(), "{section}");
    }
    let schema = Change {
        kind: ItemKind::Top,
        key: "$schema".into(),
        definition: Some(json!("https://flagd.dev/schema/v0/flags.json")),
    };
    let s2 = s.with_changes(&[schema], 2, |_| None).unwrap();
    assert_eq!(s2.version(), 2);
    assert_eq!(
        answers(&s2, &contexts())["flags"],
        answers(&s, &contexts())["flags"]
    );
}

/// A document large enough to be parsed, read and compiled on several cores: good
/// flags, broken ones, flags naming evaluators (one of them broken), keys that need
/// escaping, and a key written twice.
fn large_document() -> String {
    let mut flags = Vec::new();
    for i in 0..6_000 {
        let key = match i % 7 {
            0 => format!("\"fl\\u00e4g-{i}\""),
            1 => format!("\"flag.\\\"{i}\\\"\""),
            _ => format!("\"flag-{i}\""),
        };
        let body = match i % 5 {
            0 => r#"{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "nope"}"#.to_owned(),
            1 => r#"{"state": "DISABLED", "variants": {"a": "x", "b": "y"}, "defaultVariant": "a", "targeting": {"$ref": "gold"}}"#.to_owned(),
            2 => r#"{"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a", "targeting": {"$ref": "broken"}}"#.to_owned(),
            3 => format!(r#"{{"state": "ENABLED", "variants": {{"on": true, "off": false}}, "defaultVariant": "off", "metadata": {{"n": {i}}}, "targeting": {{"fractional": [["on", {p}], ["off", {q}]]}}}}"#, p = i % 100, q = 100 - i % 100),
            _ => r#"{"state": 7, "variants": []}"#.to_owned(),
        };
        flags.push(format!("{key}: {body}"));
    }
    // Written twice: the first place, the last value.
    flags.push(
        r#""flag-2": {"state": "ENABLED", "variants": {"z": "last"}, "defaultVariant": "z"}"#
            .to_owned(),
    );
    format!(
        r#"{{"$schema": "x", "metadata": {{"team": "t"}}, "$evaluators": {{"gold": {{"if": [{{"==": [{{"var": "tier"}}, "gold"]}}, "b", null]}}, "broken": {{}}}}, "flags": {{{}}}}}"#,
        flags.join(",\n")
    )
}

#[test]
fn a_large_document_parses_as_on_one_thread() {
    let text = large_document();
    assert!(text.len() > 512 * 1024, "large enough for parts");
    let parsed = flagd_core::limits::value_from_slice_deep(text.as_bytes()).unwrap();
    let whole: Value = flagd_core::limits::from_slice_deep(text.as_bytes()).unwrap();
    // Compared as text: the order of keys counts.
    assert_eq!(parsed.to_string(), whole.to_string());
    assert_eq!(parsed["flags"]["flag-2"]["variants"], json!({"z": "last"}));
    let keys: Vec<&String> = parsed["flags"].as_object().unwrap().keys().collect();
    assert_eq!(keys[2], "flag-2", "a repeated key keeps its first place");
    // Not JSON: the same error as a whole parse.
    let broken = format!("{}, \"tail\": [1,}}", &text[..text.len() - 1]);
    assert_eq!(
        flagd_core::limits::value_from_slice_deep(broken.as_bytes()),
        flagd_core::limits::from_slice_deep::<Value>(broken.as_bytes())
    );
    assert!(flagd_core::limits::value_from_slice_deep(broken.as_bytes()).is_err());
}

#[test]
fn a_large_document_loads_as_its_parts_do() {
    let doc: Value = serde_json::from_str(&large_document()).unwrap();
    let whole = Snapshot::load(&doc, 1).unwrap();
    assert_eq!(whole.len(), 6_000);
    let ctxs = contexts();
    // The oracle: the same flags loaded in documents small enough for one thread.
    let flags = doc["flags"].as_object().unwrap();
    let keys: Vec<&String> = flags.keys().collect();
    let mut expected_flags = Vec::new();
    let mut expected_problems = std::collections::BTreeSet::new();
    for part in keys.chunks(500) {
        let mut small = doc.clone();
        small["flags"] = Value::Object(
            part.iter()
                .map(|k| ((*k).clone(), flags[*k].clone()))
                .collect(),
        );
        let s = Snapshot::load(&small, 1).unwrap();
        let a = answers(&s, &ctxs);
        expected_flags.extend(a["flags"].as_array().unwrap().iter().cloned());
        expected_problems.extend(
            a["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::to_string),
        );
    }
    expected_flags.sort_by_key(|f| f[0].as_str().unwrap_or_default().to_owned());
    let got = answers(&whole, &ctxs);
    assert_eq!(got["flags"], Value::Array(expected_flags));
    let got_problems: std::collections::BTreeSet<String> = got["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect();
    assert_eq!(got_problems, expected_problems);
    assert!(got_problems.len() > 3_000, "broken flags are reported");
    // And as its flag set compiled.
    let set = FlagSet::parse_isolated(&doc).unwrap();
    assert_eq!(answers(&Snapshot::compile(&set, 1), &ctxs), got);
}

#[test]
fn a_large_document_loads_from_its_text_as_whole() {
    let text = large_document();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let whole = flagd_core::on_this_thread(|| Snapshot::load(&doc, 1)).unwrap();
    let split = DocumentText::parse(&text).unwrap();
    assert_eq!(split.flags.as_ref().map(Vec::len), Some(6_000));
    let parts = Snapshot::load_text(&split, 1).unwrap();
    let ctxs = contexts();
    assert_eq!(answers(&parts, &ctxs), answers(&whole, &ctxs));
    assert_eq!(
        parts.keys().collect::<Vec<_>>(),
        whole.keys().collect::<Vec<_>>(),
        "the flags in the same order"
    );
    assert_eq!(parts.metadata(), whole.metadata());
    let evaluator_problems = |s: &Snapshot| {
        s.problems()
            .iter()
            .filter(|p| p.path.starts_with("$evaluators"))
            .count()
    };
    assert_eq!(evaluator_problems(&parts), 1, "reported once, not per part");
    // And as the text was loaded before: parsed whole, then loaded.
    assert_eq!(
        answers(&Snapshot::from_json_str(&text, 1).unwrap(), &ctxs),
        answers(&whole, &ctxs)
    );
    // A large text that is not a flag set fails as the whole document does.
    let not_a_set = text.replacen(r#""$evaluators": {"#, r#""$evaluators": 5, "x": {"#, 1);
    let split = DocumentText::parse(&not_a_set).unwrap();
    let whole = Snapshot::load(&serde_json::from_str(&not_a_set).unwrap(), 1).unwrap_err();
    assert_eq!(Snapshot::load_text(&split, 1).unwrap_err(), whole);
}

#[test]
fn a_document_text_splits_as_a_parse_reads() {
    let text = r#"{"flags": {"a": {"state": "ENABLED"}, "b": {}, "a": [1]}, "metadata": {"x": 1}, "flags": {"c": {}, "c": 2, "d": 3}}"#;
    let split = DocumentText::parse(text).unwrap();
    let keys: Vec<&str> = split.members.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["flags", "metadata"], "first place");
    let flags: Vec<(&str, &str)> = split
        .flags
        .as_ref()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.get()))
        .collect();
    assert_eq!(flags, [("c", "2"), ("d", "3")], "last value");
    let parsed: Value = flagd_core::limits::from_slice_deep(text.as_bytes()).unwrap();
    assert_eq!(split.to_value().unwrap().to_string(), parsed.to_string());
    assert!(
        DocumentText::parse(r#"{"flags": [{"key": "a"}]}"#)
            .unwrap()
            .flags
            .is_none()
    );
    for not in ["[1]", "5", "{\"a\": }", "{\"a\": 1} x", ""] {
        assert!(DocumentText::parse(not).is_none(), "{not}");
    }
    let deep = format!("{{\"flags\": {}1{}}}", "[".repeat(600), "]".repeat(600));
    assert!(
        DocumentText::parse(&deep).is_none(),
        "deeper than decoders read"
    );
}
