//! `Snapshot::with_changes` (a delta applied by compiling only what changed) evaluates
//! exactly as a whole load of the changed document: the same flags, the same problems,
//! the same answer for every flag and context. Checked over every flag-set document of
//! the committed fuzz corpus (the testbed's files and what fuzzing grew from them), each
//! with changes of every kind: a flag changed, removed, added, an evaluator changed or
//! removed.

use flagd_core::document::apply_changes;
use flagd_core::wire::{Change, ItemKind};
use flagd_core::{EvaluationContext, Snapshot};
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

#[test]
fn a_delta_compiles_to_what_a_whole_load_gives() {
    let ctxs = contexts();
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(CORPUS)
        .expect("the corpus")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let bytes = std::fs::read(&path).unwrap();
        let doc_bytes = bytes.split(|b| *b == 0).next().unwrap_or_default();
        let Ok(doc) = serde_json::from_slice::<Value>(doc_bytes) else {
            continue;
        };
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
