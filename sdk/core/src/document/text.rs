//! A flag-set document's text taken apart without building it as a tree: what a large
//! bootstrap or cache file is loaded from (benchmarks.md section 9). Building the whole
//! document as `serde_json::Value`s costs more than reading and compiling it (a tree of
//! small allocations per flag, kept alive and freed later on another thread); from
//! here each flag is parsed just before it is read and dropped once it is compiled.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::limits::{MAX_DECODE_DEPTH, text_depth};

/// A flag-set document's text split into its top-level members, and the members of its
/// `flags` object, each still as text. A repeated key keeps its first place and its
/// last value, as a parse into a map does, so the parts assemble into the document
/// [`crate::limits::from_slice_deep`] parses.
///
/// ```
/// use flagd_core::document::DocumentText;
/// let text = r#"{"flags": {"a": {"state": "ENABLED"}, "b": {}, "a": {"state": "DISABLED"}}, "metadata": {}}"#;
/// let doc = DocumentText::parse(text).unwrap();
/// let flags = doc.flags.as_ref().unwrap();
/// assert_eq!(flags[0].0, "a");
/// assert_eq!(flags[0].1.get(), r#"{"state": "DISABLED"}"#);
/// assert_eq!(doc.to_value().unwrap(), flagd_core::limits::from_slice_deep::<serde_json::Value>(text.as_bytes()).unwrap());
/// ```
#[derive(Debug)]
pub struct DocumentText<'a> {
    /// The top-level members in document order (`flags` among them).
    pub members: Vec<(String, &'a RawValue)>,
    /// When `flags` is an object: its members, in document order.
    pub flags: Option<Vec<(String, &'a RawValue)>>,
}

impl<'a> DocumentText<'a> {
    /// Splits JSON text. `None` when it is not JSON, is nested deeper than
    /// [`MAX_DECODE_DEPTH`], or is not an object: the caller parses it whole, and so
    /// reports the error a whole parse reports.
    pub fn parse(text: &'a str) -> Option<Self> {
        if text_depth(text.as_bytes(), MAX_DECODE_DEPTH) > MAX_DECODE_DEPTH {
            return None;
        }
        let members = crate::parallel::members_of(text)?;
        let flags = members
            .iter()
            .find(|(k, _)| k == "flags")
            .and_then(|(_, raw)| {
                raw.get()
                    .starts_with('{')
                    .then(|| crate::parallel::members_of(raw.get()))
            })
            .flatten();
        Some(Self { members, flags })
    }

    /// A top-level member's text.
    pub fn member(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The document, parsed whole.
    pub fn to_value(&self) -> Option<Value> {
        let mut top = Map::with_capacity(self.members.len());
        for (k, raw) in &self.members {
            top.insert(k.clone(), parse(raw)?);
        }
        Some(Value::Object(top))
    }
}

/// Parses one member's text (already checked: valid, and not too deep).
pub(crate) fn parse(raw: &RawValue) -> Option<Value> {
    crate::parallel::parse_one(raw.get())
}
