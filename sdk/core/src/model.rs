//! The flag-set document in flagd's JSON format: reading its structure, and writing it
//! back without losing key order or unknown keys.
//!
//! The entry points that read at a chosen [`Strictness`] (`FlagSet::parse`,
//! `FlagSet::parse_str`, `FlagSet::validate`) are in `validate`, which runs the strict
//! checks of the whole after `read_set`: the model never calls back into validation.

use indexmap::IndexMap;
use serde_json::{Map, Value};

pub use crate::problem::{Problem, ValidationErrors};

use crate::context::json_type;
use crate::limits;
use crate::path::Path;
use crate::problem::Checker;

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

/// A flag's `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagState {
    /// `"ENABLED"`.
    Enabled,
    /// `"DISABLED"`: the flag evaluates to the caller's default with reason `DISABLED`.
    Disabled,
    /// Any other string, kept for the round trip; flagd evaluates it as enabled.
    Other(String),
}

impl FlagState {
    /// The JSON string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Enabled => "ENABLED",
            Self::Disabled => "DISABLED",
            Self::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "ENABLED" => Self::Enabled,
            "DISABLED" => Self::Disabled,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// The JSON type shared by a flag's variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VariantType {
    /// All variants are booleans.
    Boolean,
    /// All variants are strings.
    String,
    /// All variants are numbers.
    Number,
    /// All variants are objects.
    Object,
    /// No variants, or variants of several types (only a lenient load allows this).
    Mixed,
}

/// One flag: its state, variants, default variant, targeting and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Flag {
    /// `ENABLED` or `DISABLED`.
    pub state: FlagState,
    /// Variant name to value, in document order.
    pub variants: Map<String, Value>,
    /// The variant served when targeting does not decide; `None` means the caller's
    /// code default.
    pub default_variant: Option<String>,
    /// The JsonLogic targeting rule; `None` (or `{}`) means no targeting.
    pub targeting: Option<Value>,
    /// Flag metadata, returned with every evaluation (over the flag-set metadata).
    pub metadata: Option<Map<String, Value>>,
    /// `defaultVariant` was written as an explicit `null`.
    default_variant_null: bool,
    /// `metadata` was written as an explicit `null`.
    metadata_null: bool,
    /// Properties flagd does not know, kept for the round trip.
    extra: Map<String, Value>,
    /// Property names in document order.
    order: Vec<String>,
}

impl Flag {
    /// A flag with the given state and variants and nothing else.
    pub fn new(state: FlagState, variants: Map<String, Value>) -> Self {
        Self {
            state,
            variants,
            default_variant: None,
            targeting: None,
            metadata: None,
            default_variant_null: false,
            metadata_null: false,
            extra: Map::new(),
            order: Vec::new(),
        }
    }

    /// Sets the default variant.
    pub fn with_default_variant(mut self, variant: impl Into<String>) -> Self {
        self.default_variant = Some(variant.into());
        self
    }

    /// Sets the targeting rule.
    pub fn with_targeting(mut self, rule: Value) -> Self {
        self.targeting = Some(rule);
        self
    }

    /// The flag's targeting rule, unless it is absent or `{}`.
    pub fn effective_targeting(&self) -> Option<&Value> {
        match &self.targeting {
            Some(Value::Object(m)) if m.is_empty() => None,
            Some(Value::Null) | None => None,
            Some(t) => Some(t),
        }
    }

    /// The JSON type of the variants.
    pub fn variant_type(&self) -> VariantType {
        let mut ty = None;
        for v in self.variants.values() {
            let t = match v {
                Value::Bool(_) => VariantType::Boolean,
                Value::String(_) => VariantType::String,
                Value::Number(_) => VariantType::Number,
                Value::Object(_) => VariantType::Object,
                _ => return VariantType::Mixed,
            };
            match ty {
                None => ty = Some(t),
                Some(prev) if prev != t => return VariantType::Mixed,
                Some(_) => {}
            }
        }
        ty.unwrap_or(VariantType::Mixed)
    }

    /// The flag as JSON, keys in their original order (new keys in flagd's usual order).
    pub fn to_json(&self) -> Value {
        self.to_json_with_key(None)
    }

