//! Evaluating the tree: the per-call state, `var` lookups and the operators without a
//! file of their own. The hot path: the usual operands and conditions take the
//! `#[inline]` shortcuts at the top, and the general evaluator handles the rest.

use std::cell::Cell;

use super::compare::{contains, eval_semver, less, loose_eq, strict_eq};
use super::expr::{Arith, Cmp, Expr, Iter, StrSet, VarPath, segments};
use super::fractional::eval_fractional;
use super::strings::{CAT_FAULT, eval_cat, eval_substr};
use super::value::{Val, to_cow_str, to_number, truthy};
use crate::context::{EvaluationContext, Map, Tag, Value};

/// Per-call state shared by the whole rule.
pub(crate) struct Env<'a> {
    pub(crate) ctx: &'a EvaluationContext,
    pub(crate) flag_key: &'a str,
    pub(crate) now: Cell<Option<i64>>,
    /// Set when the rule met something on which flagd's engine fails the whole
    /// evaluation (a panic there, `PARSE_ERROR` here), e.g. `cat` of a boolean. The
    /// rule still runs to its end; the caller discards its result.
    pub(crate) fault: Cell<Option<&'static str>>,
}

impl<'a> Env<'a> {
    pub(crate) fn new(ctx: &'a EvaluationContext, flag_key: &'a str) -> Self {
        Env {
            ctx,
            flag_key,
            now: Cell::new(None),
            fault: Cell::new(None),
        }
    }

    /// Records the first fault of this evaluation.
    pub(super) fn fail(&self, why: &'static str) {
        if self.fault.get().is_none() {
            self.fault.set(Some(why));
        }
    }

    fn timestamp(&self) -> i64 {
        if let Some(t) = self.now.get() {
            return t;
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.now.set(Some(t));
        t
    }
}

/// `==` of an operand that is not a context's string attribute with a literal string:
/// JsonLogic's loose equality, out of the callers' inlined fast path.
#[inline(never)]
fn operand_eq_str(v: Val<'_>, tag: Tag, lit: &str) -> bool {
    let eq = match v.as_str() {
        Some(s) => tag.same(lit, Tag::of(s), s),
        None => loose_eq(&v, &Val::Str(lit)),
    };
    v.release();
    eq
}

/// What an attribute read found. A `match`, not `map_or(Val::Null, …)`: the unused
/// default would be dropped through `Val`'s (out-of-line, recursive) drop glue.
#[inline(always)]
fn attribute_val(found: Option<&Value>) -> Val<'_> {
    match found {
        Some(v) => Val::of(v),
        None => Val::Null,
    }
}

/// `in` of an operand that is not a context's string attribute in a literal list.
#[inline(never)]
fn operand_in(n: Val<'_>, set: &StrSet, lits: &[Value]) -> bool {
    let found = match n.as_str() {
        Some(s) => set.contains(s),
        None => contains(&Val::Arr(lits), &n),
    };
    n.release();
    found
}

/// What `var` reads: the context at the top, an element inside `map`/`filter`/…, and
/// `current`/`accumulator` inside `reduce`.
pub(super) enum Scope<'a, 's> {
    Root,
    Item(&'s Val<'a>),
    Reduce(&'s Val<'a>, &'s Val<'a>),
}

