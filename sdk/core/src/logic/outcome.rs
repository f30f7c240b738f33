//! A rule in result position: what it chose. Literal results are resolved to variant
//! indices at compile time, so the common shapes skip the variant lookup by name.

use std::borrow::Cow;

use super::evaluate::{Env, Scope};
use super::expr::Expr;
use super::value::{Val, format_number};
use crate::context::Value;

/// What a targeting rule chose: a variant already resolved at compile time, or a value
/// to be mapped to a variant name.
pub(crate) enum Outcome<'a> {
    Variant(usize),
    Value(Val<'a>),
}

impl<'a> Expr {
    /// Evaluates a rule in result position. Literal results were resolved to variant
    /// indices at compile time ([`resolve_variants`]), so the common shapes skip the
    /// variant lookup by name.
    #[inline]
    pub(crate) fn eval_outcome(&'a self, env: &Env<'a>) -> Outcome<'a> {
        match self {
            Expr::Variant(i, _) => Outcome::Variant(*i as usize),
            Expr::If(args) => {
                let scope = Scope::Root;
                let mut i = 0;
                while i + 1 < args.len() {
                    if args[i].eval_condition(env, &scope) {
                        return args[i + 1].eval_branch(env);
                    }
                    i += 2;
                }
                if i < args.len() {
                    args[i].eval_branch(env)
                } else {
                    Outcome::Value(Val::Null)
                }
            }
            Expr::Fractional(f) => f.outcome(env),
            other => Outcome::Value(other.eval(env)),
        }
    }
}

impl<'a> Expr {
    /// A branch of an `if` in result position. The usual ones, a variant or a rollout,
    /// are decided here: a call of the recursive [`Expr::eval_outcome`] saved registers
    /// for each.
    #[inline(always)]
    fn eval_branch(&'a self, env: &Env<'a>) -> Outcome<'a> {
        match self {
            Expr::Variant(i, _) => Outcome::Variant(*i as usize),
            Expr::Fractional(f) => f.outcome(env),
            other => other.eval_outcome(env),
        }
    }
}

/// The variant name a literal result selects: strings name it, booleans select
/// `"true"`/`"false"`, numbers their decimal text.
pub(super) fn variant_key(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        Value::Int(i) => Some(Cow::Owned(i.to_string())),
        Value::Float(f) => Some(Cow::Owned(format_number(*f))),
        _ => None,
    }
}

/// Replaces literals in result position (the rule itself, `if` branches, literal
/// `fractional` buckets) with the index of the variant they select.
pub(crate) fn resolve_variants(e: &mut Expr, find: &dyn Fn(&str) -> Option<usize>) {
    match e {
        Expr::Lit(v) => {
            if let Some(i) = variant_key(v)
                .and_then(|k| find(&k))
                .and_then(|i| u32::try_from(i).ok())
            {
                let v = std::mem::take(v);
                *e = Expr::Variant(i, v);
            }
        }
        Expr::If(args) => {
            let n = args.len();
            for (i, a) in args.iter_mut().enumerate() {
                if i % 2 == 1 || i + 1 == n {
                    resolve_variants(a, find);
                }
            }
        }
        Expr::Fractional(f) => f.resolve_variants(find),
        _ => {}
    }
}