    fn to_json_with_key(&self, key: Option<&str>) -> Value {
        let mut out = Map::new();
        let put = |out: &mut Map<String, Value>, name: &str| {
            if out.contains_key(name) {
                return;
            }
            let v = match name {
                "key" => key.map(|k| Value::String(k.to_owned())),
                "state" => Some(Value::String(self.state.as_str().to_owned())),
                "variants" => Some(Value::Object(self.variants.clone())),
                "defaultVariant" => match &self.default_variant {
                    Some(d) => Some(Value::String(d.clone())),
                    None if self.default_variant_null => Some(Value::Null),
                    None => None,
                },
                "targeting" => self.targeting.clone(),
                "metadata" => match &self.metadata {
                    Some(m) => Some(Value::Object(m.clone())),
                    None if self.metadata_null => Some(Value::Null),
                    None => None,
                },
                other => self.extra.get(other).cloned(),
            };
            if let Some(v) = v {
                out.insert(name.to_owned(), v);
            }
        };
        for name in &self.order {
            put(&mut out, name);
        }
        for name in [
            "key",
            "state",
            "variants",
            "defaultVariant",
            "targeting",
            "metadata",
        ] {
            put(&mut out, name);
        }
        for name in self.extra.keys() {
            put(&mut out, name);
        }
        Value::Object(out)
    }
}

/// A flagd flag-set document: flags, shared `$evaluators` and flag-set metadata.
///
/// Reading and writing back keeps the meaning, the order of keys and unknown top-level
/// keys such as `$schema`.
///
/// ```
/// use flagd_core::{FlagSet, Strictness};
/// let doc = r#"{"$schema": "https://flagd.dev/schema/v0/flags.json",
///   "flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
///   "defaultVariant": "off"}}}"#;
/// let set = FlagSet::parse_str(doc, Strictness::Strict).unwrap();
/// assert_eq!(set.flags["new-checkout"].default_variant.as_deref(), Some("off"));
/// let back = set.to_json();
/// assert_eq!(back, serde_json::from_str::<serde_json::Value>(doc).unwrap());
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FlagSet {
    /// Flag key to flag, in document order.
    pub flags: IndexMap<String, Flag>,
    /// Shared targeting rules, referenced from targeting as `{"$ref": "<name>"}`.
    pub evaluators: Map<String, Value>,
    /// Flag-set metadata (string, number or boolean values).
    pub metadata: Map<String, Value>,
    /// `flags` was written as an array of flags with `key`.
    flags_as_array: bool,
    /// Top-level keys flagd does not know, such as `$schema`.
    extra: Map<String, Value>,
    /// Top-level key names in document order.
    order: Vec<String>,
    /// Flags an isolating load could not read, with what is wrong with each; they
    /// evaluate with reason `ERROR`.
    broken: IndexMap<String, String>,
    /// Problems an isolating load set aside (broken flags, unusable evaluators).
    problems: Vec<Problem>,
    /// `$evaluators` or `metadata` written as an explicit `null`, kept for the round trip.
    nulls: Vec<String>,
}

impl FlagSet {
    /// An empty flag set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a document for evaluation, as the SDK and the server load what they serve:
    /// leniently, and one flag that cannot be read never blocks the others. Such flags
    /// are listed in [`FlagSet::broken`] (they evaluate with reason `ERROR`), and an
    /// evaluator that cannot be read is left out (flags referencing it fail to
    /// compile). Fails only when the document as a whole is unusable: not an object, or
    /// `flags` or `$evaluators` of the wrong type.
    pub fn parse_isolated(json: &Value) -> Result<Self, ValidationErrors> {
        let mut ck = Checker {
            strict: false,
            isolate: true,
            problems: Vec::new(),
        };
        match read_set(json, &mut ck) {
            Some(mut set) if ck.problems.is_empty() => {
                set.problems.sort_by(|a, b| a.path.cmp(&b.path));
                Ok(set)
            }
            _ => Err(ValidationErrors(ck.problems)),
        }
    }

    /// Flags that an isolating load ([`FlagSet::parse_isolated`]) could not read, with
    /// what is wrong with each.
    pub fn broken(&self) -> &IndexMap<String, String> {
        &self.broken
    }

