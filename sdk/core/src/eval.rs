//! Compiled snapshots and evaluation: the hot path.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;

use serde_json::{Map, Value as Json};

use crate::context::EvaluationContext;
use crate::context::Tag;
use crate::limits::MAX_COMPILED_SIZE;
use crate::logic::{self, CompileCx, Env, Expr, Outcome, Val};
use crate::model::{FlagSet, FlagState, Strictness};
use crate::problem::{Problem, ValidationErrors};

/// Why an evaluation produced its value (the OpenFeature reasons flagd uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum Reason {
    /// No targeting: the default variant.
    Static,
    /// Targeting chose a variant (a `fractional` split included).
    TargetingMatch,
    /// Targeting did not decide: the default variant, or the caller's default when the
    /// flag has none.
    Default,
    /// The flag is disabled: the caller's default.
    Disabled,
    /// Something went wrong: the caller's default, see the error code.
    Error,
}

impl Reason {
    /// The OpenFeature name, e.g. `TARGETING_MATCH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "STATIC",
            Self::TargetingMatch => "TARGETING_MATCH",
            Self::Default => "DEFAULT",
            Self::Disabled => "DISABLED",
            Self::Error => "ERROR",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, with the OpenFeature error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No flag with that key.
    FlagNotFound,
    /// The flag's value is not of the requested type.
    TypeMismatch,
    /// The targeting rule cannot run (unknown operator, missing `$ref`, `cat` of a
    /// boolean, an array or an object).
    ParseError,
    /// A targeting key was required and missing.
    TargetingKeyMissing,
    /// The context is not usable.
    InvalidContext,
    /// Anything else, e.g. targeting returned a variant the flag does not have.
    General,
}

impl ErrorCode {
    /// The OpenFeature name, e.g. `FLAG_NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FlagNotFound => "FLAG_NOT_FOUND",
            Self::TypeMismatch => "TYPE_MISMATCH",
            Self::ParseError => "PARSE_ERROR",
            Self::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            Self::InvalidContext => "INVALID_CONTEXT",
            Self::General => "GENERAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type a caller asks for, to detect `TYPE_MISMATCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// `true` / `false`.
    Boolean,
    /// A string.
    String,
    /// A whole number (a float with no fractional part is accepted).
    Integer,
    /// Any number.
    Float,
    /// A JSON object.
    Object,
}

impl ValueType {
    fn accepts(self, v: &Json) -> bool {
        match self {
            Self::Boolean => v.is_boolean(),
            Self::String => v.is_string(),
            Self::Integer => integer_of(v).is_some(),
            Self::Float => v.is_number(),
            Self::Object => v.is_object(),
        }
    }
}

/// A lossless integer reading of a JSON number: `10` and `10.0` are 10, `3.5` is not an
/// integer, and neither is a float beyond the exactly representable range.
fn integer_of(v: &Json) -> Option<i64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0).then_some(f as i64)
}

/// The full result of one evaluation. Borrows from the snapshot; building it does not
/// allocate unless an error message has to be composed.
#[derive(Clone, Debug, PartialEq)]
pub struct Detail<'a> {
    /// The variant's value; `None` means the caller's default applies (reasons
    /// `DISABLED`, `ERROR`, and `DEFAULT` for a flag without default variant).
    pub value: Option<&'a Json>,
    /// The variant's name, when a variant was chosen.
    pub variant: Option<&'a str>,
    /// Why.
    pub reason: Reason,
    /// What went wrong, when `reason` is `ERROR`.
    pub error_code: Option<ErrorCode>,
    /// A person-readable explanation of the error.
    pub error_message: Option<Cow<'a, str>>,
    /// Flag metadata merged over the flag-set metadata.
    pub flag_metadata: &'a Map<String, Json>,
    /// The flag-set version the snapshot was compiled from.
    pub version: u64,
}

/// The variants of one flag: names and values in document order.
#[derive(Debug)]
struct Variants {
    names: Box<[Box<str>]>,
    values: Box<[Json]>,
    /// Only for flags with many variants; a scan is faster for the usual two or three.
    /// Boxed so that the rarely used map does not widen every compiled flag.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Box<str>, usize, foldhash::fast::RandomState>>>,
}

impl Variants {
    fn new(map: &Map<String, Json>) -> Self {
        let names: Box<[Box<str>]> = map.keys().map(|k| k.as_str().into()).collect();
        let index = (names.len() > 8)
            .then(|| {
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), i))
                    .collect::<HashMap<_, _, _>>()
            })
            .map(Box::new);
        Self {
            names,
            values: map.values().cloned().collect(),
            index,
        }
    }

    #[inline]
    fn find(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(name).copied(),
            None => {
                let tag = Tag::of(name);
                self.names
                    .iter()
                    .position(|n| tag.same(name, Tag::of(n), n))
            }
        }
    }
}

