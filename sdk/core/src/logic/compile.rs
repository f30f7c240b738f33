//! JSON to [`Expr`]: whatever can be decided once per rule is decided here (literals
//! folded, `var` paths split and tagged, literal `in` sets built), so that evaluation
//! does not.

use std::borrow::Cow;

use serde_json::Value as Json;

use super::compare::compile_semver;
use super::expr::{Arith, Cmp, CompileError, Expr, Iter, StrSet, VarPath, segments};
use super::fractional::compile_fractional;
use super::operators::arity;
use super::refs::{Shared, compile_ref};
use crate::context::{Tag, Value};

/// What compilation needs to know besides the rule.
#[derive(Clone, Copy)]
pub(crate) struct CompileCx<'s> {
    /// The flag's key; `None` while compiling a shared evaluator.
    pub(crate) flag_key: Option<&'s str>,
    pub(crate) evaluators: &'s serde_json::Map<String, Json>,
    /// The evaluators compiled so far, shared by every flag of one snapshot.
    pub(crate) shared: &'s Shared,
}

fn args_of(v: &Json) -> Cow<'_, [Json]> {
    match v {
        Json::Array(a) => Cow::Borrowed(a.as_slice()),
        other => Cow::Owned(vec![other.clone()]),
    }
}

pub(super) fn lit_from_json(v: &Json) -> Value {
    Value::from_json(v)
}

pub(crate) fn compile(v: &Json, cx: &CompileCx<'_>) -> Result<Expr, CompileError> {
    match v {
        Json::Array(items) => {
            let exprs = items
                .iter()
                .map(|i| compile(i, cx))
                .collect::<Result<Vec<_>, _>>()?;
            if exprs.iter().all(|e| matches!(e, Expr::Lit(_))) {
                Ok(Expr::Lit(lit_from_json(v)))
            } else {
                Ok(Expr::Array(exprs))
            }
        }
        // JsonLogic: an object with other than exactly one key is data, not a rule.
        Json::Object(m) if m.len() != 1 => Ok(Expr::Lit(lit_from_json(v))),
        Json::Object(m) => {
            let Some((op, args)) = m.iter().next() else {
                return Ok(Expr::Lit(lit_from_json(v)));
            };
            compile_op(op, args, cx)
        }
        other => Ok(Expr::Lit(lit_from_json(other))),
    }
}

pub(super) fn compile_all(args: &[Json], cx: &CompileCx<'_>) -> Result<Vec<Expr>, CompileError> {
    args.iter().map(|a| compile(a, cx)).collect()
}

fn two(args: &[Json], cx: &CompileCx<'_>) -> Result<Box<[Expr; 2]>, CompileError> {
    let a = args
        .first()
        .map_or(Ok(Expr::Lit(Value::Null)), |a| compile(a, cx))?;
    let b = args
        .get(1)
        .map_or(Ok(Expr::Lit(Value::Null)), |b| compile(b, cx))?;
    Ok(Box::new([a, b]))
}

