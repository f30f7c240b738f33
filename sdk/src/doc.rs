//! The flag-set document as flagd sent it, kept for the cache file, for the flags an
//! evaluator change recompiles, and with each kept version for reverts. Its flags and
//! evaluators are each shared (`Arc`) between the versions that have them, so applying
//! a change copies pointers, never definitions, and keeping more versions costs little.
//! A leaf: it imports no other module of this crate.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use flagd_core::document::{DocumentText, apply_changes};
use flagd_core::shared_vec::SharedVec;
use flagd_core::wire::{Change, ItemKind};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// One item's definition: as parsed, or as the text of the file it was loaded from
/// (a bootstrap or cache file: a string per flag instead of a tree of values), parsed
/// when first needed.
#[derive(Debug)]
enum Def {
    Parsed(Value),
    Text(Box<RawValue>, OnceLock<Value>),
}

impl Def {
    fn value(&self) -> &Value {
        match self {
            Def::Parsed(v) => v,
            // The text was checked when the file was loaded (valid, depth within the
            // limit), so it parses; Null stands in should it not.
            Def::Text(raw, v) => v.get_or_init(|| {
                flagd_core::limits::from_slice_deep(raw.get().as_bytes()).unwrap_or(Value::Null)
            }),
        }
    }
}

impl PartialEq for Def {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Def::Text(a, _), Def::Text(b, _)) if a.get() == b.get() => true,
            _ => self.value() == other.value(),
        }
    }
}

impl Serialize for Def {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Def::Parsed(v) => v.serialize(s),
            Def::Text(raw, _) => raw.serialize(s),
        }
    }
}

/// Items of one section by key, in document order. Versions share the items in
/// chunks ([`SharedVec`]) and the index by key while no key comes or goes, so that a
/// change to one flag of 10,000 copies one chunk and the chunk pointers, not the section.
#[derive(Clone, Debug, Default, PartialEq)]
struct Items {
    list: SharedVec<(Arc<str>, Arc<Def>)>,
    /// Where each key is in `list`.
    index: Arc<HashMap<Arc<str>, usize, foldhash::fast::RandomState>>,
}

impl Items {
    fn new() -> Self {
        Self::default()
    }

    fn get(&self, key: &str) -> Option<&Arc<Def>> {
        let i = *self.index.get(key)?;
        self.list.get(i).map(|(_, d)| d)
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<Def>)> {
        self.list.iter().map(|(k, d)| (k, d))
    }

    fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.list.iter().map(|(k, _)| k)
    }

    /// Replaces a key's definition in its place, or appends it (as `IndexMap::insert`).
    /// Only a new key copies the index.
    fn insert(&mut self, key: Arc<str>, def: Arc<Def>) {
        match self.index.get(&*key) {
            Some(&i) => {
                self.list.set(i, (key, def));
            }
            None => {
                Arc::make_mut(&mut self.index).insert(key.clone(), self.list.len());
                self.list.push((key, def));
            }
        }
    }

    /// Removes a key, keeping the order of the rest (as `IndexMap::shift_remove`).
    fn shift_remove(&mut self, key: &str) {
        if self.index.contains_key(key) {
            *self = self
                .iter()
                .filter(|(k, _)| &***k != key)
                .map(|(k, d)| (k.clone(), d.clone()))
                .collect();
        }
    }
}

impl FromIterator<(Arc<str>, Arc<Def>)> for Items {
    /// A repeated key keeps its first place and takes its last definition, as a JSON
    /// object's parse does.
    fn from_iter<I: IntoIterator<Item = (Arc<str>, Arc<Def>)>>(iter: I) -> Self {
        let mut list: Vec<(Arc<str>, Arc<Def>)> = Vec::new();
        let mut index: HashMap<Arc<str>, usize, foldhash::fast::RandomState> = HashMap::default();
        for (k, d) in iter {
            match index.get(&*k) {
                Some(&i) => list[i].1 = d,
                None => {
                    index.insert(k.clone(), list.len());
                    list.push((k, d));
                }
            }
        }
        Self {
            list: list.into_iter().collect(),
            index: Arc::new(index),
        }
    }
}

/// One top-level entry: a section held as items, or any other value.
#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Flags,
    Evaluators,
    Other(Value),
}

/// A flag-set document whose `flags` and `$evaluators` objects are held item by item.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Doc {
    /// The top-level keys in document order.
    top: Vec<(String, Entry)>,
    flags: Items,
    evaluators: Items,
}

fn items_of(m: Map<String, Value>) -> Items {
    m.into_iter()
        .map(|(k, v)| (Arc::from(k.as_str()), Arc::new(Def::Parsed(v))))
        .collect()
}

impl Doc {
    fn empty() -> Self {
        Self {
            top: Vec::new(),
            flags: Items::new(),
            evaluators: Items::new(),
        }
    }

