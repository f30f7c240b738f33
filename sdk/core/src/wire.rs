//! The stream protocol's messages (`docs/protocol.md`): one definition, produced by the
//! server and consumed by the SDK. Every message is one JSON text frame with a `type`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an item of a flag set is (see the store): a flag, a shared evaluator, or another
/// top-level key of the document such as `metadata`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// A flag, keyed by flag key.
    Flag,
    /// An entry of `$evaluators`, keyed by name.
    Evaluator,
    /// Another top-level key, such as `metadata` or `$schema`.
    Top,
}

/// One changed item: its new definition, or `None` when it was removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// What it is.
    pub kind: ItemKind,
    /// Its key.
    pub key: String,
    /// The new definition; `null` when removed.
    pub definition: Option<Value>,
}

/// A message from flagd to an SDK.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMsg {
    /// The whole flag set at `version`.
    Snapshot {
        /// The flag-set version.
        version: u64,
        /// The flagd document.
        document: Value,
    },
    /// The changes from version `from` to `version`.
    Delta {
        /// The version the changes apply to.
        from: u64,
        /// The version they make.
        version: u64,
        /// The changed items.
        changes: Vec<Change>,
        /// For a revert: the earlier version whose content `version` equals. An SDK that
        /// still holds that version's snapshot may swap it in instead of applying the
        /// changes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restores: Option<u64>,
    },
    /// A revert announced compactly: version `version` has the content of `restores`.
    /// An SDK that holds `from` and still keeps `restores` swaps it in; any other SDK
    /// reconnects with the version it holds and is sent what it misses. Keeps a revert
    /// of 10,000 flags a few bytes per connection.
    Restore {
        /// The version it follows.
        from: u64,
        /// The new version.
        version: u64,
        /// The earlier version whose content it has.
        restores: u64,
    },
    /// A heartbeat; the SDK answers with [`ClientMsg::Pong`].
    Ping,
    /// An answer to [`ClientMsg::Ping`].
    Pong,
}

/// A message from an SDK to flagd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMsg {
    /// The first message: who is connecting and which version it holds.
    Hello {
        /// A stable identifier of this SDK instance (process).
        instance: String,
        /// SDK name and version, e.g. `flagd-sdk-rust/0.1.0`.
        sdk: String,
        /// A host label.
        #[serde(default)]
        host: String,
        /// Free-form labels (service, region…).
        #[serde(default)]
        labels: serde_json::Map<String, Value>,
        /// The flag-set version it already holds, if any.
        #[serde(default)]
        version: Option<u64>,
    },
    /// The SDK has applied `version`.
    Ack {
        /// The applied version.
        version: u64,
    },
    /// A heartbeat; flagd answers with [`ServerMsg::Pong`].
    Ping,
    /// An answer to [`ServerMsg::Ping`].
    Pong,
}

/// Applies changes to a flagd document in place: the SDK's way to follow deltas. Items
/// keep their order; new ones go last.
pub fn apply_changes(document: &mut Value, changes: &[Change]) {
    let Value::Object(top) = document else { return };
    for c in changes {
        let (map, key) = match c.kind {
            ItemKind::Flag => (
                top.entry("flags")
                    .or_insert_with(|| Value::Object(Default::default())),
                &c.key,
            ),
            ItemKind::Evaluator => (
                top.entry("$evaluators")
                    .or_insert_with(|| Value::Object(Default::default())),
                &c.key,
            ),
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
        if let Value::Object(m) = map {
            match &c.definition {
                Some(d) => {
                    m.insert(key.clone(), d.clone());
                }
                None => {
                    m.shift_remove(key);
                }
            }
        }
    }
    if top
        .get("$evaluators")
        .and_then(Value::as_object)
        .is_some_and(serde_json::Map::is_empty)
    {
        top.shift_remove("$evaluators");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_are_tagged_json() {
        let m = ServerMsg::Delta {
            from: 1,
            version: 2,
            changes: vec![Change {
                kind: ItemKind::Flag,
                key: "a".into(),
                definition: None,
            }],
            restores: None,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"type":"delta","from":1,"version":2,"changes":[{"kind":"flag","key":"a","definition":null}]}"#
        );
        assert_eq!(serde_json::from_str::<ServerMsg>(&text).unwrap(), m);
        let hello: ClientMsg =
            serde_json::from_str(r#"{"type":"hello","instance":"i","sdk":"s"}"#).unwrap();
        assert!(matches!(hello, ClientMsg::Hello { version: None, .. }));
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn changes_apply_in_place() {
        let mut doc = json!({"flags": {"a": 1, "b": 2}, "metadata": {"x": 1}});
        apply_changes(
            &mut doc,
            &[
                Change {
                    kind: ItemKind::Flag,
                    key: "a".into(),
                    definition: None,
                },
                Change {
                    kind: ItemKind::Flag,
                    key: "c".into(),
                    definition: Some(json!(3)),
                },
                Change {
                    kind: ItemKind::Evaluator,
                    key: "e".into(),
                    definition: Some(json!({"==": [1, 1]})),
                },
                Change {
                    kind: ItemKind::Top,
                    key: "metadata".into(),
                    definition: None,
                },
            ],
        );
        assert_eq!(
            doc,
            json!({"flags": {"b": 2, "c": 3}, "$evaluators": {"e": {"==": [1, 1]}}})
        );
    }
}