impl<'a> Expr {
    pub(crate) fn eval(&'a self, env: &Env<'a>) -> Val<'a> {
        self.eval_in(env, &Scope::Root)
    }

    /// Evaluates an operand. A plain attribute read (`{"var": "country"}`) is answered
    /// here directly: it is the most common operand, and the general evaluator's frame is
    /// large.
    #[inline]
    fn eval_operand(&'a self, env: &Env<'a>, scope: &Scope<'a, '_>) -> Val<'a> {
        if let Some(found) = self.root_attribute(env, scope) {
            return attribute_val(found);
        }
        match self {
            Expr::Lit(v) => Val::of(v),
            _ => self.eval_in(env, scope),
        }
    }

    /// A plain attribute read at the top level (`{"var": "country"}`): what it finds,
    /// `Some(None)` when the context has no such attribute. `None` for any other operand.
    #[inline(always)]
    fn root_attribute(&'a self, env: &Env<'a>, scope: &Scope<'a, '_>) -> Option<Option<&'a Value>> {
        match (self, scope) {
            (Expr::Var(VarPath::Segments(segs), None), Scope::Root) if segs.len() == 1 => {
                let seg = &segs[0];
                Some(env.ctx.get_tagged(seg.tag, &seg.name))
            }
            _ => None,
        }
    }

    /// A condition of `and`, `or`, `!` or `if`. The most common leaves, an attribute
    /// compared with a literal string or looked up in a literal list, are answered here
    /// in the caller: no call, no operand built and released, where a call of the
    /// recursive [`Expr::eval_bool`] saved registers for every leaf.
    #[inline(always)]
    pub(super) fn eval_condition(&'a self, env: &Env<'a>, scope: &Scope<'a, '_>) -> bool {
        match self {
            Expr::EqStr(other, tag, lit, negate) => {
                let eq = match other.root_attribute(env, scope) {
                    Some(Some(Value::String(s))) => tag.same(lit, Tag::of(s), s),
                    Some(found) => operand_eq_str(attribute_val(found), *tag, lit),
                    None => operand_eq_str(other.eval_operand(env, scope), *tag, lit),
                };
                eq != *negate
            }
            Expr::InSet(needle, set, lits) => match needle.root_attribute(env, scope) {
                Some(Some(Value::String(s))) => set.contains(s),
                Some(found) => operand_in(attribute_val(found), set, lits),
                None => operand_in(needle.eval_operand(env, scope), set, lits),
            },
            _ => self.eval_bool(env, scope),
        }
    }

    /// Truthiness of the result, without building it where the operator is boolean
    /// anyway: conditions of `if`, `and`, `or`, `!` take this path.
    #[inline]
    pub(super) fn eval_bool(&'a self, env: &Env<'a>, scope: &Scope<'a, '_>) -> bool {
        match self {
            Expr::And(args) => args.iter().all(|a| a.eval_condition(env, scope)),
            Expr::Or(args) => args.iter().any(|a| a.eval_condition(env, scope)),
            Expr::Not(a, negate) => a.eval_condition(env, scope) != *negate,
            Expr::EqStr(..) | Expr::InSet(..) => self.eval_condition(env, scope),
            Expr::Ref(inner) => inner.eval_bool(env, scope),
            other => truthy(&other.eval_in(env, scope)),
        }
    }

    pub(super) fn eval_in(&'a self, env: &Env<'a>, scope: &Scope<'a, '_>) -> Val<'a> {
        match self {
            Expr::Lit(v) | Expr::Variant(_, v) => Val::of(v),
            Expr::Array(items) => Val::List(items.iter().map(|e| e.eval_in(env, scope)).collect()),
            Expr::Var(path, default) => {
                let found = lookup(path, env, scope);
                match (found, default) {
                    (Some(v), _) if !v.is_null() => v,
                    (_, Some(d)) => d.eval_in(env, scope),
                    _ => Val::Null,
                }
            }
            Expr::Timestamp => Val::Num(env.timestamp() as f64),
            Expr::FlagKey => Val::Str(env.flag_key),
            Expr::Ref(inner) => inner.eval_in(env, scope),
            Expr::FlagdObject => {
                let mut m = Map::default();
                m.insert("flagKey".into(), Value::String(env.flag_key.to_owned()));
                m.insert("timestamp".into(), Value::Int(env.timestamp()));
                Val::Owned(Box::new(Value::Object(m)))
            }
            Expr::Missing(args) => {
                let keys = eval_keys(args, env, scope);
                Val::List(missing_keys(&keys, env, scope))
            }
            Expr::MissingSome(args) => {
                let need = args
                    .first()
                    .map_or(0.0, |a| to_number(&a.eval_in(env, scope)));
                let keys = args
                    .get(1)
                    .map(|k| k.eval_in(env, scope))
                    .and_then(|k| {
                        k.items().map(|i| {
                            i.iter()
                                .map(|x| to_cow_str(x).into_owned())
                                .collect::<Vec<_>>()
                        })
                    })
                    .unwrap_or_default();
                let keys: Vec<Val<'a>> = keys.into_iter().map(Val::String).collect();
                let missing = missing_keys(&keys, env, scope);
                if (keys.len() - missing.len()) as f64 >= need {
                    Val::List(Vec::new())
                } else {
                    Val::List(missing)
                }
            }
            Expr::If(args) => {
                let mut i = 0;
                while i + 1 < args.len() {
                    if args[i].eval_condition(env, scope) {
                        return args[i + 1].eval_in(env, scope);
                    }
                    i += 2;
                }
                if i < args.len() {
                    args[i].eval_in(env, scope)
                } else {
                    Val::Null
                }
            }
            Expr::Eq(ab, negate) => {
                let r = loose_eq(
                    &ab[0].eval_operand(env, scope),
                    &ab[1].eval_operand(env, scope),
                );
                Val::Bool(r != *negate)
            }
            Expr::StrictEq(ab, negate) => {
                let r = strict_eq(
                    &ab[0].eval_operand(env, scope),
                    &ab[1].eval_operand(env, scope),
                );
                Val::Bool(r != *negate)
            }
            Expr::Cmp(op, args) => {
                let vals: [Val<'a>; 3] = [
                    args.first()
                        .map_or(Val::Null, |e| e.eval_operand(env, scope)),
                    args.get(1)
                        .map_or(Val::Null, |e| e.eval_operand(env, scope)),
                    args.get(2)
                        .map_or(Val::Null, |e| e.eval_operand(env, scope)),
                ];
                let test = |a: &Val<'_>, b: &Val<'_>| match op {
                    Cmp::Lt => less(a, b, false),
                    Cmp::Le => less(a, b, true),
                    Cmp::Gt => less(b, a, false),
                    Cmp::Ge => less(b, a, true),
                };
                let r = test(&vals[0], &vals[1]) && (args.len() < 3 || test(&vals[1], &vals[2]));
                Val::Bool(r)
            }
            Expr::Not(..) | Expr::EqStr(..) | Expr::InSet(..) => {
                Val::Bool(self.eval_bool(env, scope))
            }
            Expr::And(args) => {
                let mut last = Val::Bool(true);
                for a in args {
                    last = a.eval_in(env, scope);
                    if !truthy(&last) {
                        return last;
                    }
                }
                last
            }
            Expr::Or(args) => {
                let mut last = Val::Bool(false);
                for a in args {
                    last = a.eval_in(env, scope);
                    if truthy(&last) {
                        return last;
                    }
                }
                last
            }
            Expr::Arith(op, args) => eval_arith(*op, args, env, scope),
            Expr::In(ab) => {
                let needle = ab[0].eval_in(env, scope);
                let hay = ab[1].eval_in(env, scope);
                Val::Bool(contains(&hay, &needle))
            }
            Expr::Merge(args) => {
                let mut out = Vec::new();
                for a in args {
                    let v = a.eval_in(env, scope);
                    match v.items() {
                        Some(items) => {
                            out.extend(items.into_iter().map(|i| Val::owned(i.to_value())));
                        }
                        None => out.push(v),
                    }
                }
                Val::List(out)
            }
            Expr::Cat(args) => eval_cat(args, env, scope),
            Expr::CatOne(arg) => {
                let v = arg.eval_in(env, scope);
                if v.as_str().is_some() {
                    v
                } else {
                    env.fail(CAT_FAULT);
                    Val::Null
                }
            }
            Expr::Substr(args) => eval_substr(args, env, scope),
            Expr::Iter(kind, ab) => {
                let arr = ab[0].eval_in(env, scope);
                let items = arr.items().unwrap_or_default();
                let body = &ab[1];
                match kind {
                    Iter::Map => Val::List(
                        items
                            .iter()
                            .map(|it| Val::owned(body.eval_in(env, &Scope::Item(it)).to_value()))
                            .collect(),
                    ),
                    Iter::Filter => Val::List(
                        items
                            .iter()
                            .filter(|it| truthy(&body.eval_in(env, &Scope::Item(it))))
                            .map(|it| Val::owned(it.to_value()))
                            .collect(),
                    ),
                    Iter::All => Val::Bool(
                        !items.is_empty()
                            && items
                                .iter()
                                .all(|it| truthy(&body.eval_in(env, &Scope::Item(it)))),
                    ),
                    Iter::None => Val::Bool(
                        !items
                            .iter()
                            .any(|it| truthy(&body.eval_in(env, &Scope::Item(it)))),
                    ),
                    Iter::Some => Val::Bool(
                        items
                            .iter()
                            .any(|it| truthy(&body.eval_in(env, &Scope::Item(it)))),
                    ),
                }
            }
            Expr::Reduce(abc) => {
                let arr = abc[0].eval_in(env, scope);
                let mut acc = Val::owned(abc[2].eval_in(env, scope).to_value());
                for it in arr.items().unwrap_or_default() {
                    acc = Val::owned(abc[1].eval_in(env, &Scope::Reduce(&it, &acc)).to_value());
                }
                acc
            }
            Expr::StartsWith(args, starts) => {
                if args.len() != 2 {
                    return Val::Null;
                }
                let (a, b) = (args[0].eval_in(env, scope), args[1].eval_in(env, scope));
                match (a.as_str(), b.as_str()) {
                    (Some(s), Some(p)) => Val::Bool(if *starts {
                        s.starts_with(p)
                    } else {
                        s.ends_with(p)
                    }),
                    _ => Val::Null,
                }
            }
            Expr::SemVer(rule) => eval_semver(rule, env, scope),
            Expr::Fractional(f) => eval_fractional(f, env, scope),
        }
    }
}