    /// What an isolating load set aside, with JSON paths.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The document as JSON, keys in their original order.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        let flags = || {
            if self.flags_as_array {
                Value::Array(
                    self.flags
                        .iter()
                        .map(|(k, f)| f.to_json_with_key(Some(k)))
                        .collect(),
                )
            } else {
                Value::Object(
                    self.flags
                        .iter()
                        .map(|(k, f)| (k.clone(), f.to_json()))
                        .collect(),
                )
            }
        };
        let put = |out: &mut Map<String, Value>, name: &str| {
            if out.contains_key(name) {
                return;
            }
            let v = match name {
                "flags" => Some(flags()),
                "$evaluators" if self.evaluators.is_empty() && self.was_null(name) => {
                    Some(Value::Null)
                }
                "metadata" if self.metadata.is_empty() && self.was_null(name) => Some(Value::Null),
                "$evaluators"
                    if !self.evaluators.is_empty() || self.order.iter().any(|k| k == name) =>
                {
                    Some(Value::Object(self.evaluators.clone()))
                }
                "metadata" if !self.metadata.is_empty() || self.order.iter().any(|k| k == name) => {
                    Some(Value::Object(self.metadata.clone()))
                }
                "$evaluators" | "metadata" => None,
                other => self.extra.get(other).cloned(),
            };
            if let Some(v) = v {
                out.insert(name.to_owned(), v);
            }
        };
        for name in &self.order {
            put(&mut out, name);
        }
        for name in ["flags", "$evaluators", "metadata"] {
            put(&mut out, name);
        }
        for name in self.extra.keys() {
            put(&mut out, name);
        }
        Value::Object(out)
    }
}

impl FlagSet {
    fn was_null(&self, key: &str) -> bool {
        self.nulls.iter().any(|k| k == key)
    }
}

impl serde::Serialize for FlagSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
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