#[derive(Debug)]
enum Targeting {
    None,
    /// The rule is a single `fractional` (the usual percentage rollout).
    Split(logic::Fractional),
    Rule(Expr),
    /// The rule cannot run; every evaluation is `PARSE_ERROR` with this message.
    Invalid(Box<str>),
}

#[derive(Debug)]
struct CompiledFlag {
    key_tag: Tag,
    disabled: bool,
    default_variant: Option<usize>,
    targeting: Targeting,
    variants: Variants,
    key: Box<str>,
    /// Boxed: only its address is needed on the hot path.
    metadata: Box<Map<String, Json>>,
}

/// Hashes a key's bytes with one `write`, without the length or terminator that `str`'s
/// `Hash` adds.
struct KeyBytes<'k>(&'k str);

impl std::hash::Hash for KeyBytes<'_> {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
    }
}

/// Flags by key: open addressing over full 64-bit hashes, so a lookup touches one
/// slot array and compares a key only when its whole hash matches.
#[derive(Debug)]
struct FlagTable {
    hasher: foldhash::fast::FixedState,
    /// `(hash, index + 1)`; index 0 marks an empty slot.
    slots: Box<[(u64, u32)]>,
    flags: Vec<CompiledFlag>,
}

impl FlagTable {
    fn new(flags: Vec<CompiledFlag>) -> Self {
        let seed = foldhash::fast::RandomState::default().hash_one(flags.len());
        let hasher = foldhash::fast::FixedState::with_seed(seed);
        // Load factor at most one half keeps probe sequences short.
        let cap = (flags.len() * 2).next_power_of_two().max(8);
        let mut slots = vec![(0u64, 0u32); cap].into_boxed_slice();
        for (i, f) in flags.iter().enumerate() {
            let h = hasher.hash_one(KeyBytes(&f.key));
            let mut at = (h as usize) & (cap - 1);
            while slots[at].1 != 0 {
                at = (at + 1) & (cap - 1);
            }
            slots[at] = (h, u32::try_from(i + 1).unwrap_or(u32::MAX));
        }
        Self {
            hasher,
            slots,
            flags,
        }
    }