fn lookup<'a>(path: &'a VarPath, env: &Env<'a>, scope: &Scope<'a, '_>) -> Option<Val<'a>> {
    match scope {
        Scope::Root => match path {
            VarPath::TargetingKey => match env.ctx.targeting_key() {
                Some(k) => Some(Val::Str(k)),
                None => env.ctx.get("targetingKey").map(Val::of),
            },
            VarPath::Segments(segs) => {
                let (first, rest) = segs.split_first()?;
                let mut v = Val::of(env.ctx.get_tagged(first.tag, &first.name)?);
                for s in rest {
                    v = v.member_tagged(s.tag, &s.name)?;
                }
                Some(v)
            }
            VarPath::Whole => Some(Val::Owned(Box::new(Value::from_json(&env.ctx.to_json())))),
            VarPath::Dynamic(e) => {
                let p = e.eval_in(env, scope);
                let text = to_cow_str(&p);
                lookup_dynamic(&text, env, scope)
            }
        },
        Scope::Item(item) => match path {
            VarPath::Whole => Some((*item).clone()),
            VarPath::TargetingKey => item.member("targetingKey"),
            VarPath::Segments(segs) => segs
                .iter()
                .try_fold((*item).clone(), |v, s| v.member_tagged(s.tag, &s.name)),
            VarPath::Dynamic(e) => {
                let p = e.eval_in(env, scope);
                let text = to_cow_str(&p);
                lookup_dynamic(&text, env, scope)
            }
        },
        Scope::Reduce(current, acc) => {
            let segs: Vec<&str> = match path {
                VarPath::Whole => return None,
                VarPath::TargetingKey => vec!["targetingKey"],
                VarPath::Segments(s) => s.iter().map(|x| &*x.name).collect(),
                VarPath::Dynamic(_) => return None,
            };
            let (first, rest) = segs.split_first()?;
            let start = match *first {
                "current" => (*current).clone(),
                "accumulator" => (*acc).clone(),
                _ => return None,
            };
            rest.iter().try_fold(start, |v, s| v.member(s))
        }
    }
}

