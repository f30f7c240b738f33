//! Strict validation: the entry points that read a document at a chosen [`Strictness`],
//! and the checks of the whole document that reading its structure cannot make: the
//! limits, and the targeting rules (the flagd schema's operator list and arities, plus
//! what a schema cannot say: a `$ref` to a missing evaluator, a rule that returns a
//! variant the flag does not have).
//!
//! It sits above the model (`model::read_set` reads the structure first) so that the
//! model never depends on validation.

use serde_json::{Map, Value};

use crate::context::json_type;
use crate::limits;
use crate::logic;
use crate::model::{self, Flag, FlagSet, Strictness};
use crate::path::Path;
use crate::problem::{Checker, Problem, ValidationErrors};
use crate::semver;

impl FlagSet {
    /// Parses JSON text.
    pub fn parse_str(text: &str, strictness: Strictness) -> Result<Self, ValidationErrors> {
        let json: Value = serde_json::from_str(text).map_err(|e| {
            ValidationErrors(vec![Problem {
                path: String::new(),
                message: format!(
                    "invalid JSON at line {} column {}: {}",
                    e.line(),
                    e.column(),
                    strip_position(&e)
                ),
            }])
        })?;
        Self::parse(&json, strictness)
    }

    /// Parses a JSON document.
    pub fn parse(json: &Value, strictness: Strictness) -> Result<Self, ValidationErrors> {
        let mut ck = Checker {
            strict: strictness == Strictness::Strict,
            isolate: false,
            problems: Vec::new(),
        };
        let set = model::read_set(json, &mut ck);
        if ck.strict
            && let (Some(set), Value::Object(obj)) = (&set, json)
        {
            check_limits(json, obj, set, &mut ck);
            check_rules(set, &mut ck);
        }
        ck.finish(set)
    }

    /// Every problem strict validation finds in this flag set (empty when it is valid).
    pub fn validate(&self) -> Vec<Problem> {
        match Self::parse(&self.to_json(), Strictness::Strict) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }
}

fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

struct RuleCx<'s> {
    evaluators: &'s Map<String, Value>,
    in_evaluator: bool,
}

/// The size limits of strict validation: nesting depth (with the path of every item too
/// deep), flag count and document size.
fn check_limits(json: &Value, obj: &Map<String, Value>, set: &FlagSet, ck: &mut Checker) {
    let root = Path::root();
    if set.flags.len() > limits::MAX_FLAGS {
        ck.hard(
            &root.key("flags"),
            format!(
                "holds {} flags; at most {} are allowed",
                set.flags.len(),
                limits::MAX_FLAGS
            ),
        );
    }
    let bytes = limits::json_bytes(json);
    if bytes > limits::MAX_DOCUMENT_BYTES {
        ck.hard(
            &root,
            format!(
                "the flag set is {bytes} bytes as compact JSON; at most {} bytes (32 MiB) are allowed",
                limits::MAX_DOCUMENT_BYTES
            ),
        );
    }
    // No flag can be larger than the whole document.
    if bytes > limits::MAX_FLAG_BYTES {
        let big = |ck: &mut Checker, path: Path, flag: &Value| {
            let n = limits::json_bytes(flag);
            if n > limits::MAX_FLAG_BYTES {
                ck.hard(
                    &path,
                    format!(
                        "the flag is {n} bytes as compact JSON; at most {} bytes (1 MiB) are allowed (put large lists in \"$evaluators\" and use \"$ref\")",
                        limits::MAX_FLAG_BYTES
                    ),
                );
            }
        };
        match obj.get("flags") {
            Some(Value::Object(m)) => {
                for (k, f) in m {
                    big(ck, root.key("flags").key(k), f);
                }
            }
            Some(Value::Array(a)) => {
                for (i, f) in a.iter().enumerate() {
                    big(ck, root.key("flags").index(i), f);
                }
            }
            _ => {}
        }
    }
    if limits::depth(json, limits::MAX_DEPTH) <= limits::MAX_DEPTH {
        return;
    }
    // Too deep somewhere: name each item, with its depth counted from the document.
    let too_deep = |ck: &mut Checker, path: &Path, v: &Value, above: usize| {
        let d = limits::depth(v, limits::MAX_DECODE_DEPTH) + above;
        if d > limits::MAX_DEPTH {
            ck.hard(
                path,
                format!(
                    "is nested {d} levels deep in the document; at most {} levels are allowed",
                    limits::MAX_DEPTH
                ),
            );
        }
    };
    for (k, v) in obj {
        let p = root.key(k);
        match (k.as_str(), v) {
            ("flags" | "$evaluators", Value::Object(m)) => {
                for (name, item) in m {
                    too_deep(ck, &p.key(name), item, 2);
                }
            }
            ("flags", Value::Array(a)) => {
                for (i, item) in a.iter().enumerate() {
                    too_deep(ck, &p.index(i), item, 2);
                }
            }
            _ => too_deep(ck, &p, v, 1),
        }
    }
}

