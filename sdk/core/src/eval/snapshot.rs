//! Compiling a flag set into a [`Snapshot`], and evaluating it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::compile::{compile_flags, plain_owner, refs_of};
use super::detail::{Detail, ErrorCode, Reason, ValueType, integer_of};
use super::table::{CompiledFlag, FlagTable, Targeting};
use crate::context::EvaluationContext;
use crate::logic::{self, Env, Outcome, Val};
use crate::model::{FlagSet, SetRef, Strictness, read_isolated};
use crate::problem::{Problem, ValidationErrors};
use crate::wire::{Change, ItemKind};

/// A flag set compiled for evaluation: immutable, shareable across threads, and the only
/// thing evaluation reads. Compiling is the only way to get one.
///
/// ```
/// use flagd_core::{EvaluationContext, Snapshot};
/// let snap = Snapshot::from_json_str(r#"{"flags": {"new-checkout": {
///     "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
///     "targeting": {"fractional": [["on", 25], ["off", 75]]}}}}"#, 7).unwrap();
/// let user = EvaluationContext::new("user-42");
/// let on: bool = snap.enabled("new-checkout", &user);
/// let detail = snap.evaluate("new-checkout", &user);
/// assert_eq!(detail.version, 7);
/// assert_eq!(detail.value, Some(&serde_json::Value::Bool(on)));
/// ```
#[derive(Debug)]
pub struct Snapshot {
    version: u64,
    flags: FlagTable,
    set_metadata: Map<String, Json>,
    /// The set's `$evaluators`, for compiling a changed flag ([`Snapshot::with_changes`]).
    evaluators: Arc<Map<String, Json>>,
    empty_metadata: Map<String, Json>,
    problems: Vec<Problem>,
}

/// From this many bytes, [`Snapshot::from_json_str`] loads the text in parts
/// ([`Snapshot::load_text`]).
const LARGE_TEXT: usize = 256 * 1024;

/// Reading a document failed: it is not JSON, or not a flag set at all (a flag that
/// cannot be read does not fail the load, see [`Snapshot::load`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The document is not a flag set flagd would load.
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
}

impl Snapshot {
    /// Compiles a flag set. `version` is the flag-set version it was built from and is
    /// returned with every evaluation.
    ///
    /// Never fails: a flag that cannot be compiled (a targeting rule that cannot run or
    /// is larger than [`crate::limits::MAX_COMPILED_SIZE`], a `defaultVariant` that names
    /// no variant) or that the load set aside ([`FlagSet::broken`]) evaluates with
    /// reason `ERROR`, and is listed in [`Snapshot::problems`]; the other flags are
    /// served as usual. Each `$evaluators` entry is compiled once and shared by every
    /// reference to it.
    pub fn compile(set: &FlagSet, version: u64) -> Self {
        Self::compile_view(&set.view(), version)
    }

    fn compile_view(set: &SetRef<'_>, version: u64) -> Self {
        let (flags, problems) = compile_flags(set);
        Self::assemble(
            version,
            flags,
            problems,
            set.metadata().clone(),
            (*set.evaluators).clone(),
        )
    }