fn lookup_dynamic<'a>(text: &str, env: &Env<'a>, scope: &Scope<'a, '_>) -> Option<Val<'a>> {
    let path = match text {
        "" => VarPath::Whole,
        "targetingKey" => VarPath::TargetingKey,
        t => VarPath::Segments(segments(t)),
    };
    // The temporary path lives only for this call, so copy out what it finds.
    lookup(&path, env, scope).map(|v| Val::owned(v.to_value()))
}

fn eval_keys<'a>(args: &'a [Expr], env: &Env<'a>, scope: &Scope<'a, '_>) -> Vec<Val<'a>> {
    let first = args.first().map(|a| a.eval_in(env, scope));
    match first {
        Some(f) if f.len_if_array().is_some() => f
            .items()
            .unwrap_or_default()
            .iter()
            .map(|v| Val::owned(v.to_value()))
            .collect(),
        _ => args.iter().map(|a| a.eval_in(env, scope)).collect(),
    }
}

fn missing_keys<'a>(keys: &[Val<'a>], env: &Env<'a>, scope: &Scope<'a, '_>) -> Vec<Val<'a>> {
    keys.iter()
        .filter(|k| {
            let name = to_cow_str(k);
            match lookup_dynamic(&name, env, scope) {
                None => true,
                Some(v) => v.is_null() || v.as_str() == Some(""),
            }
        })
        .cloned()
        .collect()
}

fn eval_arith<'a>(op: Arith, args: &'a [Expr], env: &Env<'a>, scope: &Scope<'a, '_>) -> Val<'a> {
    let mut nums = args.iter().map(|a| to_number(&a.eval_in(env, scope)));
    let r = match op {
        Arith::Add => nums.sum(),
        Arith::Mul => nums.product(),
        Arith::Sub => match (nums.next(), nums.next()) {
            (Some(a), None) => -a,
            (Some(a), Some(b)) => a - b,
            _ => return Val::Null,
        },
        Arith::Div | Arith::Rem => match (nums.next(), nums.next()) {
            (Some(a), Some(b)) => {
                if matches!(op, Arith::Div) {
                    a / b
                } else {
                    a % b
                }
            }
            _ => return Val::Null,
        },
        Arith::Max => match nums.reduce(f64::max) {
            Some(m) => m,
            None => return Val::Null,
        },
        Arith::Min => match nums.reduce(f64::min) {
            Some(m) => m,
            None => return Val::Null,
        },
    };
    Val::Num(r)
}
