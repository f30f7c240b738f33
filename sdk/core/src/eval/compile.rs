//! Compiling the flags of a set: each flag's targeting, variants and metadata, and the
//! `$evaluators` its targeting names (what an evaluator change recompiles).

use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::table::{CompiledFlag, Targeting, Variants};
use crate::context::Tag;
use crate::limits::MAX_COMPILED_SIZE;
use crate::logic::{self, CompileCx};
use crate::model::{FlagRef, FlagState, SetRef};
use crate::problem::Problem;

/// Every flag of a set compiled (see [`Snapshot::compile`]), and the set's problems with
/// those of compiling. A large set is compiled on the machine's cores, in parts of
/// [`PART`] flags or more: an SDK starting from a 10,000-flag file evaluates its first
/// flag after that (benchmarks.md section 9).
pub(super) fn compile_flags(set: &SetRef<'_>) -> (Vec<Arc<CompiledFlag>>, Vec<Problem>) {
    let mut flags = Vec::with_capacity(set.flags.len() + set.broken.len());
    let mut problems: Vec<Problem> = set.problems.clone();
    let entries: Vec<(&str, &FlagRef<'_>)> = set.flags.iter().map(|(k, f)| (*k, f)).collect();
    let done = crate::parallel::map_parts(
        &entries,
        crate::parallel::parts(entries.len(), PART),
        |part| {
            let (mut f, mut p) = (Vec::with_capacity(part.len()), Vec::new());
            compile_part(set, part, &mut f, &mut p);
            (f, p)
        },
    );
    for (f, p) in done {
        flags.extend(f);
        problems.extend(p);
    }
    for (key, message) in &set.broken {
        if set.flags.contains_key(key.as_str()) {
            continue;
        }
        flags.push(Arc::new(CompiledFlag {
            key: key.as_str().into(),
            key_tag: Tag::of(key),
            disabled: false,
            variants: Variants::new(&Map::new()),
            default_variant: None,
            targeting: Targeting::Invalid(message.as_str().into()),
            metadata: Box::new(set.metadata().clone()),
            refs: Box::new([]),
        }));
    }
    (flags, problems)
}

/// Below this many flags a set is compiled on one thread: starting threads costs more.
const PART: usize = 2_000;

/// Compiles `part` of a set's flags into `flags`, their problems into `problems`. Each
/// part compiles the `$evaluators` it uses once.
fn compile_part(
    set: &SetRef<'_>,
    part: &[(&str, &FlagRef<'_>)],
    flags: &mut Vec<Arc<CompiledFlag>>,
    problems: &mut Vec<Problem>,
) {
    let shared = logic::Shared::default();
    for &(key, flag) in part {
        let variants = Variants::new(flag.variants());
        let mut broken: Option<String> = None;
        let default_variant = match flag.default_variant {
            None => None,
            Some(d) => {
                let found = variants.find(d);
                if found.is_none() {
                    broken = Some(format!(
                        "default variant \"{d}\" is not one of the flag's variants"
                    ));
                }
                found
            }
        };
        let mut refs = Vec::new();
        if let Some(rule) = flag.effective_targeting() {
            refs_of(rule, &mut refs);
        }
        let targeting = match (broken, flag.effective_targeting()) {
            (Some(msg), _) => Targeting::Invalid(msg.into()),
            (None, None) => Targeting::None,
            (None, Some(rule))
                if logic::rule_size(rule, &set.evaluators, &shared, MAX_COMPILED_SIZE)
                    > MAX_COMPILED_SIZE =>
            {
                Targeting::Invalid(
                    format!("targeting compiles to more than {MAX_COMPILED_SIZE} nodes").into(),
                )
            }
            (None, Some(rule)) => {
                let cx = CompileCx {
                    flag_key: Some(key),
                    evaluators: &set.evaluators,
                    shared: &shared,
                };
                match logic::compile(rule, &cx) {
                    Ok(mut e) => {
                        logic::resolve_variants(&mut e, &|name| variants.find(name));
                        match e.into_fractional() {
                            Ok(f) => Targeting::Split(f),
                            Err(e) => Targeting::Rule(e),
                        }
                    }
                    Err(e) => Targeting::Invalid(e.0.into()),
                }
            }
        };
        if let Targeting::Invalid(msg) = &targeting {
            problems.push(Problem {
                path: crate::path::Path::root().key("flags").key(key).to_string(),
                message: msg.to_string(),
            });
        }
        let mut metadata = set.metadata().clone();
        if let Some(m) = flag.metadata {
            for (k, v) in m {
                if !v.is_null() {
                    metadata.insert(k.clone(), v.clone());
                }
            }
        }
        flags.push(Arc::new(CompiledFlag {
            key: (*key).into(),
            key_tag: Tag::of(key),
            disabled: flag.state == FlagState::Disabled,
            variants,
            default_variant,
            targeting,
            metadata: Box::new(metadata),
            refs: refs.into(),
        }));
    }
}

/// The `$evaluators` names a rule refers to with `{"$ref": name}`.
pub(super) fn refs_of(rule: &Json, out: &mut Vec<Box<str>>) {
    match rule {
        Json::Object(m) => {
            if let Some(Json::String(name)) = m.get("$ref")
                && !out.iter().any(|r| **r == **name)
            {
                out.push(name.as_str().into());
            }
            for v in m.values() {
                refs_of(v, out);
            }
        }
        Json::Array(a) => a.iter().for_each(|v| refs_of(v, out)),
        _ => {}
    }
}

/// The flag a problem's path is about, when its key is written plainly
/// (`flags.<key>…`; a key with other characters is written `flags["…"]`).
pub(super) fn plain_owner(path: &str) -> Option<&str> {
    let r = path.strip_prefix("flags.")?;
    let end = r.find(['.', '[']).unwrap_or(r.len());
    Some(&r[..end])
}