fn compile_op(op: &str, raw: &Json, cx: &CompileCx<'_>) -> Result<Expr, CompileError> {
    if op == "$ref" {
        return compile_ref(raw, cx);
    }
    if arity(op).is_none() {
        return Err(CompileError(format!("unknown operator \"{op}\"")));
    }
    let args = args_of(raw);
    let args = args.as_ref();
    Ok(match op {
        "var" => compile_var(raw, cx)?,
        "missing" => Expr::Missing(compile_all(args, cx)?),
        "missing_some" => Expr::MissingSome(compile_all(args, cx)?),
        "if" | "?:" => Expr::If(compile_all(args, cx)?),
        "==" | "!=" => {
            let [a, b] = *two(args, cx)?;
            let negate = op == "!=";
            match (a, b) {
                (Expr::Lit(Value::String(lit)), other) | (other, Expr::Lit(Value::String(lit)))
                    if !matches!(other, Expr::Lit(_)) =>
                {
                    Expr::EqStr(Box::new(other), Tag::of(&lit), lit.into(), negate)
                }
                (a, b) => Expr::Eq(Box::new([a, b]), negate),
            }
        }
        "===" => Expr::StrictEq(two(args, cx)?, false),
        "!==" => Expr::StrictEq(two(args, cx)?, true),
        "<" => Expr::Cmp(Cmp::Lt, compile_all(args, cx)?),
        "<=" => Expr::Cmp(Cmp::Le, compile_all(args, cx)?),
        ">" => Expr::Cmp(Cmp::Gt, compile_all(args, cx)?),
        ">=" => Expr::Cmp(Cmp::Ge, compile_all(args, cx)?),
        "!" | "!!" => {
            let a = args
                .first()
                .map_or(Ok(Expr::Lit(Value::Null)), |a| compile(a, cx))?;
            Expr::Not(Box::new(a), op == "!")
        }
        "and" => Expr::And(compile_all(args, cx)?),
        "or" => Expr::Or(compile_all(args, cx)?),
        "+" => Expr::Arith(Arith::Add, compile_all(args, cx)?),
        "-" => Expr::Arith(Arith::Sub, compile_all(args, cx)?),
        "*" => Expr::Arith(Arith::Mul, compile_all(args, cx)?),
        "/" => Expr::Arith(Arith::Div, compile_all(args, cx)?),
        "%" => Expr::Arith(Arith::Rem, compile_all(args, cx)?),
        "max" => Expr::Arith(Arith::Max, compile_all(args, cx)?),
        "min" => Expr::Arith(Arith::Min, compile_all(args, cx)?),
        "in" => compile_in(args, cx)?,
        "merge" => Expr::Merge(compile_all(args, cx)?),
        "cat" => match raw {
            Json::Array(_) => Expr::Cat(compile_all(args, cx)?),
            Json::String(s) => Expr::Lit(Value::String(s.clone())),
            other => Expr::CatOne(Box::new(compile(other, cx)?)),
        },
        "substr" => Expr::Substr(compile_all(args, cx)?),
        "map" => Expr::Iter(Iter::Map, two(args, cx)?),
        "filter" => Expr::Iter(Iter::Filter, two(args, cx)?),
        "all" => Expr::Iter(Iter::All, two(args, cx)?),
        "none" => Expr::Iter(Iter::None, two(args, cx)?),
        "some" => Expr::Iter(Iter::Some, two(args, cx)?),
        "reduce" => {
            let mut e = compile_all(args, cx)?;
            e.resize_with(3, || Expr::Lit(Value::Null));
            let mut it = e.into_iter();
            let (a, b, c) = (it.next(), it.next(), it.next());
            match (a, b, c) {
                (Some(a), Some(b), Some(c)) => Expr::Reduce(Box::new([a, b, c])),
                _ => Expr::Lit(Value::Null),
            }
        }
        "starts_with" => Expr::StartsWith(compile_all(args, cx)?, true),
        "ends_with" => Expr::StartsWith(compile_all(args, cx)?, false),
        "sem_ver" => compile_semver(args, cx)?,
        "fractional" => compile_fractional(args, cx)?,
        _ => return Err(CompileError(format!("unknown operator \"{op}\""))),
    })
}

fn compile_var(raw: &Json, cx: &CompileCx<'_>) -> Result<Expr, CompileError> {
    let (path, default) = match raw {
        Json::Array(a) => (a.first().cloned().unwrap_or(Json::Null), a.get(1)),
        other => (other.clone(), None),
    };
    let default = default.map(|d| compile(d, cx)).transpose()?.map(Box::new);
    let text = match &path {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Null => Some(String::new()),
        _ => None,
    };
    let Some(text) = text else {
        return Ok(Expr::Var(
            VarPath::Dynamic(Box::new(compile(&path, cx)?)),
            default,
        ));
    };
    // flagd overwrites any caller-supplied `$flagd` before evaluating, so these are fixed
    // per flag (the key) or per call (the time).
    if text == "$flagd.flagKey" {
        return Ok(match cx.flag_key {
            Some(k) => Expr::Lit(Value::String(k.to_owned())),
            None => Expr::FlagKey,
        });
    }
    if text == "$flagd.timestamp" {
        return Ok(Expr::Timestamp);
    }
    if text == "$flagd" {
        return Ok(Expr::FlagdObject);
    }
    if text.starts_with("$flagd.") {
        return Ok(default.map_or(Expr::Lit(Value::Null), |d| *d));
    }
    let path = match text.as_str() {
        "" => VarPath::Whole,
        "targetingKey" => VarPath::TargetingKey,
        _ => VarPath::Segments(segments(&text)),
    };
    Ok(Expr::Var(path, default))
}

fn compile_in(args: &[Json], cx: &CompileCx<'_>) -> Result<Expr, CompileError> {
    if let Some(Json::Array(items)) = args.get(1)
        && !items.is_empty()
        && items.iter().all(Json::is_string)
    {
        let needle = args
            .first()
            .map_or(Ok(Expr::Lit(Value::Null)), |a| compile(a, cx))?;
        let strs: Vec<Box<str>> = items
            .iter()
            .filter_map(|i| i.as_str().map(Into::into))
            .collect();
        let lits: Box<[Value]> = items.iter().map(lit_from_json).collect();
        let set = if strs.len() <= 16 {
            StrSet::Small(strs.into_iter().map(|s| (Tag::of(&s), s)).collect())
        } else {
            StrSet::Large(strs.into_iter().collect())
        };
        return Ok(Expr::InSet(Box::new(needle), set, lits));
    }
    Ok(Expr::In(two(args, cx)?))
}