fn check_rules(set: &FlagSet, ck: &mut Checker) {
    let root = Path::root();
    let shared = logic::Shared::default();
    for (name, body) in &set.evaluators {
        let cx = RuleCx {
            evaluators: &set.evaluators,
            in_evaluator: true,
        };
        check_rule(body, &root.key("$evaluators").key(name), &cx, ck, true);
    }
    for (key, flag) in &set.flags {
        let Some(t) = flag.effective_targeting() else {
            continue;
        };
        let path = root.key("flags").key(key).key("targeting");
        let cx = RuleCx {
            evaluators: &set.evaluators,
            in_evaluator: false,
        };
        if matches!(t, Value::Object(_)) {
            check_rule(t, &path, &cx, ck, true);
            check_results(t, &path, flag, ck);
            let size = logic::rule_size(t, &set.evaluators, &shared, limits::MAX_COMPILED_SIZE);
            if size > limits::MAX_COMPILED_SIZE {
                ck.hard(
                    &path,
                    format!(
                        "compiles to more than {} nodes (each \"$ref\" counts as the size of its evaluator every time it is used)",
                        limits::MAX_COMPILED_SIZE
                    ),
                );
            }
        }
    }
}

fn variant_list(flag: &Flag) -> String {
    flag.variants
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Literal values in result position must name a variant, or evaluation ends in a
/// `GENERAL` error at run time.
fn check_results(v: &Value, path: &Path, flag: &Flag, ck: &mut Checker) {
    match v {
        Value::String(s) if !flag.variants.contains_key(s) => {
            ck.hard(
                path,
                format!(
                    "targeting can return \"{s}\", which is not a variant ({})",
                    variant_list(flag)
                ),
            );
        }
        Value::Bool(b) => {
            let key = if *b { "true" } else { "false" };
            if !flag.variants.contains_key(key) {
                ck.hard(
                    path,
                    format!(
                        "targeting can return {b}, but there is no variant named \"{key}\" ({})",
                        variant_list(flag)
                    ),
                );
            }
        }
        Value::Object(m) if m.len() == 1 => {
            let Some((op, args)) = m.iter().next() else {
                return;
            };
            let Value::Array(args) = args else { return };
            let p = path.key(op);
            match op.as_str() {
                "if" | "?:" => {
                    for (i, a) in args.iter().enumerate() {
                        let is_result = i % 2 == 1 || i + 1 == args.len();
                        if is_result {
                            check_results(a, &p.index(i), flag, ck);
                        }
                    }
                }
                "fractional" => {
                    for (i, b) in args.iter().enumerate() {
                        if let Value::Array(bucket) = b
                            && let Some(first) = bucket.first()
                        {
                            check_results(first, &p.index(i).index(0), flag, ck);
                        }
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

fn check_rule(v: &Value, path: &Path, cx: &RuleCx<'_>, ck: &mut Checker, top: bool) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_rule(item, &path.index(i), cx, ck, false);
            }
        }
        Value::Object(m) if m.is_empty() && !top => {
            ck.hard(path, "an empty object is not a rule");
        }
        Value::Object(m) if m.len() > 1 => {
            let keys = m.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            ck.hard(
                path,
                format!(
                    "a rule must have exactly one operator, found {} keys ({keys})",
                    m.len()
                ),
            );
        }
        Value::Object(m) => {
            let Some((op, args)) = m.iter().next() else {
                return;
            };
            check_op(op, args, path, cx, ck);
        }
        _ => {}
    }
}

fn check_op(op: &str, args: &Value, path: &Path, cx: &RuleCx<'_>, ck: &mut Checker) {
    let p = path.key(op);
    if op == "$ref" {
        match args {
            Value::String(name) if cx.in_evaluator => {
                ck.hard(
                    path,
                    format!("evaluators cannot reference other evaluators (\"$ref\": \"{name}\")"),
                );
            }
            Value::String(name) if !cx.evaluators.contains_key(name) => {
                let known = cx
                    .evaluators
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                ck.hard(
                    path,
                    format!("\"$ref\": \"{name}\" names no evaluator in $evaluators ({known})"),
                );
            }
            Value::String(_) => {}
            other => ck.hard(
                &p,
                format!(
                    "must name an evaluator with a string, found {}",
                    json_type(other)
                ),
            ),
        }
        return;
    }
    let Some(arity) = logic::arity(op).filter(|_| op != "?:") else {
        ck.hard(path, format!("unknown operator \"{op}\""));
        return;
    };
    let list: Vec<&Value> = match args {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };

    match op {
        "var" => {
            check_var(args, &p, ck);
            if let Value::Array(a) = args {
                for (i, x) in a.iter().enumerate() {
                    check_rule(x, &p.index(i), cx, ck, false);
                }
            }
            return;
        }
        "missing" => {
            for (i, x) in list.iter().enumerate() {
                if !matches!(x, Value::String(_) | Value::Object(_)) {
                    ck.hard(
                        &p.index(i),
                        format!("must be an attribute name, found {}", json_type(x)),
                    );
                }
            }
        }
        "!" | "!!" if !matches!(args, Value::Array(_)) => {
            check_rule(args, &p, cx, ck, false);
            return;
        }
        _ => {}
    }

    if !arity.allows(list.len()) {
        ck.hard(
            &p,
            format!("\"{op}\" takes {}, found {}", arity.describe(), list.len()),
        );
    }

    match op {
        "sem_ver" => check_semver(&list, &p, ck),
        "fractional" => {
            check_fractional(&list, &p, cx, ck);
            return;
        }
        "starts_with" | "ends_with" => {
            for (i, x) in list.iter().enumerate() {
                if !matches!(x, Value::String(_) | Value::Object(_)) {
                    ck.hard(
                        &p.index(i),
                        format!("must be a string or a rule, found {}", json_type(x)),
                    );
                }
            }
        }
        _ => {}
    }
    match args {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check_rule(x, &p.index(i), cx, ck, false);
            }
        }
        other => check_rule(other, &p, cx, ck, false),
    }
}

fn check_var(args: &Value, path: &Path, ck: &mut Checker) {
    let (name, name_path) = match args {
        Value::Array(a) => {
            if a.is_empty() || a.len() > 2 {
                ck.hard(
                    path,
                    format!(
                        "\"var\" takes a path and an optional default, found {} arguments",
                        a.len()
                    ),
                );
                return;
            }
            (&a[0], path.index(0))
        }
        other => (other, path.clone()),
    };
    match name {
        Value::String(s)
            if s.starts_with("$flagd.") && s != "$flagd.flagKey" && s != "$flagd.timestamp" =>
        {
            ck.hard(
                &name_path,
                format!("\"{s}\" is not a flagd property ($flagd.flagKey, $flagd.timestamp)"),
            );
        }
        Value::String(_) | Value::Number(_) | Value::Object(_) => {}
        other => ck.hard(
            &name_path,
            format!("must be an attribute path, found {}", json_type(other)),
        ),
    }
}

fn check_semver(list: &[&Value], path: &Path, ck: &mut Checker) {
    if list.len() != 3 {
        return;
    }
    match list[1] {
        Value::String(op) if semver::Op::parse(op).is_none() => {
            ck.hard(
                &path.index(1),
                format!("\"{op}\" is not a sem_ver operator (=, !=, <, <=, >, >=, ~, ^)"),
            );
        }
        Value::String(_) | Value::Object(_) => {}
        other => ck.hard(
            &path.index(1),
            format!("must be a sem_ver operator, found {}", json_type(other)),
        ),
    }
    for i in [0, 2] {
        match list[i] {
            Value::String(v) if !semver::is_strict(v) => ck.hard(
                &path.index(i),
                format!("\"{v}\" is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0, without a v prefix)"),
            ),
            Value::String(_) | Value::Object(_) => {}
            other => ck.hard(&path.index(i), format!("must be a version string or a rule, found {}", json_type(other))),
        }
    }
}

fn check_fractional(list: &[&Value], path: &Path, cx: &RuleCx<'_>, ck: &mut Checker) {
    let mut buckets = list;
    match list.first() {
        Some(Value::Object(_)) => {
            check_rule(list[0], &path.index(0), cx, ck, false);
            buckets = &list[1..];
        }
        Some(Value::Array(_)) | None => {}
        Some(other) => {
            ck.hard(
                &path.index(0),
                format!(
                    "must be a rule giving the bucketing value, or a bucket, found {}",
                    json_type(other)
                ),
            );
            buckets = &list[1..];
        }
    }
    if buckets.is_empty() {
        ck.hard(
            path,
            "\"fractional\" needs at least one bucket [variant, weight]",
        );
    }
    let offset = list.len() - buckets.len();
    for (i, b) in buckets.iter().enumerate() {
        let bp = path.index(i + offset);
        let Value::Array(items) = b else {
            ck.hard(
                &bp,
                format!(
                    "a bucket must be an array [variant, weight], found {}",
                    json_type(b)
                ),
            );
            continue;
        };
        if items.is_empty() || items.len() > 2 {
            ck.hard(
                &bp,
                format!(
                    "a bucket must be [variant] or [variant, weight], found {} elements",
                    items.len()
                ),
            );
            continue;
        }
        match &items[0] {
            Value::Object(_) => check_rule(&items[0], &bp.index(0), cx, ck, false),
            Value::String(_) | Value::Bool(_) | Value::Number(_) | Value::Null => {}
            Value::Array(_) => ck.hard(
                &bp.index(0),
                "a bucket variant must be a string, boolean, number, null or a rule",
            ),
        }
        if let Some(w) = items.get(1) {
            match w {
                Value::Object(_) => check_rule(w, &bp.index(1), cx, ck, false),
                Value::Number(n) if n.as_u64().is_some_and(|w| w <= i32::MAX as u64) => {}
                Value::Number(n) => ck.hard(
                    &bp.index(1),
                    format!("a weight must be a whole number from 0 to 2147483647, found {n}"),
                ),
                other => ck.hard(
                    &bp.index(1),
                    format!(
                        "a weight must be a whole number or a rule, found {}",
                        json_type(other)
                    ),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{FlagSet, Strictness};
    use serde_json::json;

    fn errors(targeting: serde_json::Value) -> Vec<String> {
        let doc = json!({
            "flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": targeting}},
            "$evaluators": {"beta": {"in": [{"var": "email"}, ["a@x"]]}}
        });
        match FlagSet::parse(&doc, Strictness::Strict) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn good_rules_pass() {
        assert!(errors(json!({})).is_empty());
        assert!(
            errors(
                json!({"if": [{"$ref": "beta"}, "on", {"fractional": [["on", 25], ["off", 75]]}]})
            )
            .is_empty()
        );
        assert!(
            errors(json!({"if": [{"sem_ver": [{"var": "v"}, ">=", "1.2.0"]}, "on", "off"]}))
                .is_empty()
        );
        assert!(errors(json!({"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["on"], ["off", 3]]})).is_empty());
    }

    #[test]
    fn every_problem_with_its_path() {
        let errs = errors(json!({"if": [
            {"and": [{"sem_ver": [{"var": "v"}, "===", "v1.0"]}, {"starts_with": ["a"]}, {"invalid": 1}, {"$ref": "nope"}]},
            "onn",
            {"fractional": [["on", 1.5], ["off", -1], "x"]}
        ]}));
        assert_eq!(
            errs,
            vec![
                r#"flags.f.targeting.if[0].and[0].sem_ver[1]: "===" is not a sem_ver operator (=, !=, <, <=, >, >=, ~, ^)"#,
                r#"flags.f.targeting.if[0].and[0].sem_ver[2]: "v1.0" is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0, without a v prefix)"#,
                r#"flags.f.targeting.if[0].and[1].starts_with: "starts_with" takes exactly 2 arguments, found 1"#,
                r#"flags.f.targeting.if[0].and[2]: unknown operator "invalid""#,
                r#"flags.f.targeting.if[0].and[3]: "$ref": "nope" names no evaluator in $evaluators (beta)"#,
                "flags.f.targeting.if[2].fractional[0][1]: a weight must be a whole number from 0 to 2147483647, found 1.5",
                "flags.f.targeting.if[2].fractional[1][1]: a weight must be a whole number from 0 to 2147483647, found -1",
                "flags.f.targeting.if[2].fractional[2]: a bucket must be an array [variant, weight], found a string",
                r#"flags.f.targeting.if[1]: targeting can return "onn", which is not a variant (on, off)"#,
            ]
        );
    }

    #[test]
    fn flagd_properties_and_multi_key_objects() {
        assert_eq!(
            errors(json!({"==": [{"var": "$flagd.key"}, {"a": 1, "b": 2}]})),
            vec![
                r#"flags.f.targeting["=="][0].var: "$flagd.key" is not a flagd property ($flagd.flagKey, $flagd.timestamp)"#,
                r#"flags.f.targeting["=="][1]: a rule must have exactly one operator, found 2 keys (a, b)"#,
            ]
        );
    }
}
