//! The checks of targeting rules and `$evaluators`: the flagd schema's operator list and
//! arities, plus what a schema cannot say (a `$ref` to a missing evaluator, a rule that
//! returns a variant the flag does not have, a rule too large once compiled).

use serde_json::{Map, Value};

use crate::context::json_type;
use crate::limits;
use crate::logic;
use crate::model::{Flag, FlagSet};
use crate::path::Path;
use crate::problem::Checker;
use crate::semver;

struct RuleCx<'s> {
    evaluators: &'s Map<String, Value>,
    in_evaluator: bool,
}

pub(super) fn check_rules(set: &FlagSet, ck: &mut Checker) {
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