    /// Takes a document apart. `flags` and `$evaluators` are held item by item when they
    /// are objects; anything else (a flag array, a document that is not a flag set) is
    /// kept as it came.
    pub(crate) fn from_value(doc: Value) -> Self {
        let mut d = Self::empty();
        let Value::Object(top) = doc else {
            d.top.push((String::new(), Entry::Other(doc)));
            return d;
        };
        for (k, v) in top {
            let entry = d.entry(&k, v);
            d.top.push((k, entry));
        }
        d
    }

    /// [`Doc::from_value`] of the document `text` holds, its flags kept as their text.
    /// `None` if a member does not parse (the text was checked: it does).
    pub(crate) fn from_text(text: &DocumentText<'_>) -> Option<Self> {
        let mut d = Self::empty();
        for (k, raw) in &text.members {
            let entry = match (k.as_str(), &text.flags) {
                ("flags", Some(flags)) => {
                    d.flags = flags
                        .iter()
                        .map(|(k, raw)| {
                            let def = Def::Text((*raw).to_owned(), OnceLock::new());
                            (Arc::from(k.as_str()), Arc::new(def))
                        })
                        .collect();
                    Entry::Flags
                }
                _ => {
                    let v = flagd_core::limits::from_slice_deep(raw.get().as_bytes()).ok()?;
                    d.entry(k, v)
                }
            };
            d.top.push((k.clone(), entry));
        }
        Some(d)
    }

    /// Takes in one top-level member.
    fn entry(&mut self, key: &str, v: Value) -> Entry {
        match (key, v) {
            ("flags", Value::Object(m)) => {
                self.flags = items_of(m);
                Entry::Flags
            }
            ("$evaluators", Value::Object(m)) => {
                self.evaluators = items_of(m);
                Entry::Evaluators
            }
            (_, v) => Entry::Other(v),
        }
    }

    /// Whether the document is an object (anything else is kept under an empty key).
    fn is_object(&self) -> bool {
        !matches!(self.top.as_slice(), [(k, Entry::Other(_))] if k.is_empty())
    }

    fn has(&self, e: &Entry) -> bool {
        self.top.iter().any(|(_, x)| x == e)
    }

    /// The document whole, as JSON.
    pub(crate) fn to_value(&self) -> Value {
        if !self.is_object() {
            return self.top.first().map_or(Value::Null, |(_, e)| match e {
                Entry::Other(v) => v.clone(),
                _ => Value::Null,
            });
        }
        let section = |items: &Items| {
            Value::Object(
                items
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.value().clone()))
                    .collect(),
            )
        };
        Value::Object(
            self.top
                .iter()
                .map(|(k, e)| {
                    let v = match e {
                        Entry::Flags => section(&self.flags),
                        Entry::Evaluators => section(&self.evaluators),
                        Entry::Other(v) => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect(),
        )
    }

    /// A flag's definition.
    pub(crate) fn flag(&self, key: &str) -> Option<&Value> {
        self.flags.get(key).map(|v| v.value())
    }

    /// This document with `changes` applied, as `flagd_core::document::apply_changes`
    /// applies them to the whole document, sharing every item they do not touch.
    pub(crate) fn with_changes(&self, changes: &[Change]) -> Self {
        let whole_sections = changes
            .iter()
            .any(|c| c.kind == ItemKind::Top && matches!(c.key.as_str(), "flags" | "$evaluators"));
        let flags_elsewhere = self
            .top
            .iter()
            .any(|(k, e)| k == "flags" && matches!(e, Entry::Other(_)));
        let evaluators_elsewhere = self
            .top
            .iter()
            .any(|(k, e)| k == "$evaluators" && matches!(e, Entry::Other(_)));
        if !self.is_object() || whole_sections || flags_elsewhere || evaluators_elsewhere {
            // Rare shapes: done on the whole document.
            let mut v = self.to_value();
            apply_changes(&mut v, changes);
            return Self::from_value(v);
        }
        let mut d = self.clone();
        for c in changes {
            let (items, entry) = match c.kind {
                ItemKind::Flag => (&mut d.flags, Entry::Flags),
                ItemKind::Evaluator => (&mut d.evaluators, Entry::Evaluators),
                ItemKind::Top => {
                    match &c.definition {
                        Some(v) => match d.top.iter_mut().find(|(k, _)| *k == c.key) {
                            Some((_, e)) => *e = Entry::Other(v.clone()),
                            None => d.top.push((c.key.clone(), Entry::Other(v.clone()))),
                        },
                        None => d.top.retain(|(k, _)| *k != c.key),
                    }
                    continue;
                }
            };
            match &c.definition {
                Some(v) => {
                    items.insert(Arc::from(c.key.as_str()), Arc::new(Def::Parsed(v.clone())));
                }
                None => {
                    items.shift_remove(c.key.as_str());
                }
            }
            if !d.top.iter().any(|(_, e)| *e == entry) {
                let key = if entry == Entry::Flags {
                    "flags"
                } else {
                    "$evaluators"
                };
                d.top.push((key.to_owned(), entry));
            }
        }
        if d.has(&Entry::Evaluators) && d.evaluators.is_empty() {
            d.top.retain(|(_, e)| *e != Entry::Evaluators);
        }
        d
    }

    /// The flag keys whose definitions differ between two documents, sorted.
    pub(crate) fn changed_flags(&self, other: &Self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .flags
            .keys()
            .chain(other.flags.keys())
            .filter(|k| match (self.flags.get(k), other.flags.get(k)) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b) && a != b,
                _ => true,
            })
            .map(|k| k.to_string())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Writes a section's items as one JSON object.
struct Section<'a>(&'a Items);

