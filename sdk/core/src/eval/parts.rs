//! Loading a large document from its text in parts ([`Snapshot::load_text`]): each part
//! of the flags is parsed, read and compiled on its own core, and its parsed JSON is
//! dropped as soon as the part is compiled, on the thread that built it.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::compile::compile_flags;
use super::snapshot::{LoadError, Snapshot};
use super::table::CompiledFlag;
use crate::document::{DocumentText, parse_member};
use crate::model::read_isolated;
use crate::problem::{Problem, ValidationErrors};

/// Below this many flags a document is loaded whole on the calling thread.
const PART: usize = 2_000;

/// Flags parsed, read and compiled at a time within a part.
const CHUNK: usize = 64;

/// What one part gave: its flags in document order, the flags it set aside, its
/// problems, and (from the first part) the set's metadata and evaluators.
struct Part {
    flags: Vec<Arc<CompiledFlag>>,
    aside: Vec<Arc<CompiledFlag>>,
    problems: Vec<Problem>,
    metadata: Map<String, Value>,
    evaluators: Map<String, Value>,
}

fn not_json() -> LoadError {
    LoadError::Invalid(ValidationErrors(vec![Problem {
        path: String::new(),
        message: "invalid JSON".into(),
    }]))
}

/// Whether a problem belongs to one flag (every part reports the others).
fn of_a_flag(p: &Problem) -> bool {
    p.path.starts_with("flags.") || p.path.starts_with("flags[")
}

impl Snapshot {
    /// [`Snapshot::load`] of the document `text` holds, with the same result, without
    /// building the document: a large `flags` object is loaded in parts on the
    /// machine's cores, each flag parsed just before it is read. What a large bootstrap
    /// or cache file is loaded with.
    ///
    /// ```
    /// use flagd_core::{EvaluationContext, Snapshot, document::DocumentText};
    /// let text = r#"{"flags": {"a": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}}"#;
    /// let snap = Snapshot::load_text(&DocumentText::parse(text).unwrap(), 3).unwrap();
    /// assert!(snap.enabled("a", &EvaluationContext::default()));
    /// ```
    pub fn load_text(text: &DocumentText<'_>, version: u64) -> Result<Self, LoadError> {
        match &text.flags {
            Some(flags) if flags.len() >= 2 * PART => load_in_parts(text, version, PART, CHUNK),
            _ => Self::load(&text.to_value().ok_or_else(not_json)?, version),
        }
    }
}

/// [`Snapshot::load_text`] in parts of at least `least` flags, `chunk` flags at a time
/// (the fuzz target splits every document to the single flag, and checks that it loads
/// as it does whole).
pub(crate) fn load_in_parts(
    text: &DocumentText<'_>,
    version: u64,
    least: usize,
    chunk: usize,
) -> Result<Snapshot, LoadError> {
    let Some(flags) = text.flags.as_ref().filter(|f| !f.is_empty()) else {
        return Snapshot::load(&text.to_value().ok_or_else(not_json)?, version);
    };
    let parts = crate::parallel::parts(flags.len(), least);
    // The document without its flags, which each part reads with its own.
    let mut base = Map::with_capacity(text.members.len());
    for (k, raw) in &text.members {
        let v = match k.as_str() {
            "flags" => Value::Object(Map::new()),
            _ => parse_member(raw).ok_or_else(not_json)?,
        };
        base.insert(k.clone(), v);
    }
    let done = crate::parallel::map_parts(flags, parts, |part| {
        crate::parallel::on_this_thread(|| {
            let mut out = Part {
                flags: Vec::with_capacity(part.len()),
                aside: Vec::new(),
                problems: Vec::new(),
                metadata: Map::new(),
                evaluators: Map::new(),
            };
            // A few flags at a time, so that what is parsed is still in the cache
            // when it is read and compiled, and its memory is reused by the next.
            for chunk in part.chunks(chunk.max(1)) {
                let mut own = Map::with_capacity(chunk.len());
                for (k, raw) in chunk {
                    own.insert(k.clone(), parse_member(raw).ok_or_else(not_json)?);
                }
                let mut doc = base.clone();
                doc.insert("flags".to_owned(), Value::Object(own));
                let doc = Value::Object(doc);
                let set = read_isolated(&doc)?;
                let (mut compiled, mut problems) = compile_flags(&set);
                out.aside.extend(compiled.split_off(set.flags.len()));
                out.flags.extend(compiled);
                if std::ptr::eq(chunk.as_ptr(), flags.as_ptr()) {
                    out.metadata = set.metadata().clone();
                    out.evaluators = (*set.evaluators).clone();
                } else {
                    problems.retain(of_a_flag);
                }
                out.problems.extend(problems);
            }
            Ok(out)
        })
    });
    let mut done = done.into_iter().collect::<Result<Vec<Part>, LoadError>>()?;
    let (metadata, evaluators) = match done.first_mut() {
        Some(p) => (
            std::mem::take(&mut p.metadata),
            std::mem::take(&mut p.evaluators),
        ),
        None => (Map::new(), Map::new()),
    };
    let mut compiled = Vec::with_capacity(flags.len());
    let mut aside = Vec::new();
    let mut problems = Vec::new();
    for p in done {
        compiled.extend(p.flags);
        aside.extend(p.aside);
        problems.extend(p.problems);
    }
    compiled.extend(aside);
    Ok(Snapshot::assemble(
        version, compiled, problems, metadata, evaluators,
    ))
}
