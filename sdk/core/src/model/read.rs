//! Reading a document: its structure, and the schema checks that go with it.

use serde_json::{Map, Value};

use super::flag::FlagState;
use super::flag_set::FlagSet;
use super::view::{Evaluators, FlagRef, Order, SetRef};
use crate::context::json_type;
use crate::limits;
use crate::path::Path;
use crate::problem::{Checker, Problem, ValidationErrors};

/// How strictly a document is checked when it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// Accept what flagd itself accepts: only invalid JSON, an undecodable `flags`, a
    /// `defaultVariant` that names no variant and an empty `$evaluators` entry are
    /// errors. Schema violations are left to fail (as `null` or `PARSE_ERROR`) when a
    /// flag is evaluated, exactly as in flagd.
    Lenient,
    /// What flagd will accept into a new version: the flagd JSON schema plus the checks
    /// it cannot express (variant references, `$ref` targets, operator arguments).
    /// Every problem is reported at once.
    Strict,
}

impl FlagSet {
    /// Parses a document for evaluation, as the SDK and the server load what they serve:
    /// leniently, and one flag that cannot be read never blocks the others. Such flags
    /// are listed in [`FlagSet::broken`] (they evaluate with reason `ERROR`), and an
    /// evaluator that cannot be read is left out (flags referencing it fail to
    /// compile). Fails only when the document as a whole is unusable: not an object, or
    /// `flags` or `$evaluators` of the wrong type.
    pub fn parse_isolated(json: &Value) -> Result<Self, ValidationErrors> {
        read_isolated(json).map(|set| set.to_set())
    }
}

/// [`FlagSet::parse_isolated`], borrowed from the document: what loading for evaluation
/// compiles, without copying the document first.
pub(crate) fn read_isolated(json: &Value) -> Result<SetRef<'_>, ValidationErrors> {
    let mut ck = Checker {
        strict: false,
        isolate: true,
        problems: Vec::new(),
    };
    match read_view(json, &mut ck) {
        Some(mut set) if ck.problems.is_empty() => {
            set.problems.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(set)
        }
        _ => Err(ValidationErrors(ck.problems)),
    }
}

impl<'de> serde::Deserialize<'de> for FlagSet {
    /// Deserializes leniently, as flagd loads a file.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let mut ck = Checker {
            strict: false,
            isolate: false,
            problems: Vec::new(),
        };
        let set = read_set(&v, &mut ck);
        ck.finish(set).map_err(serde::de::Error::custom)
    }
}

/// Below this many flags a set is read on one thread.
const READ_PART: usize = 2_000;

/// Reads a document's structure into a flag set, with the schema checks that go with
/// reading it (soft ones count only when `ck.strict`). The strict checks of the whole
/// (limits, targeting rules) are not made here but by `validate`, which runs after this.
pub(crate) fn read_set(json: &Value, ck: &mut Checker) -> Option<FlagSet> {
    read_view(json, ck).map(|set| set.to_set())
}

