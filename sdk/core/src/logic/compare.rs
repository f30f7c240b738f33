//! Comparisons: JsonLogic's loose and strict equality, ordering, `in`, and `sem_ver`.

use serde_json::Value as Json;

use super::compile::{CompileCx, compile};
use super::evaluate::{Env, Scope};
use super::expr::{CompileError, Expr};
use super::value::{Kind, Val, format_number, to_cow_str, to_number, truthy};
use crate::context::Value;
use crate::semver::{self, Version};

pub(super) fn loose_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    let (ka, kb) = (a.kind(), b.kind());
    match (ka, kb) {
        (Kind::Null, Kind::Null) => true,
        (Kind::Null, _) | (_, Kind::Null) => false,
        (Kind::Str, Kind::Str) => a.as_str() == b.as_str(),
        (Kind::Bool, Kind::Bool) => truthy(a) == truthy(b),
        (Kind::Array | Kind::Object, _) | (_, Kind::Array | Kind::Object) => {
            a.to_value() == b.to_value()
        }
        _ => to_number(a) == to_number(b),
    }
}

pub(super) fn strict_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    a.kind() == b.kind() && loose_eq(a, b)
}

pub(super) fn less(a: &Val<'_>, b: &Val<'_>, or_equal: bool) -> bool {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        return if or_equal { x <= y } else { x < y };
    }
    let (x, y) = (to_number(a), to_number(b));
    if or_equal { x <= y } else { x < y }
}

pub(super) fn contains(hay: &Val<'_>, needle: &Val<'_>) -> bool {
    if needle.is_null() {
        return false;
    }
    if let Some(h) = hay.as_str() {
        return h.contains(to_cow_str(needle).as_ref());
    }
    let Some(items) = hay.items() else {
        return false;
    };
    let num = matches!(needle.kind(), Kind::Num).then(|| to_number(needle));
    items.iter().any(|i| {
        strict_eq(i, needle)
            || num.is_some_and(|n| matches!(i.kind(), Kind::Str) && to_number(i) == n)
    })
}

#[derive(Debug)]
pub(crate) struct SemVerRule {
    left: Expr,
    op: Expr,
    right: Expr,
    /// The operator, when it is a literal: `Err(())` for a literal that is no operator.
    lit_op: Option<Result<semver::Op, ()>>,
    /// The right-hand version, when it is a literal: `None` inside for an invalid one.
    lit_right: Option<Option<Version>>,
    extra_args: bool,
}

pub(super) fn compile_semver(args: &[Json], cx: &CompileCx<'_>) -> Result<Expr, CompileError> {
    let get = |i: usize| {
        args.get(i)
            .map_or(Ok(Expr::Lit(Value::Null)), |a| compile(a, cx))
    };
    let lit_op = match args.get(1) {
        Some(Json::String(s)) => Some(semver::Op::parse(s).ok_or(())),
        Some(o) if !matches!(o, Json::Object(_) | Json::Array(_)) => Some(Err(())),
        _ => None,
    };
    let lit_right = match args.get(2) {
        Some(Json::String(s)) => Some(Version::parse(s)),
        Some(Json::Number(n)) => Some(Version::parse(&n.to_string())),
        _ => None,
    };
    Ok(Expr::SemVer(Box::new(SemVerRule {
        left: get(0)?,
        op: get(1)?,
        right: get(2)?,
        lit_op,
        lit_right,
        extra_args: args.len() != 3,
    })))
}

// Inlined into the evaluator as when it shared its file (the same instructions per
// evaluation as before the split).
#[inline]
pub(super) fn eval_semver<'a>(
    rule: &'a SemVerRule,
    env: &Env<'a>,
    scope: &Scope<'a, '_>,
) -> Val<'a> {
    if rule.extra_args {
        return Val::Null;
    }
    let version_of = |v: &Val<'_>| -> Option<Version> {
        match v {
            Val::Num(n) => Version::parse(&format_number(*n)),
            other => Version::parse(other.as_str()?),
        }
    };
    let Some(left) = version_of(&rule.left.eval_in(env, scope)) else {
        return Val::Null;
    };
    let op = match rule.lit_op {
        Some(Ok(op)) => op,
        Some(Err(())) => return Val::Null,
        None => match rule
            .op
            .eval_in(env, scope)
            .as_str()
            .and_then(semver::Op::parse)
        {
            Some(op) => op,
            None => return Val::Null,
        },
    };
    let right_owned;
    let right = match &rule.lit_right {
        Some(Some(v)) => v,
        Some(None) => return Val::Null,
        None => {
            right_owned = version_of(&rule.right.eval_in(env, scope));
            match &right_owned {
                Some(v) => v,
                None => return Val::Null,
            }
        }
    };
    Val::Bool(op.apply(&left, right))
}