    #[inline]
    fn get(&self, key: &str) -> Option<&CompiledFlag> {
        let h = self.hasher.hash_one(KeyBytes(key));
        let mask = self.slots.len() - 1;
        let mut at = (h as usize) & mask;
        loop {
            let (sh, ix) = self.slots[at];
            if ix == 0 {
                return None;
            }
            if sh == h {
                let f = &self.flags[ix as usize - 1];
                if Tag::of(key).same(key, f.key_tag, &f.key) {
                    return Some(f);
                }
            }
            at = (at + 1) & mask;
        }
    }
}

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
    empty_metadata: Map<String, Json>,
    problems: Vec<Problem>,
}

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
        let mut flags = Vec::with_capacity(set.flags.len() + set.broken().len());
        let mut problems: Vec<Problem> = set.problems().to_vec();
        let shared = logic::Shared::default();
        for (key, flag) in &set.flags {
            let variants = Variants::new(&flag.variants);
            let mut broken: Option<String> = None;
            let default_variant = match &flag.default_variant {
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
            let mut metadata = set.metadata.clone();
            if let Some(m) = &flag.metadata {
                for (k, v) in m {
                    if !v.is_null() {
                        metadata.insert(k.clone(), v.clone());
                    }
                }
            }
            flags.push(CompiledFlag {
                key: key.as_str().into(),
                key_tag: Tag::of(key),
                disabled: flag.state == FlagState::Disabled,
                variants,
                default_variant,
                targeting,
                metadata: Box::new(metadata),
            });
        }
        for (key, message) in set.broken() {
            if set.flags.contains_key(key) {
                continue;
            }
            flags.push(CompiledFlag {
                key: key.as_str().into(),
                key_tag: Tag::of(key),
                disabled: false,
                variants: Variants::new(&Map::new()),
                default_variant: None,
                targeting: Targeting::Invalid(message.as_str().into()),
                metadata: Box::new(set.metadata.clone()),
            });
        }
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            version,
            flags: FlagTable::new(flags),
            set_metadata: set.metadata.clone(),
            empty_metadata: Map::new(),
            problems,
        }
    }

    /// Loads a document for evaluation, as the SDK does: leniently (as flagd loads
    /// files), with every flag isolated ([`FlagSet::parse_isolated`]): one that cannot
    /// be read or compiled evaluates with reason `ERROR` and is listed in
    /// [`Snapshot::problems`], and never blocks the rest. Fails only for a document that
    /// is not a flag set at all.
    pub fn load(document: &Json, version: u64) -> Result<Self, LoadError> {
        let set = FlagSet::parse_isolated(document)?;
        Ok(Self::compile(&set, version))
    }

    /// Parses and loads JSON text ([`Snapshot::load`]); text nested up to
    /// [`crate::limits::MAX_DECODE_DEPTH`] levels is read.
    pub fn from_json_str(text: &str, version: u64) -> Result<Self, LoadError> {
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
        if flag.disabled {
            d.reason = Reason::Disabled;
            return d;
        }
        let env = Env::new(ctx, &flag.key);
        let outcome = match &flag.targeting {
            Targeting::None => {
                if let Some(i) = flag.default_variant {
                    d.reason = Reason::Static;
                    d.variant = Some(&flag.variants.names[i]);
                    d.value = Some(&flag.variants.values[i]);
                }
                return d;
            }
            Targeting::Invalid(msg) => {
                d.reason = Reason::Error;
                d.error_code = Some(ErrorCode::ParseError);
                d.error_message = Some(Cow::Borrowed(msg));
                return d;
            }
            Targeting::Split(f) => f.outcome(&env),
            Targeting::Rule(e) => e.eval_outcome(&env),
        };
        // Where flagd's engine would have failed part-way (e.g. `cat` of a boolean).
        if let Some(why) = env.fault.get() {
            d.reason = Reason::Error;
            d.error_code = Some(ErrorCode::ParseError);
            d.error_message = Some(Cow::Borrowed(why));
            return d;
        }
        let result = match outcome {
            Outcome::Variant(i) => {
                d.reason = Reason::TargetingMatch;
                d.variant = Some(&flag.variants.names[i]);
                d.value = Some(&flag.variants.values[i]);
                return d;
            }
            Outcome::Value(v) => v,
        };
        let num_key: String;
        let key: &str = match &result {
            Val::Null => {
                if let Some(i) = flag.default_variant {
                    d.variant = Some(&flag.variants.names[i]);
                    d.value = Some(&flag.variants.values[i]);
                }
                return d;
            }
            Val::Bool(true) => "true",
            Val::Bool(false) => "false",
            Val::Num(n) => {
                num_key = logic::format_number(*n);
                &num_key
            }
            other => match other.as_str() {
                Some(s) => s,
                None => {
                    d.reason = Reason::Error;
                    d.error_code = Some(ErrorCode::General);
                    d.error_message = Some(Cow::Borrowed(
                        "targeting returned an array or object instead of a variant name",
                    ));
                    return d;
                }
            },
        };
        match flag.variants.find(key) {
            Some(i) => {
                d.reason = Reason::TargetingMatch;
                d.variant = Some(&flag.variants.names[i]);
                d.value = Some(&flag.variants.values[i]);
            }
            None => {
                d.reason = Reason::Error;
                d.error_code = Some(ErrorCode::General);
                d.error_message = Some(Cow::Owned(format!(
                    "targeting returned \"{key}\", which is not a variant of this flag"
                )));
            }
        }
        d
    }

    /// `true` only when the flag evaluates to the boolean `true`; anything else (missing
    /// flag, disabled, error, another type) is `false`.
    #[inline]
    pub fn enabled(&self, key: &str, ctx: &EvaluationContext) -> bool {
        matches!(self.evaluate(key, ctx).value, Some(Json::Bool(true)))
    }

    /// The flag's boolean value, or `default`.
    pub fn bool_value(&self, key: &str, ctx: &EvaluationContext, default: bool) -> bool {
        self.evaluate(key, ctx)
            .value
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
        self.evaluate(key, ctx)
            .value
            .and_then(Json::as_str)
            .unwrap_or(default)
    }

    /// The flag's integer value, or `default` (also when the value is not a whole number).
    pub fn int_value(&self, key: &str, ctx: &EvaluationContext, default: i64) -> i64 {
        self.evaluate(key, ctx)
            .value
            .and_then(integer_of)
            .unwrap_or(default)
    }

    /// The flag's numeric value, or `default`.
    pub fn float_value(&self, key: &str, ctx: &EvaluationContext, default: f64) -> f64 {
        self.evaluate(key, ctx)
            .value
            .and_then(Json::as_f64)
            .unwrap_or(default)
    }

    /// The flag's object value, or `default`.
    pub fn json_value(&self, key: &str, ctx: &EvaluationContext, default: Json) -> Json {
        match self.evaluate(key, ctx).value {
            Some(v @ Json::Object(_)) => v.clone(),
            _ => default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap(doc: Json) -> Snapshot {
        let set = FlagSet::parse(&doc, Strictness::Lenient).unwrap();
        Snapshot::compile(&set, 3)
    }

    #[test]
    fn outcomes() {
        let s = snap(json!({
            "metadata": {"team": "web", "tier": 1},
            "flags": {
                "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"tier": 2}},
                "nodefault": {"state": "ENABLED", "variants": {"on": true}},
                "off": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"},
                "rule": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "b",
                         "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "a", {"if": [{"var": "x"}, "zzz", null]}]}},
                "bad": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": {"nope": []}},
                "num": {"state": "ENABLED", "variants": {"1": 10, "2.5": 20}, "targeting": {"var": "n"}}
            }
        }));
        let ctx = EvaluationContext::new("u");
        let d = s.evaluate("static", &ctx);
        assert_eq!(
            (d.value, d.variant, d.reason, d.version),
            (Some(&json!(true)), Some("on"), Reason::Static, 3)
        );
        assert_eq!(
            d.flag_metadata,
            json!({"team": "web", "tier": 2}).as_object().unwrap()
        );

        let d = s.evaluate("nodefault", &ctx);
        assert_eq!((d.value, d.reason), (None, Reason::Default));
        assert_eq!(s.evaluate("off", &ctx).reason, Reason::Disabled);
        assert!(!s.enabled("off", &ctx));

        let d = s.evaluate("missing", &ctx);
        assert_eq!(
            (d.reason, d.error_code),
            (Reason::Error, Some(ErrorCode::FlagNotFound))
        );

        let pro = EvaluationContext::new("u").with("plan", "pro");
        assert_eq!(s.evaluate("rule", &pro).variant, Some("a"));
        assert_eq!(s.evaluate("rule", &pro).reason, Reason::TargetingMatch);
        let d = s.evaluate("rule", &ctx);
        assert_eq!((d.variant, d.reason), (Some("b"), Reason::Default));
        let d = s.evaluate("rule", &ctx.clone().with("x", true));
        assert_eq!(
            (d.reason, d.error_code),
            (Reason::Error, Some(ErrorCode::General))
        );
        assert_eq!(
            d.error_message.as_deref(),
            Some("targeting returned \"zzz\", which is not a variant of this flag")
        );

        let d = s.evaluate("bad", &ctx);
        assert_eq!(
            (d.reason, d.error_code, d.value),
            (Reason::Error, Some(ErrorCode::ParseError), None)
        );

        assert_eq!(s.int_value("num", &ctx.clone().with("n", 1), 0), 10);
        assert_eq!(s.int_value("num", &ctx.clone().with("n", 2.5), 0), 20);
    }

    #[test]
    fn typed_getters() {
        let s = snap(json!({"flags": {
            "b": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
            "s": {"state": "ENABLED", "variants": {"x": "hello"}, "defaultVariant": "x"},
            "i": {"state": "ENABLED", "variants": {"x": 10.0}, "defaultVariant": "x"},
            "f": {"state": "ENABLED", "variants": {"x": 0.5}, "defaultVariant": "x"},
            "o": {"state": "ENABLED", "variants": {"x": {"a": 1}}, "defaultVariant": "x"}
        }}));
        let c = EvaluationContext::empty();
        assert!(s.enabled("b", &c));
        assert!(!s.enabled("s", &c));
        assert!(s.bool_value("b", &c, false));
        assert_eq!(s.string_value("s", &c, "d"), "hello");
        assert_eq!(s.string_value("b", &c, "d"), "d");
        assert_eq!(s.int_value("i", &c, 0), 10);
        assert_eq!(s.int_value("f", &c, 7), 7);
        assert_eq!(s.float_value("f", &c, 0.0), 0.5);
        assert_eq!(s.json_value("o", &c, json!(null)), json!({"a": 1}));
        let d = s.evaluate_as("s", &c, ValueType::Integer);
        assert_eq!(
            (d.reason, d.error_code),
            (Reason::Error, Some(ErrorCode::TypeMismatch))
        );
        assert_eq!(
            s.evaluate_as("i", &c, ValueType::Integer).reason,
            Reason::Static
        );
        assert_eq!(
            s.evaluate_as("f", &c, ValueType::Integer).error_code,
            Some(ErrorCode::TypeMismatch)
        );
    }
}
