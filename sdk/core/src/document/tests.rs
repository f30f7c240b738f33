use serde_json::json;

use super::*;

fn change(kind: ItemKind, key: &str, definition: Option<Value>) -> Change {
    Change {
        kind,
        key: key.to_owned(),
        definition,
    }
}

#[test]
fn items_round_trip_in_document_order() {
    let doc = json!({"$schema": "s", "flags": {"b": {"state": "ENABLED"}, "a": {"state": "DISABLED"}},
                     "$evaluators": {"e": {"==": [1, 1]}}, "metadata": {"owner": "web"}});
    let items = items_in(&doc);
    assert_eq!(items.len(), 5);
    assert_eq!(assemble(&items), doc);
    assert_eq!(
        assemble(&items).to_string(),
        doc.to_string(),
        "key order kept"
    );
    // The array form keys each flag by its `key` member.
    let arr = json!({"flags": [{"key": "x", "state": "ENABLED"}]});
    assert_eq!(
        items_of(&arr),
        vec![(ItemKind::Flag, "x".to_owned(), json!({"state": "ENABLED"}))]
    );
}

#[test]
fn diff_names_what_was_added_removed_and_changed() {
    let a = items_in(&json!({"flags": {"keep": 1, "gone": 2, "edit": 3}}));
    let b = items_in(&json!({"flags": {"edit": 4, "new": 5, "keep": 1}}));
    let d = diff(&a, &b);
    let got: Vec<(&str, Difference)> = d.iter().map(|d| (d.key, d.change)).collect();
    assert_eq!(
        got,
        vec![
            ("edit", Difference::Changed),
            ("gone", Difference::Removed),
            ("new", Difference::Added)
        ]
    );
    assert_eq!(
        serde_json::to_value(&d[0]).unwrap(),
        json!({"kind": "flag", "key": "edit", "change": "changed", "before": 3, "after": 4})
    );
    assert!(diff(&a, &a).is_empty());
}

#[test]
fn changes_apply_in_place_keeping_order() {
    let mut doc = json!({"flags": {"a": 1, "b": 2}, "$evaluators": {"e": 0}, "metadata": {}});
    apply_changes(
        &mut doc,
        &[
            change(ItemKind::Flag, "a", Some(json!(10))),
            change(ItemKind::Flag, "c", Some(json!(3))),
            change(ItemKind::Flag, "b", None),
            change(ItemKind::Evaluator, "e", None),
            change(ItemKind::Top, "metadata", None),
            change(ItemKind::Top, "$schema", Some(json!("s"))),
        ],
    );
    assert_eq!(
        doc.to_string(),
        json!({"flags": {"a": 10, "c": 3}, "$schema": "s"}).to_string()
    );
    // Not a document: nothing to apply to.
    let mut not = json!([1]);
    apply_changes(&mut not, &[change(ItemKind::Flag, "a", Some(json!(1)))]);
    assert_eq!(not, json!([1]));
}

#[test]
fn one_flag_is_validated_with_the_sets_evaluators() {
    let mut evaluators = Map::new();
    evaluators.insert("beta".into(), json!({"in": [{"var": "email"}, ["a@b"]]}));
    let flag = json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                      "targeting": {"if": [{"$ref": "beta"}, "on", "off"]}});
    assert!(validate_flag("f", &flag, &evaluators).is_ok());
    let e = validate_flag("f", &flag, &Map::new()).unwrap_err();
    assert!(e[0].path.starts_with("flags.f.targeting"), "{e:?}");
}

#[test]
fn a_new_evaluators_section_is_made_when_needed() {
    let mut doc = json!({"flags": {"a": 1, "b": 2}, "metadata": {"x": 1}});
    apply_changes(
        &mut doc,
        &[
            change(ItemKind::Flag, "a", None),
            change(ItemKind::Flag, "c", Some(json!(3))),
            change(ItemKind::Evaluator, "e", Some(json!({"==": [1, 1]}))),
            change(ItemKind::Top, "metadata", None),
        ],
    );
    assert_eq!(
        doc,
        json!({"flags": {"b": 2, "c": 3}, "$evaluators": {"e": {"==": [1, 1]}}})
    );
}
