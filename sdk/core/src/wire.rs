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
        /// The identity of the store the version comes from (random, made when the
        /// store was created): version numbers are only comparable within one store.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store: Option<String>,
        /// When the version was committed (ms since the Unix epoch): with the store
        /// identity it names the version's content, so that a store restored from a
        /// backup, which hands out the same numbers again, is told apart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
        /// Replace what is held even when this version is not newer: what the SDK said
        /// it holds comes from another store, or from a history the store no longer has.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
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
        /// When `version` was committed (ms since the Unix epoch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
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
        /// When `version` was committed (ms since the Unix epoch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
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
        /// The identity of the store that version came from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store: Option<String>,
        /// When that version was committed, as flagd sent it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
    },
    /// The SDK has applied `version`.
    Ack {
        /// The applied version.
        version: u64,
        /// The flags of that version the SDK could not load or compile (they evaluate
        /// with reason `ERROR`), with what is wrong; empty when every flag loaded.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        problems: Vec<crate::Problem>,
    },
    /// The SDK could not read a message (or the flag set in it): flagd sends a fresh
    /// snapshot, once per version, and shows the reason in the fleet view.
    Resync {
        /// What went wrong.
        reason: String,
    },
    /// The SDK is closing for good (`Client::close`): flagd forgets the instance
    /// instead of showing it unreachable.
    Goodbye,
    /// A heartbeat; flagd answers with [`ServerMsg::Pong`].
    Ping,
    /// An answer to [`ServerMsg::Ping`].
    Pong,
}

/// The websocket close code flagd sends when the SDK key of a stream was revoked: the
/// SDK stops reconnecting quickly with a key that will not work again.
pub const CLOSE_REVOKED: u16 = 4001;

/// Decodes a message from flagd as the SDK does: nested up to
/// [`crate::limits::MAX_DECODE_DEPTH`] levels (above the 128 a default decoder reads), so
/// that everything flagd may have stored decodes.
pub fn decode_server(text: &[u8]) -> Result<ServerMsg, String> {
    crate::limits::from_slice_deep(text)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            at: None,
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
}