/// [`read_set`], borrowed from `json`.
fn read_view<'a>(json: &'a Value, ck: &mut Checker) -> Option<SetRef<'a>> {
    let root = Path::root();
    let Value::Object(obj) = json else {
        ck.hard(
            &root,
            format!(
                "a flag set must be a JSON object, found {}",
                json_type(json)
            ),
        );
        return None;
    };
    let mut set = SetRef::empty(
        obj.keys().map(String::as_str).collect(),
        ["$evaluators", "metadata"]
            .into_iter()
            .filter(|k| obj.get(*k).is_some_and(Value::is_null))
            .collect(),
    );

    if let Some(ev) = obj.get("$evaluators") {
        let path = root.key("$evaluators");
        match ev {
            Value::Object(m) => {
                let mut evaluators = Evaluators::Borrowed(m);
                for (name, body) in m {
                    let p = path.key(name);
                    let before = ck.problems.len();
                    if ck.strict
                        && let Err(e) = limits::check_key(name)
                    {
                        ck.hard(&p, format!("an evaluator name {e}"));
                    }
                    match body {
                        Value::Object(b) if b.is_empty() => {
                            ck.hard(&p, "an evaluator must not be an empty rule {}");
                        }
                        _ => {}
                    }
                    if ck.isolate && ck.problems.len() > before {
                        set.problems.extend(ck.problems.drain(before..));
                        if let Evaluators::Borrowed(m) = evaluators {
                            evaluators = Evaluators::Owned(m.clone());
                        }
                        if let Evaluators::Owned(e) = &mut evaluators {
                            e.shift_remove(name);
                        }
                    }
                }
                set.evaluators = evaluators;
            }
            Value::Null => {}
            other => ck.hard(
                &path,
                format!(
                    "must be an object of named rules, found {}",
                    json_type(other)
                ),
            ),
        }
    }

    if let Some(md) = obj.get("metadata") {
        let path = root.key("metadata");
        if let Some(m) = parse_metadata(md, &path, ck) {
            set.metadata = Some(m);
        }
    }

    match obj.get("flags") {
        None => ck.hard(&root.key("flags"), "is required"),
        Some(Value::Object(flags)) => {
            // Each flag is read on its own, so a large set is read on several cores;
            // what was found is then taken in document order, as on one thread.
            let entries: Vec<(&String, &Value)> = flags.iter().collect();
            let (strict, isolate) = (ck.strict, ck.isolate);
            let parts = crate::parallel::parts(entries.len(), READ_PART);
            let read = crate::parallel::map_parts(&entries, parts, |part| {
                let mut ck = Checker {
                    strict,
                    isolate,
                    problems: Vec::new(),
                };
                let flags_path = root.key("flags");
                part.iter()
                    .map(|&(key, flag)| {
                        let p = flags_path.key(key);
                        if ck.strict
                            && let Err(e) = limits::check_key(key)
                        {
                            ck.hard(&p, format!("a flag key {e}"));
                        }
                        let parsed = parse_flag(flag, &p, &mut ck, false);
                        (key.as_str(), parsed, std::mem::take(&mut ck.problems))
                    })
                    .collect::<Vec<_>>()
            });
            set.flags.reserve(entries.len());
            for (key, parsed, found) in read.into_iter().flatten() {
                let before = ck.problems.len();
                ck.problems.extend(found);
                if ck.isolate && set_aside(&mut set, key, ck, before) {
                    continue;
                }
                if let Some(f) = parsed {
                    set.flags.insert(key, f);
                }
            }
        }
        Some(Value::Array(flags)) => {
            set.flags_as_array = true;
            for (i, flag) in flags.iter().enumerate() {
                let p = root.key("flags").index(i);
                let key = match flag.get("key") {
                    Some(Value::String(k)) if !k.is_empty() => k.as_str(),
                    Some(Value::String(_)) => {
                        ck.hard(&p.key("key"), "a flag key must not be empty");
                        continue;
                    }
                    Some(other) => {
                        ck.hard(
                            &p.key("key"),
                            format!("must be a string, found {}", json_type(other)),
                        );
                        continue;
                    }
                    None => {
                        ck.hard(&p.key("key"), "is required when flags is an array");
                        continue;
                    }
                };
                if set.flags.contains_key(key) {
                    ck.hard(&p.key("key"), format!("duplicate flag key \"{key}\""));
                    continue;
                }
                let before = ck.problems.len();
                if ck.strict
                    && let Err(e) = limits::check_key(key)
                {
                    ck.hard(&p.key("key"), format!("a flag key {e}"));
                }
                let parsed = parse_flag(flag, &p, ck, true);
                if ck.isolate && set_aside(&mut set, key, ck, before) {
                    continue;
                }
                if let Some(f) = parsed {
                    set.flags.insert(key, f);
                }
            }
        }
        Some(other) => ck.hard(
            &root.key("flags"),
            format!(
                "must be an object of flags keyed by flag key (or an array of flags), found {}",
                json_type(other)
            ),
        ),
    }

    for (k, v) in obj {
        if !matches!(k.as_str(), "flags" | "$evaluators" | "metadata") {
            set.extra.push((k, v));
        }
    }

    Some(set)
}

/// Isolating load: moves the problems found since `before` to the set's list and marks
/// the flag broken. Returns whether it was.
fn set_aside(set: &mut SetRef<'_>, key: &str, ck: &mut Checker, before: usize) -> bool {
    if ck.problems.len() == before {
        return false;
    }
    let found: Vec<Problem> = ck.problems.drain(before..).collect();
    let message = found
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    set.broken.insert(key.to_owned(), message);
    set.problems.extend(found);
    true
}

fn parse_metadata<'a>(
    md: &'a Value,
    path: &Path,
    ck: &mut Checker,
) -> Option<&'a Map<String, Value>> {
    match md {
        Value::Object(m) => {
            for (k, v) in m {
                if ck.strict
                    && let Err(e) = limits::check_key(k)
                {
                    ck.hard(&path.key(k), format!("a metadata key {e}"));
                }
                if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                    ck.soft(
                        &path.key(k),
                        format!(
                            "metadata values must be strings, numbers or booleans, found {}",
                            json_type(v)
                        ),
                    );
                }
            }
            Some(m)
        }
        Value::Null => None,
        other => {
            ck.hard(
                path,
                format!("must be an object, found {}", json_type(other)),
            );
            None
        }
    }
}

