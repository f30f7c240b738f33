//! The flag-set document as items: what the server stores, diffs, changes and sends, and
//! what the SDK and flagctl rebuild. One implementation of each operation, used by
//! flagd, the SDK and flagctl alike.
//!
//! A document is split into items: each flag, each shared evaluator (`$evaluators`),
//! and each other top-level key (`$schema`, `metadata`, …). A change to a set is a list
//! of [`Change`]s, one per item, applied with [`apply_changes`].

pub mod rollout;
mod text;

pub use text::DocumentText;
pub(crate) use text::parse as parse_member;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::wire::{Change, ItemKind};
use crate::{FlagSet, Problem, Strictness};

/// One item of a flag set.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// What it is.
    pub kind: ItemKind,
    /// Its key.
    pub key: String,
    /// Its place in the document: items are assembled in this order.
    pub position: i64,
    /// Its JSON.
    pub definition: Value,
}

/// Items keyed by kind and key.
pub type Items = BTreeMap<(ItemKind, String), Item>;

/// Splits a flagd document into items, in document order. A flag in the array form
/// (`"flags": [{"key": …}]`) loses its `key` member, which becomes the item's key.
pub fn items_of(doc: &Value) -> Vec<(ItemKind, String, Value)> {
    let mut out = Vec::new();
    let Value::Object(top) = doc else { return out };
    for (k, v) in top {
        match (k.as_str(), v) {
            ("flags", Value::Object(flags)) => {
                out.extend(
                    flags
                        .iter()
                        .map(|(fk, f)| (ItemKind::Flag, fk.clone(), f.clone())),
                );
            }
            ("flags", Value::Array(flags)) => {
                for f in flags {
                    if let Value::Object(o) = f {
                        let mut o = o.clone();
                        if let Some(Value::String(key)) = o.remove("key") {
                            out.push((ItemKind::Flag, key, Value::Object(o)));
                        }
                    }
                }
            }
            ("$evaluators", Value::Object(evs)) => {
                out.extend(
                    evs.iter()
                        .map(|(n, e)| (ItemKind::Evaluator, n.clone(), e.clone())),
                );
            }
            (_, v) => out.push((ItemKind::Top, k.clone(), v.clone())),
        }
    }
    out
}

/// The items of a document keyed and positioned as the store keeps them: what an import
/// of it would hold (to diff a file against a stored version before importing it).
pub fn items_in(doc: &Value) -> Items {
    items_of(doc)
        .into_iter()
        .enumerate()
        .map(|(i, (kind, key, definition))| {
            let item = Item {
                kind,
                key: key.clone(),
                position: i64::try_from(i).unwrap_or(i64::MAX),
                definition,
            };
            ((kind, key), item)
        })
        .collect()
}

/// Assembles the flagd document of a set of items: `$schema` first if present, then
/// `flags`, `$evaluators`, and the other top-level keys, each in item order.
pub fn assemble(items: &Items) -> Value {
    assemble_owned(items.clone())
}

/// [`assemble`], moving the definitions instead of copying them (a 10,000-flag head
/// read from the store becomes a document without a second copy).
pub fn assemble_owned(items: Items) -> Value {
    let mut sorted: Vec<Item> = items.into_values().collect();
    sorted.sort_by(|a, b| (a.position, a.kind, &a.key).cmp(&(b.position, b.kind, &b.key)));
    let mut schema = None;
    let mut flags = Map::new();
    let mut evaluators = Map::new();
    let mut others = Vec::new();
    for i in sorted {
        match i.kind {
            ItemKind::Flag => {
                flags.insert(i.key, i.definition);
            }
            ItemKind::Evaluator => {
                evaluators.insert(i.key, i.definition);
            }
            ItemKind::Top if i.key == "$schema" => schema = Some(i.definition),
            ItemKind::Top => others.push((i.key, i.definition)),
        }
    }
    let mut out = Map::new();
    if let Some(s) = schema {
        out.insert("$schema".into(), s);
    }
    out.insert("flags".into(), Value::Object(flags));
    if !evaluators.is_empty() {
        out.insert("$evaluators".into(), Value::Object(evaluators));
    }
    out.extend(others);
    Value::Object(out)
}

/// How an item differs between two sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Difference {
    /// Only in the second.
    Added,
    /// Only in the first.
    Removed,
    /// In both, with different definitions.
    Changed,
}

/// One item that differs between two sets, with its definition in each.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ItemDiff<'a> {
    /// What it is.
    pub kind: ItemKind,
    /// Its key.
    pub key: &'a str,
    /// How it differs.
    pub change: Difference,
    /// Its definition in the first set.
    pub before: Option<&'a Value>,
    /// Its definition in the second set.
    pub after: Option<&'a Value>,
}

/// Every item that differs from `a` to `b`, ordered by kind and key. Position alone is
/// not a difference.
pub fn diff<'a>(a: &'a Items, b: &'a Items) -> Vec<ItemDiff<'a>> {
    let mut keys: Vec<&(ItemKind, String)> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let before = a.get(k).map(|i| &i.definition);
            let after = b.get(k).map(|i| &i.definition);
            let change = match (before, after) {
                (None, Some(_)) => Difference::Added,
                (Some(_), None) => Difference::Removed,
                (Some(x), Some(y)) if x != y => Difference::Changed,
                _ => return None,
            };
            Some(ItemDiff {
                kind: k.0,
                key: &k.1,
                change,
                before,
                after,
            })
        })
        .collect()
}

/// Applies changes to a flagd document in place, as a stream's delta says: a changed
/// item keeps its place, a new one goes last, a removed one goes. How the SDK, the
/// server's cache of the head and the fuzzers follow deltas.
pub fn apply_changes(document: &mut Value, changes: &[Change]) {
    let Value::Object(top) = document else { return };
    for c in changes {
        let section = match c.kind {
            ItemKind::Flag => "flags",
            ItemKind::Evaluator => "$evaluators",
            ItemKind::Top => {
                match &c.definition {
                    Some(d) => {
                        top.insert(c.key.clone(), d.clone());
                    }
                    None => {
                        top.shift_remove(&c.key);
                    }
                }
                continue;
            }
        };
        let map = top
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = map {
            match &c.definition {
                Some(d) => {
                    m.insert(c.key.clone(), d.clone());
                }
                None => {
                    m.shift_remove(&c.key);
                }
            }
        }
    }
    if top
        .get("$evaluators")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        top.shift_remove("$evaluators");
    }
}

/// Validates one flag strictly, as a write of it is validated: in the context of the
/// set's shared evaluators, with problems at paths such as
/// `flags.new-checkout.defaultVariant`.
pub fn validate_flag(
    key: &str,
    definition: &Value,
    evaluators: &Map<String, Value>,
) -> Result<(), Vec<Problem>> {
    let mut flags = Map::new();
    flags.insert(key.to_owned(), definition.clone());
    let mut doc = Map::new();
    doc.insert("flags".into(), Value::Object(flags));
    if !evaluators.is_empty() {
        doc.insert("$evaluators".into(), Value::Object(evaluators.clone()));
    }
    FlagSet::parse(&Value::Object(doc), Strictness::Strict)
        .map(|_| ())
        .map_err(|e| e.0)
}

#[cfg(test)]
mod tests;