impl Serialize for Section<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            m.serialize_entry(&**k, &**v)?;
        }
        m.end()
    }
}

impl Serialize for Doc {
    /// The document as flagd sent it, without assembling it first (the cache file).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.is_object() {
            return self.to_value().serialize(s);
        }
        let mut m = s.serialize_map(Some(self.top.len()))?;
        for (k, e) in &self.top {
            match e {
                Entry::Flags => m.serialize_entry(k, &Section(&self.flags))?,
                Entry::Evaluators => m.serialize_entry(k, &Section(&self.evaluators))?,
                Entry::Other(v) => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(kind: ItemKind, key: &str, definition: Option<Value>) -> Change {
        Change {
            kind,
            key: key.into(),
            definition,
        }
    }

    /// Every change applied item by item gives what `apply_changes` gives on the whole
    /// document, written in the same order.
    #[test]
    fn changes_apply_as_on_the_whole_document() {
        let docs = [
            json!({"$schema": "s", "flags": {"a": {"state": "ENABLED"}, "b": {"state": "DISABLED"}},
                   "$evaluators": {"e": {"in": ["x", {"var": "y"}]}}, "metadata": {"team": "t"}}),
            json!({"flags": {}}),
            json!({"flags": [{"key": "a"}]}),
            json!({"metadata": {}}),
            json!(5),
        ];
        let lists = [
            vec![change(
                ItemKind::Flag,
                "a",
                Some(json!({"state": "DISABLED"})),
            )],
            vec![
                change(ItemKind::Flag, "a", None),
                change(ItemKind::Flag, "c", Some(json!(1))),
            ],
            vec![change(ItemKind::Evaluator, "e", None)],
            vec![change(ItemKind::Evaluator, "f", Some(json!({"var": "z"})))],
            vec![change(
                ItemKind::Top,
                "metadata",
                Some(json!({"team": "u"})),
            )],
            vec![change(ItemKind::Top, "$schema", None)],
            vec![change(ItemKind::Top, "flags", Some(json!({"z": {}})))],
            vec![
                change(ItemKind::Top, "$evaluators", None),
                change(ItemKind::Flag, "b", None),
            ],
        ];
        for doc in &docs {
            for changes in &lists {
                let mut want = doc.clone();
                apply_changes(&mut want, changes);
                let text = doc.to_string();
                let from_text = DocumentText::parse(&text).map(|t| Doc::from_text(&t).unwrap());
                let parsed = Doc::from_value(doc.clone());
                assert_eq!(from_text.is_some(), doc.is_object());
                for d in std::iter::once(parsed).chain(from_text) {
                    assert_eq!(d, Doc::from_value(doc.clone()), "{doc}");
                    let got = d.with_changes(changes);
                    assert_eq!(got.to_value(), want, "{doc} {changes:?}");
                    assert_eq!(
                        serde_json::to_string(&got).unwrap(),
                        serde_json::to_string(&want).unwrap(),
                        "{doc} {changes:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn unchanged_items_are_shared_and_changed_flags_are_found() {
        let d1 = Doc::from_value(
            json!({"flags": {"a": {"state": "ENABLED"}, "b": {"state": "ENABLED"}}}),
        );
        let d2 = d1.with_changes(&[change(
            ItemKind::Flag,
            "a",
            Some(json!({"state": "DISABLED"})),
        )]);
        assert!(Arc::ptr_eq(
            d1.flags.get("b").unwrap(),
            d2.flags.get("b").unwrap()
        ));
        assert_eq!(d1.changed_flags(&d2), ["a"]);
        assert_eq!(d2.flag("a"), Some(&json!({"state": "DISABLED"})));
        let d3 = d2.with_changes(&[change(
            ItemKind::Flag,
            "a",
            Some(json!({"state": "ENABLED"})),
        )]);
        assert!(
            d1.changed_flags(&d3).is_empty(),
            "equal definitions are unchanged"
        );
        // Kept as text: compared by value, and parsed once when needed.
        let text = r#"{"flags": {"a": {"state":  "ENABLED"}, "b": {"state": "ENABLED"}}}"#;
        let t = Doc::from_text(&DocumentText::parse(text).unwrap()).unwrap();
        assert!(
            matches!(&**t.flags.get("a").unwrap(), Def::Text(raw, _) if raw.get() == r#"{"state":  "ENABLED"}"#)
        );
        assert!(t.changed_flags(&d1).is_empty());
        assert_eq!(t.changed_flags(&d2), ["a"]);
        assert_eq!(t.flag("a"), Some(&json!({"state": "ENABLED"})));
    }
}