    /// A snapshot of compiled flags and their problems (sorted here).
    pub(super) fn assemble(
        version: u64,
        flags: Vec<Arc<super::table::CompiledFlag>>,
        mut problems: Vec<Problem>,
        set_metadata: Map<String, Json>,
        evaluators: Map<String, Json>,
    ) -> Self {
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            version,
            flags: FlagTable::new(flags.into_iter().collect()),
            set_metadata,
            evaluators: Arc::new(evaluators),
            empty_metadata: Map::new(),
            problems,
        }
    }

    /// This snapshot with `changes` applied (flagd's delta frame), as `version`: only
    /// the flags that changed are read and compiled, with the flags whose targeting
    /// names a changed `$evaluators` entry (directly or through another entry); every
    /// other compiled flag is shared with this snapshot. The result evaluates exactly as
    /// [`Snapshot::load`] of the document with the changes applied would.
    ///
    /// `definition` gives a flag's definition in that document (needed for the flags
    /// an evaluator change recompiles). `None` when the change is one only a whole load
    /// can apply (the flag-set `metadata`, which every flag's metadata merges, or
    /// `flags` or `$evaluators` replaced as one item); the caller then loads the
    /// document.
    ///
    /// ```
    /// use flagd_core::{EvaluationContext, Snapshot, wire::{Change, ItemKind}};
    /// let v1 = Snapshot::from_json_str(r#"{"flags": {"a": {"state": "ENABLED",
    ///     "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}"#, 1).unwrap();
    /// let off = Change { kind: ItemKind::Flag, key: "a".into(), definition: Some(serde_json::json!(
    ///     {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"})) };
    /// let v2 = v1.with_changes(&[off], 2, |_| None).unwrap();
    /// assert!(!v2.enabled("a", &EvaluationContext::default()));
    /// assert_eq!(v2.version(), 2);
    /// ```
    pub fn with_changes<'d>(
        &self,
        changes: &[Change],
        version: u64,
        definition: impl Fn(&str) -> Option<&'d Json>,
    ) -> Option<Self> {
        // Per flag, its last change in the list.
        let mut flag_changes: indexmap::IndexMap<&str, Option<&Json>> = Default::default();
        let mut evaluators: Option<Map<String, Json>> = None;
        let mut changed_evaluators: Vec<&str> = Vec::new();
        for c in changes {
            match c.kind {
                ItemKind::Flag => {
                    flag_changes.insert(&c.key, c.definition.as_ref());
                }
                ItemKind::Evaluator => {
                    let e = evaluators.get_or_insert_with(|| (*self.evaluators).clone());
                    match &c.definition {
                        Some(d) => {
                            e.insert(c.key.clone(), d.clone());
                        }
                        None => {
                            e.shift_remove(&c.key);
                        }
                    }
                    changed_evaluators.push(&c.key);
                }
                // Other top-level keys (`$schema`, …) change nothing that is evaluated;
                // the set's metadata changes every flag's, and a whole section as one
                // item is a whole new set.
                ItemKind::Top if matches!(c.key.as_str(), "metadata" | "flags" | "$evaluators") => {
                    return None;
                }
                ItemKind::Top => {}
            }
        }
        let evaluators = match evaluators {
            Some(e) => Arc::new(e),
            None => self.evaluators.clone(),
        };
        // Every entry that names a changed one, transitively.
        let mut dirty: HashSet<&str> = changed_evaluators.iter().copied().collect();
        loop {
            let before = dirty.len();
            for (name, body) in evaluators.iter() {
                if !dirty.contains(name.as_str()) {
                    let mut r = Vec::new();
                    refs_of(body, &mut r);
                    if r.iter().any(|n| dirty.contains(&**n)) {
                        dirty.insert(name);
                    }
                }
            }
            if dirty.len() == before {
                break;
            }
        }
        let changed: HashSet<&str> = flag_changes.keys().copied().collect();
        let mut recompile: Map<String, Json> = Map::new();
        for (key, def) in &flag_changes {
            if let Some(d) = def {
                recompile.insert((*key).to_owned(), (*d).clone());
            }
        }
        if !dirty.is_empty() {
            for f in self.flags.flags.iter() {
                if !changed.contains(&*f.key) && f.refs.iter().any(|r| dirty.contains(&**r)) {
                    recompile.insert(f.key.to_string(), definition(&f.key)?.clone());
                }
            }
        }
        // The changed flags read and compiled as a set of their own, with the whole
        // set's evaluators and metadata: the same reading and compiling as a whole load.
        // The evaluators go along only when they changed or a flag read again names
        // one: a toggle of a flag without `$ref` does not copy them (an allow list may
        // be large), and their problems then stay as they were.
        let with_evaluators = !changed_evaluators.is_empty()
            || recompile.values().any(|d| {
                let mut r = Vec::new();
                refs_of(d, &mut r);
                !r.is_empty()
            });
        let mut part = Map::new();
        if with_evaluators && !evaluators.is_empty() {
            part.insert("$evaluators".into(), Json::Object((*evaluators).clone()));
        }
        if !self.set_metadata.is_empty() {
            part.insert("metadata".into(), Json::Object(self.set_metadata.clone()));
        }
        part.insert("flags".into(), Json::Object(recompile));
        let part = Json::Object(part);
        let set = read_isolated(&part).ok()?;
        let (compiled, part_problems) = compile_flags(&set);

        // Chunks shared: replacing a flag copies its chunk, not the list.
        let mut flags = self.flags.flags.clone();
        let mut gone: Vec<usize> = flag_changes
            .iter()
            .filter(|(_, def)| def.is_none())
            .filter_map(|(key, _)| self.flags.index_of(key))
            .collect();
        let mut added = false;
        for f in compiled {
            match self.flags.index_of(&f.key) {
                // Never one of `gone`: a key's last change either deletes or defines it.
                Some(i) => {
                    flags.set(i, f);
                }
                None => {
                    flags.push(f);
                    added = true;
                }
            }
        }
        let table = if added || !gone.is_empty() {
            // Keys came or went: the slots are built again (the one O(flags) case).
            gone.sort_unstable();
            FlagTable::new(
                flags
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| gone.binary_search(i).is_err())
                    .map(|(_, f)| f.clone())
                    .collect(),
            )
        } else {
            self.flags.with_flags(flags)
        };

        // The problems of every flag read again, and of the evaluators, are replaced
        // by what reading them again found.
        let redone_keys: HashSet<&str> = changed
            .iter()
            .copied()
            .chain(set.flags.keys().copied())
            .chain(set.broken.keys().map(String::as_str))
            .collect();
        let quoted: Vec<String> = redone_keys
            .iter()
            .map(|k| crate::path::Path::root().key("flags").key(k).to_string())
            .filter(|p| !p.starts_with("flags."))
            .collect();
        let redone = |path: &str| {
            (with_evaluators && path.starts_with("$evaluators"))
                || plain_owner(path).is_some_and(|k| redone_keys.contains(k))
                || quoted.iter().any(|q| {
                    path.strip_prefix(q.as_str())
                        .is_some_and(|r| r.is_empty() || r.starts_with(['.', '[']))
                })
        };
        let mut problems: Vec<Problem> = self
            .problems
            .iter()
            .filter(|p| !redone(&p.path))
            .cloned()
            .chain(part_problems)
            .collect();
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Some(Self {
            version,
            flags: table,
            set_metadata: self.set_metadata.clone(),
            evaluators,
            empty_metadata: Map::new(),
            problems,
        })
    }

    /// Loads a document for evaluation, as the SDK does: leniently (as flagd loads
    /// files), with every flag isolated ([`FlagSet::parse_isolated`]): one that cannot
    /// be read or compiled evaluates with reason `ERROR` and is listed in
    /// [`Snapshot::problems`], and never blocks the rest. Fails only for a document that
    /// is not a flag set at all.
    pub fn load(document: &Json, version: u64) -> Result<Self, LoadError> {
        // Read in place and compiled: the read copy a `FlagSet` would be costs more
        // than compiling it (benchmarks.md section 9).
        let set = read_isolated(document)?;
        Ok(Self::compile_view(&set, version))
    }

    /// Parses and loads JSON text ([`Snapshot::load`]); text nested up to
    /// [`crate::limits::MAX_DECODE_DEPTH`] levels is read.
    pub fn from_json_str(text: &str, version: u64) -> Result<Self, LoadError> {
        if text.len() >= LARGE_TEXT
            && let Some(doc) = crate::document::DocumentText::parse(text)
        {
            return Self::load_text(&doc, version);
        }
        let json: Json = match crate::limits::from_slice_deep(text.as_bytes()) {
            Ok(v) => v,
            // Parsed again for the error's position and wording.
            Err(_) => {
                FlagSet::parse_str(text, Strictness::Lenient)?;
                return Err(LoadError::Invalid(ValidationErrors(vec![Problem {
                    path: String::new(),
                    message: "invalid JSON".into(),
                }])));
            }
        };
        Self::load(&json, version)
    }

    /// The flags that could not be loaded or compiled, and what is wrong with each
    /// (they evaluate with reason `ERROR`); empty when every flag loaded.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The flag-set version this snapshot was compiled from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The flag-set metadata.
    pub fn metadata(&self) -> &Map<String, Json> {
        &self.set_metadata
    }

    /// The number of flags.
    pub fn len(&self) -> usize {
        self.flags.flags.len()
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.flags.flags.is_empty()
    }

    /// Whether a flag exists.
    pub fn contains(&self, key: &str) -> bool {
        self.flags.get(key).is_some()
    }

    /// Flag keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.flags.flags.iter().map(|f| &*f.key)
    }

    /// Evaluates a flag with full details. Never fails and never panics: problems are
    /// reported as reason `ERROR` with an error code.
    #[inline]
    pub fn evaluate<'a>(&'a self, key: &str, ctx: &EvaluationContext) -> Detail<'a> {
        let Some(flag) = self.flags.get(key) else {
            return Detail {
                value: None,
                variant: None,
                reason: Reason::Error,
                error_code: Some(ErrorCode::FlagNotFound),
                error_message: Some(Cow::Borrowed("flag not found")),
                flag_metadata: &self.empty_metadata,
                version: self.version,
            };
        };
        self.evaluate_flag(flag, ctx)
    }

    /// Evaluates a flag and checks that its value has the requested type
    /// (`TYPE_MISMATCH` otherwise).
    pub fn evaluate_as<'a>(
        &'a self,
        key: &str,
        ctx: &EvaluationContext,
        ty: ValueType,
    ) -> Detail<'a> {
        let mut d = self.evaluate(key, ctx);
        if let Some(v) = d.value
            && !ty.accepts(v)
        {
            d.value = None;
            d.variant = None;
            d.reason = Reason::Error;
            d.error_code = Some(ErrorCode::TypeMismatch);
            d.error_message = Some(Cow::Borrowed(
                "the flag's value is not of the requested type",
            ));
        }
        d
    }

    #[inline]
    fn evaluate_flag<'a>(&'a self, flag: &'a CompiledFlag, ctx: &EvaluationContext) -> Detail<'a> {
        let mut d = Detail {
            value: None,
            variant: None,
            reason: Reason::Default,
            error_code: None,
            error_message: None,
            flag_metadata: &flag.metadata,
            version: self.version,
        };
        match self.decide(flag, ctx) {
            Decision::Chosen(reason, variant) => {
                d.reason = reason;
                if let Some(i) = variant {
                    d.variant = Some(&flag.variants.names[i]);
                    d.value = Some(&flag.variants.values[i]);
                }
            }
            Decision::Failed(code, message) => {
                d.reason = Reason::Error;
                d.error_code = Some(code);
                d.error_message = Some(message);
            }
        }
        d
    }

    /// The value a flag evaluates to (`None`: the caller's default), as
    /// [`Snapshot::evaluate`] gives it, without the rest of the detail: what the typed
    /// getters need.
    #[inline(always)]
    fn value_of<'a>(&'a self, key: &str, ctx: &EvaluationContext) -> Option<&'a Json> {
        let flag = self.flags.get(key)?;
        // A flag without targeting (a kill switch, a plain toggle) is decided here, in
        // the caller; the rest out of line, so that these few instructions are all the
        // caller inlines and they save no registers for the rules' evaluation.
        let variant = if flag.disabled {
            None
        } else if let Targeting::None = flag.targeting {
            flag.default_variant
        } else {
            return self.targeted_value_of(flag, ctx);
        };
        variant.map(|i| &flag.variants.values[i])
    }

    /// [`Snapshot::value_of`] of an enabled flag with targeting.
    #[inline(never)]
    fn targeted_value_of<'a>(
        &'a self,
        flag: &'a CompiledFlag,
        ctx: &EvaluationContext,
    ) -> Option<&'a Json> {
        match self.decide(flag, ctx) {
            Decision::Chosen(_, Some(i)) => Some(&flag.variants.values[i]),
            _ => None,
        }
    }

    /// Why a flag evaluates as it does, and to which of its variants. Inlined into its
    /// two callers: a call of its own costs a rollout a tenth more instructions.
    #[inline(always)]
    fn decide<'a>(&'a self, flag: &'a CompiledFlag, ctx: &EvaluationContext) -> Decision<'a> {
        if flag.disabled {
            return Decision::Chosen(Reason::Disabled, None);
        }
        if let Targeting::Split(f) = &flag.targeting
            && let Some(i) = f.quick_variant(ctx)
        {
            return Decision::Chosen(Reason::TargetingMatch, Some(i));
        }
        let env = Env::new(ctx, &flag.key);
        let outcome = match &flag.targeting {
            Targeting::None => {
                return match flag.default_variant {
                    Some(i) => Decision::Chosen(Reason::Static, Some(i)),
                    None => Decision::Chosen(Reason::Default, None),
                };
            }
            Targeting::Invalid(msg) => {
                return Decision::Failed(ErrorCode::ParseError, Cow::Borrowed(msg));
            }
            Targeting::Split(f) => f.outcome(&env),
            Targeting::Rule(e) => e.eval_outcome(&env),
        };
        // Where flagd's engine would have failed part-way (e.g. `cat` of a boolean).
        if let Some(why) = env.fault.get() {
            return Decision::Failed(ErrorCode::ParseError, Cow::Borrowed(why));
        }
        let result = match outcome {
            Outcome::Variant(i) => return Decision::Chosen(Reason::TargetingMatch, Some(i)),
            Outcome::Value(v) => v,
        };
        let num_key: String;
        let key: &str = match &result {
            Val::Null => return Decision::Chosen(Reason::Default, flag.default_variant),
            Val::Bool(true) => "true",
            Val::Bool(false) => "false",
            Val::Num(n) => {
                num_key = logic::format_number(*n);
                &num_key
            }
            other => match other.as_str() {
                Some(s) => s,
                None => {
                    return Decision::Failed(
                        ErrorCode::General,
                        Cow::Borrowed(
                            "targeting returned an array or object instead of a variant name",
                        ),
                    );
                }
            },
        };
        match flag.variants.find(key) {
            Some(i) => Decision::Chosen(Reason::TargetingMatch, Some(i)),
            None => Decision::Failed(
                ErrorCode::General,
                Cow::Owned(format!(
                    "targeting returned \"{key}\", which is not a variant of this flag"
                )),
            ),
        }
    }

    /// `true` only when the flag evaluates to the boolean `true`; anything else (missing
    /// flag, disabled, error, another type) is `false`.
    #[inline]
    pub fn enabled(&self, key: &str, ctx: &EvaluationContext) -> bool {
        matches!(self.value_of(key, ctx), Some(Json::Bool(true)))
    }

    /// The flag's boolean value, or `default`.
    pub fn bool_value(&self, key: &str, ctx: &EvaluationContext, default: bool) -> bool {
        self.value_of(key, ctx)
            .and_then(Json::as_bool)
            .unwrap_or(default)
    }

    /// The flag's string value, or `default`.
    pub fn string_value<'a>(
        &'a self,
        key: &str,
        ctx: &EvaluationContext,
        default: &'a str,
    ) -> &'a str {
        self.value_of(key, ctx)
            .and_then(Json::as_str)
            .unwrap_or(default)
    }

    /// The flag's integer value, or `default` (also when the value is not a whole number).
    pub fn int_value(&self, key: &str, ctx: &EvaluationContext, default: i64) -> i64 {
        self.value_of(key, ctx)
            .and_then(integer_of)
            .unwrap_or(default)
    }

    /// The flag's numeric value, or `default`.
    pub fn float_value(&self, key: &str, ctx: &EvaluationContext, default: f64) -> f64 {
        self.value_of(key, ctx)
            .and_then(Json::as_f64)
            .unwrap_or(default)
    }

    /// The flag's object value, or `default`.
    pub fn json_value(&self, key: &str, ctx: &EvaluationContext, default: Json) -> Json {
        match self.value_of(key, ctx) {
            Some(v @ Json::Object(_)) => v.clone(),
            _ => default,
        }
    }
}

/// How a flag evaluated: a reason and the variant chosen (`None`: the caller's default),
/// or an error.
enum Decision<'a> {
    Chosen(Reason, Option<usize>),
    Failed(ErrorCode, Cow<'a, str>),
}