/// Reads a document's structure into a flag set, with the schema checks that go with
/// reading it (soft ones count only when `ck.strict`). The strict checks of the whole
/// (limits, targeting rules) are not made here but by `validate`, which runs after this.
pub(crate) fn read_set(json: &Value, ck: &mut Checker) -> Option<FlagSet> {
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
    let mut set = FlagSet {
        order: obj.keys().cloned().collect(),
        nulls: ["$evaluators", "metadata"]
            .into_iter()
            .filter(|k| obj.get(*k).is_some_and(Value::is_null))
            .map(str::to_owned)
            .collect(),
        ..FlagSet::default()
    };

    if let Some(ev) = obj.get("$evaluators") {
        let path = root.key("$evaluators");
        match ev {
            Value::Object(m) => {
                let mut evaluators = m.clone();
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
                        evaluators.shift_remove(name);
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
            set.metadata = m;
        }
    }

    match obj.get("flags") {
        None => ck.hard(&root.key("flags"), "is required"),
        Some(Value::Object(flags)) => {
            for (key, flag) in flags {
                let p = root.key("flags").key(key);
                let before = ck.problems.len();
                if ck.strict
                    && let Err(e) = limits::check_key(key)
                {
                    ck.hard(&p, format!("a flag key {e}"));
                }
                let parsed = parse_flag(flag, &p, ck, false);
                if ck.isolate && set_aside(&mut set, key, ck, before) {
                    continue;
                }
                if let Some(f) = parsed {
                    set.flags.insert(key.clone(), f);
                }
            }
        }
        Some(Value::Array(flags)) => {
            set.flags_as_array = true;
            for (i, flag) in flags.iter().enumerate() {
                let p = root.key("flags").index(i);
                let key = match flag.get("key") {
                    Some(Value::String(k)) if !k.is_empty() => k.clone(),
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
                if set.flags.contains_key(&key) {
                    ck.hard(&p.key("key"), format!("duplicate flag key \"{key}\""));
                    continue;
                }
                let before = ck.problems.len();
                if ck.strict
                    && let Err(e) = limits::check_key(&key)
                {
                    ck.hard(&p.key("key"), format!("a flag key {e}"));
                }
                let parsed = parse_flag(flag, &p, ck, true);
                if ck.isolate && set_aside(&mut set, &key, ck, before) {
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
            set.extra.insert(k.clone(), v.clone());
        }
    }

    Some(set)
}

/// Isolating load: moves the problems found since `before` to the set's list and marks
/// the flag broken. Returns whether it was.
fn set_aside(set: &mut FlagSet, key: &str, ck: &mut Checker, before: usize) -> bool {
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

fn parse_metadata(md: &Value, path: &Path, ck: &mut Checker) -> Option<Map<String, Value>> {
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
            Some(m.clone())
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

fn parse_flag(json: &Value, path: &Path, ck: &mut Checker, array_form: bool) -> Option<Flag> {
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
            v.clone()
        }
        None | Some(Value::Null) => {
            ck.soft(&path.key("variants"), "is required");
            Map::new()
        }
        Some(other) => {
            ck.hard(
                &path.key("variants"),
                format!(
                    "must be an object of variant name to value, found {}",
                    json_type(other)
                ),
            );
            Map::new()
        }
    };

    let (default_variant, default_variant_null) = match obj.get("defaultVariant") {
        None => (None, false),
        Some(Value::Null) => (None, true),
        Some(Value::String(d)) => {
            if !variants.contains_key(d) {
                ck.hard(
                    &path.key("defaultVariant"),
                    format!(
                        "\"{d}\" is not a variant ({})",
                        variants
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            (Some(d.clone()), false)
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
            Some(t.clone())
        }
    };

    let metadata = obj
        .get("metadata")
        .and_then(|m| parse_metadata(m, &path.key("metadata"), ck));

    let mut extra = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "state" | "variants" | "defaultVariant" | "targeting" | "metadata" => {}
            "key" if array_form => {}
            _ => {
                ck.soft(
                    &path.key(k),
                    "is not a flag property (state, variants, defaultVariant, targeting, metadata)",
                );
                extra.insert(k.clone(), v.clone());
            }
        }
    }

    if !ck.strict && ck.problems.len() > before {
        return None;
    }
    Some(Flag {
        state,
        variants,
        default_variant,
        targeting,
        metadata,
        default_variant_null,
        metadata_null: obj.get("metadata").is_some_and(Value::is_null),
        extra,
        order: obj.keys().cloned().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strict_errors(v: Value) -> Vec<String> {
        match FlagSet::parse(&v, Strictness::Strict) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn default_variant_must_exist() {
        let doc = json!({"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "onn"}}});
        assert_eq!(
            strict_errors(doc.clone()),
            vec![r#"flags.new-checkout.defaultVariant: "onn" is not a variant (on, off)"#]
        );
        assert!(
            FlagSet::parse(&doc, Strictness::Lenient).is_err(),
            "flagd refuses this too"
        );
    }

    #[test]
    fn reports_every_problem() {
        let doc = json!({
            "flags": {
                "a": {"state": "ON", "variants": {"x": 1, "y": "two"}},
                "b": {"variants": {}},
                "c": {"state": "ENABLED", "variants": {"n": null}, "colour": 1}
            },
            "metadata": {"owner": {"team": "x"}}
        });
        let errs = strict_errors(doc);
        assert_eq!(
            errs,
            vec![
                "metadata.owner: metadata values must be strings, numbers or booleans, found an object",
                r#"flags.a.state: "ON" is not a state (ENABLED, DISABLED)"#,
                r#"flags.a.variants.y: is a string but variant "x" is a number: all variants of a flag must have one type"#,
                "flags.b.state: is required (ENABLED or DISABLED)",
                "flags.b.variants: a flag needs at least one variant",
                "flags.c.variants.n: a variant must be a boolean, string, number or object, found null",
                "flags.c.colour: is not a flag property (state, variants, defaultVariant, targeting, metadata)",
            ]
        );
    }

    #[test]
    fn lenient_accepts_schema_invalid_flags() {
        let doc = json!({"flags": {"a": {"state": "ON", "variants": {"x": 1, "y": "two"}, "targeting": {"invalid": [1]}}}});
        assert!(FlagSet::parse(&doc, Strictness::Lenient).is_ok());
        assert!(!strict_errors(doc).is_empty());
    }

    #[test]
    fn array_form_round_trips() {
        let doc = json!({"flags": [{"key": "a", "state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}], "$schema": "x"});
        let set = FlagSet::parse(&doc, Strictness::Strict).unwrap();
        assert!(set.flags.contains_key("a"));
        assert_eq!(set.to_json(), doc);
        let text = serde_json::to_string(&set.to_json()).unwrap();
        assert_eq!(text, serde_json::to_string(&doc).unwrap());
    }

    #[test]
    fn round_trip_keeps_order_null_default_and_unknown_keys() {
        let text = r#"{"metadata":{"b":1,"a":2},"$schema":"s","flags":{"z":{"variants":{"off":false,"on":true},"state":"DISABLED","defaultVariant":null,"targeting":{}},"a":{"state":"ENABLED","variants":{"x":{"k":[1,2.5]}}}},"$evaluators":{"e":{"==":[1,1]}},"x-owner":"team"}"#;
        let set = FlagSet::parse_str(text, Strictness::Lenient).unwrap();
        assert_eq!(serde_json::to_string(&set).unwrap(), text);
    }

    #[test]
    fn invalid_json_names_the_position() {
        let e = FlagSet::parse_str("{\"flags\": {", Strictness::Lenient).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid JSON at line 1 column 11"),
            "{e}"
        );
    }
}