fn parse_flag<'a>(
    json: &'a Value,
    path: &Path,
    ck: &mut Checker,
    array_form: bool,
) -> Option<FlagRef<'a>> {
    let Value::Object(obj) = json else {
        ck.hard(
            path,
            format!("a flag must be an object, found {}", json_type(json)),
        );
        return None;
    };
    let before = ck.problems.len();

    let state = match obj.get("state") {
        Some(Value::String(s)) => {
            let st = FlagState::parse(s);
            if let FlagState::Other(o) = &st {
                ck.soft(
                    &path.key("state"),
                    format!("\"{o}\" is not a state (ENABLED, DISABLED)"),
                );
            }
            st
        }
        None => {
            ck.soft(&path.key("state"), "is required (ENABLED or DISABLED)");
            FlagState::Other(String::new())
        }
        Some(other) => {
            ck.hard(
                &path.key("state"),
                format!(
                    "must be \"ENABLED\" or \"DISABLED\", found {}",
                    json_type(other)
                ),
            );
            FlagState::Other(String::new())
        }
    };

    let variants = match obj.get("variants") {
        Some(Value::Object(v)) => {
            let vp = path.key("variants");
            if v.is_empty() {
                ck.soft(&vp, "a flag needs at least one variant");
            }
            let mut first: Option<(&str, &'static str)> = None;
            for (name, value) in v {
                if ck.strict
                    && let Err(e) = limits::check_key(name)
                {
                    ck.hard(&vp.key(name), format!("a variant name {e}"));
                }
                let ty = match value {
                    Value::Bool(_) => "boolean",
                    Value::String(_) => "string",
                    Value::Number(_) => "number",
                    Value::Object(_) => "object",
                    other => {
                        ck.soft(
                            &vp.key(name),
                            format!(
                                "a variant must be a boolean, string, number or object, found {}",
                                json_type(other)
                            ),
                        );
                        continue;
                    }
                };
                match first {
                    None => first = Some((name, ty)),
                    Some((fname, fty)) if fty != ty => ck.soft(
                        &vp.key(name),
                        format!("is a {ty} but variant \"{fname}\" is a {fty}: all variants of a flag must have one type"),
                    ),
                    Some(_) => {}
                }
            }
            Some(v)
        }
        None | Some(Value::Null) => {
            ck.soft(&path.key("variants"), "is required");
            None
        }
        Some(other) => {
            ck.hard(
                &path.key("variants"),
                format!(
                    "must be an object of variant name to value, found {}",
                    json_type(other)
                ),
            );
            None
        }
    };

    let (default_variant, default_variant_null) = match obj.get("defaultVariant") {
        None => (None, false),
        Some(Value::Null) => (None, true),
        Some(Value::String(d)) => {
            if !variants.is_some_and(|v| v.contains_key(d)) {
                ck.hard(
                    &path.key("defaultVariant"),
                    format!(
                        "\"{d}\" is not a variant ({})",
                        variants
                            .into_iter()
                            .flat_map(|v| v.keys())
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            (Some(d.as_str()), false)
        }
        Some(other) => {
            ck.hard(
                &path.key("defaultVariant"),
                format!("must be a variant name or null, found {}", json_type(other)),
            );
            (None, false)
        }
    };

    let targeting = match obj.get("targeting") {
        None => None,
        Some(t) => {
            if !matches!(t, Value::Object(_)) {
                ck.soft(
                    &path.key("targeting"),
                    format!(
                        "must be a JsonLogic rule object or {{}}, found {}",
                        json_type(t)
                    ),
                );
            }
            Some(t)
        }
    };

    let metadata = obj
        .get("metadata")
        .and_then(|m| parse_metadata(m, &path.key("metadata"), ck));

    let mut extra = Vec::new();
    for (k, v) in obj {
        match k.as_str() {
            "state" | "variants" | "defaultVariant" | "targeting" | "metadata" => {}
            "key" if array_form => {}
            _ => {
                ck.soft(
                    &path.key(k),
                    "is not a flag property (state, variants, defaultVariant, targeting, metadata)",
                );
                extra.push((k.as_str(), v));
            }
        }
    }

    if !ck.strict && ck.problems.len() > before {
        return None;
    }
    Some(FlagRef {
        state,
        variants,
        default_variant,
        default_variant_null,
        targeting,
        metadata,
        metadata_null: obj.get("metadata").is_some_and(Value::is_null),
        extra,
        order: Order::Json(obj),
    })
}
