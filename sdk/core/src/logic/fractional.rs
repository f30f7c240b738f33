//! `fractional`, all of it: its compiled form, reading buckets, the pick, and its result
//! in result position. Literal buckets are resolved at compile time, so the common
//! rollout hashes and picks without evaluating or allocating anything.

use serde_json::Value as Json;

use super::compile::{CompileCx, compile, compile_all};
use super::evaluate::{Env, Scope};
use super::expr::{CompileError, Expr};
use super::outcome::{Outcome, variant_key};
use super::value::{Kind, Val};
use crate::bucket::{self, Murmur3};
use crate::context::Value;

const NO_VARIANT: u32 = u32::MAX;

/// Buckets whose variants and weights are all literals, resolved at compile time.
#[derive(Debug)]
pub(crate) struct StaticBuckets {
    variants: Box<[Value]>,
    /// Per bucket, in one array so that a pick reads one cache line: the cumulative
    /// upper bound, and the index of the flag's variant it selects (filled in by
    /// [`super::resolve_variants`]; `NO_VARIANT` when it names none).
    ends: Box<[(u32, u32)]>,
    total: u32,
}

#[derive(Debug)]
pub(crate) enum BucketBy {
    /// Shorthand: the flag key followed by the targeting key.
    Default,
    /// A rule or literal evaluated first; see [`pick_fractional`].
    Expr(Expr),
}

#[derive(Debug)]
pub(crate) struct Fractional {
    bucket_by: BucketBy,
    buckets: Vec<Expr>,
    /// `Some(Ok)` when every bucket is literal; `Some(Err)` when the literal buckets are
    /// invalid (the operator always returns null).
    fixed: Option<Result<StaticBuckets, ()>>,
    /// The hasher state after the flag key, for the default bucketing value; `None`
    /// inside a shared evaluator, where the flag key is known only when evaluating.
    flag_key_hash: Option<Murmur3>,
}

pub(super) fn compile_fractional(args: &[Json], cx: &CompileCx<'_>) -> Result<Expr, CompileError> {
    let flag_key_hash = cx.flag_key.map(key_hash);
    let (bucket_by, rest) = match args.first() {
        None => (BucketBy::Default, args),
        Some(Json::Array(_)) => (BucketBy::Default, args),
        Some(first) => (BucketBy::Expr(compile(first, cx)?), &args[1..]),
    };
    let buckets = compile_all(rest, cx)?;
    let fixed = if buckets.iter().all(|b| matches!(b, Expr::Lit(_))) {
        let vals: Vec<Val<'_>> = buckets
            .iter()
            .map(|b| {
                if let Expr::Lit(v) = b {
                    Val::of(v)
                } else {
                    Val::Null
                }
            })
            .collect();
        Some(parse_buckets(&vals).map(|p| StaticBuckets {
            variants: p.variants.iter().map(Val::to_value).collect(),
            ends: p.ends.iter().map(|&e| (e, NO_VARIANT)).collect(),
            total: p.total,
        }))
    } else {
        None
    };
    Ok(Expr::Fractional(Box::new(Fractional {
        bucket_by,
        buckets,
        fixed,
        flag_key_hash,
    })))
}

/// The murmur3 state after a flag key: where the default bucketing value starts.
fn key_hash(flag_key: &str) -> Murmur3 {
    let mut h = Murmur3::new(0);
    h.write(flag_key.as_bytes());
    h
}

struct ParsedBuckets<'a> {
    variants: Vec<Val<'a>>,
    ends: Vec<u32>,
    total: u32,
}

/// Reads evaluated buckets `[variant, weight?]`; `Err` for anything flagd refuses: not
/// an array, no buckets, a variant that is not a string, boolean, number or null, a
/// weight that is not a whole number or is too large, or weights that sum to zero.
fn parse_buckets<'a>(buckets: &[Val<'a>]) -> Result<ParsedBuckets<'a>, ()> {
    if buckets.is_empty() {
        return Err(());
    }
    let mut variants = Vec::with_capacity(buckets.len());
    let mut ends = Vec::with_capacity(buckets.len());
    let mut total: u64 = 0;
    for b in buckets {
        let (variant, weight, len) = match b {
            Val::Arr(a) => (a.first().map(Val::of), a.get(1).map(Val::of), a.len()),
            Val::List(l) => (l.first().cloned(), l.get(1).cloned(), l.len()),
            Val::Owned(v) => match &**v {
                Value::Array(a) => (
                    a.first().map(|x| Val::owned(x.clone())),
                    a.get(1).map(|x| Val::owned(x.clone())),
                    a.len(),
                ),
                _ => return Err(()),
            },
            _ => return Err(()),
        };
        if !(1..=2).contains(&len) {
            return Err(());
        }
        let variant = variant.ok_or(())?;
        if !matches!(
            variant.kind(),
            Kind::Str | Kind::Bool | Kind::Num | Kind::Null
        ) {
            return Err(());
        }
        let weight = match weight {
            None | Some(Val::Null) => 1,
            Some(Val::Num(w)) if w.is_finite() && w.fract() == 0.0 && w <= f64::from(i32::MAX) => {
                if w < 0.0 {
                    0
                } else {
                    w as u64
                }
            }
            Some(_) => return Err(()),
        };
        variants.push(variant);
        total += weight;
        if total > i32::MAX as u64 {
            return Err(());
        }
        ends.push(total as u32);
    }
    if total == 0 {
        return Err(());
    }
    Ok(ParsedBuckets {
        variants,
        ends,
        total: total as u32,
    })
}

/// Which bucket a `fractional` chose.
enum Pick<'a> {
    /// Bucket `i` of the precomputed literal buckets.
    Fixed(&'a StaticBuckets, usize),
    /// A variant from evaluated buckets, or `null`.
    Value(Val<'a>),
}

// Inlined into the evaluator as when it shared its file (the same instructions per
// evaluation as before the split).
#[inline]
pub(super) fn eval_fractional<'a>(
    f: &'a Fractional,
    env: &Env<'a>,
    scope: &Scope<'a, '_>,
) -> Val<'a> {
    match pick_fractional(f, env, scope) {
        Pick::Fixed(fixed, i) => Val::of(&fixed.variants[i]),
        Pick::Value(v) => v,
    }
}

fn pick_fractional<'a>(f: &'a Fractional, env: &Env<'a>, scope: &Scope<'a, '_>) -> Pick<'a> {
    // The common rollout: literal buckets on the default bucketing value.
    if let (BucketBy::Default, Some(Ok(fixed))) = (&f.bucket_by, &f.fixed) {
        let Some(tk) = env.ctx.targeting_key().filter(|k| !k.is_empty()) else {
            return Pick::Value(Val::Null);
        };
        let h = f.flag_key_hash.unwrap_or_else(|| key_hash(env.flag_key));
        return Pick::Fixed(fixed, fixed.pick_for(h, tk));
    }
    // Decide what is hashed: an explicit string, or the flag key and the targeting key.
    let mut dynamic_first: Option<Val<'a>> = None;
    let explicit: Option<Val<'a>> = match &f.bucket_by {
        BucketBy::Default => None,
        BucketBy::Expr(e) => {
            let v = e.eval_in(env, scope);
            match v.kind() {
                Kind::Str => Some(v),
                Kind::Null => None,
                // Not a string: flagd reads it as the first bucket (and usually fails).
                _ => {
                    dynamic_first = Some(v);
                    None
                }
            }
        }
    };
    let hash = match &explicit {
        Some(v) => bucket::murmur3_x86_32(v.as_str().unwrap_or_default().as_bytes()),
        None => {
            let tk = match env.ctx.targeting_key() {
                Some(k) if !k.is_empty() => k,
                _ => {
                    // flagd evaluates every argument before it looks for the targeting
                    // key, so a bucket rule that fails there (a `cat` of a boolean)
                    // fails the evaluation even now.
                    if f.fixed.is_none() {
                        for b in &f.buckets {
                            drop(b.eval_in(env, scope));
                        }
                    }
                    return Pick::Value(Val::Null);
                }
            };
            let mut h = f.flag_key_hash.unwrap_or_else(|| key_hash(env.flag_key));
            h.write(tk.as_bytes());
            h.finish()
        }
    };

    if dynamic_first.is_none()
        && let Some(fixed) = &f.fixed
    {
        let Ok(fixed) = fixed else {
            return Pick::Value(Val::Null);
        };
        return Pick::Fixed(fixed, fixed.pick(hash));
    }
    let mut vals: Vec<Val<'a>> = Vec::with_capacity(f.buckets.len() + 1);
    vals.extend(dynamic_first);
    vals.extend(f.buckets.iter().map(|b| b.eval_in(env, scope)));
    let Ok(mut parsed) = parse_buckets(&vals) else {
        return Pick::Value(Val::Null);
    };
    let b = bucket::bucket(hash, parsed.total);
    let i = bucket::pick(parsed.ends.iter().copied(), b);
    Pick::Value(parsed.variants.swap_remove(i))
}

impl Fractional {
    /// The flag's variant in the common rollout (literal buckets, each naming a variant
    /// of the flag, on the flag key and a targeting key), or `None` when the whole
    /// evaluation must decide: no targeting key, a bucket naming no variant, a rule.
    /// Inlined where a flag's targeting is evaluated, so that a rollout needs no
    /// evaluation environment and no call of its own.
    #[inline(always)]
    pub(crate) fn quick_variant(&self, ctx: &crate::EvaluationContext) -> Option<usize> {
        let (BucketBy::Default, Some(Ok(fixed)), Some(h)) =
            (&self.bucket_by, &self.fixed, self.flag_key_hash)
        else {
            return None;
        };
        let tk = ctx.targeting_key().filter(|k| !k.is_empty())?;
        match fixed.ends.get(fixed.pick_for(h, tk))?.1 {
            NO_VARIANT => None,
            v => Some(v as usize),
        }
    }
}

impl Fractional {
    /// Evaluates a `fractional` in result position.
    #[inline]
    pub(crate) fn outcome<'a>(&'a self, env: &Env<'a>) -> Outcome<'a> {
        // A rollout in a rule's branch (`if …, "on", {"fractional": …}`) is decided as a
        // bare one is: no call of the general bucketing.
        if let Some(v) = self.quick_variant(env.ctx) {
            return Outcome::Variant(v);
        }
        match pick_fractional(self, env, &Scope::Root) {
            Pick::Fixed(fixed, i) => match fixed.ends[i].1 {
                NO_VARIANT => Outcome::Value(Val::of(&fixed.variants[i])),
                v => Outcome::Variant(v as usize),
            },
            Pick::Value(v) => Outcome::Value(v),
        }
    }
}

impl Expr {
    /// The rule as a bare `fractional`, when it is one: the compiled flag then holds
    /// it without a box, one pointer less to follow on every evaluation.
    pub(crate) fn into_fractional(self) -> Result<Fractional, Expr> {
        match self {
            Expr::Fractional(f) => Ok(*f),
            other => Err(other),
        }
    }
}

impl Fractional {
    /// Literal buckets: the index of the variant each selects, or `NO_VARIANT`.
    pub(super) fn resolve_variants(&mut self, find: &dyn Fn(&str) -> Option<usize>) {
        if let Some(Ok(fixed)) = &mut self.fixed {
            for (slot, v) in fixed.ends.iter_mut().zip(&fixed.variants) {
                slot.1 = variant_key(v)
                    .and_then(|k| find(&k))
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(NO_VARIANT);
            }
        }
    }
}

impl StaticBuckets {
    /// The bucket a hash falls in: `(hash * total) >> 32`, then the first bucket whose
    /// cumulative weight exceeds it.
    #[inline]
    fn pick(&self, hash: u32) -> usize {
        bucket::pick(
            self.ends.iter().map(|e| e.0),
            bucket::bucket(hash, self.total),
        )
    }

    /// The bucket of the default bucketing value: the flag key (`flag_key`, its hash
    /// state) followed by the targeting key.
    #[inline(always)]
    fn pick_for(&self, mut flag_key: Murmur3, targeting_key: &str) -> usize {
        flag_key.write(targeting_key.as_bytes());
        self.pick(flag_key.finish())
    }
}

#[cfg(test)]
impl StaticBuckets {
    fn weights(&self) -> Vec<u32> {
        let mut prev = 0;
        self.ends
            .iter()
            .map(|&(e, _)| {
                let w = e - prev;
                prev = e;
                w
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::logic::compile::{CompileCx, compile};
    use crate::logic::expr::Expr;
    use crate::logic::refs::Shared;

    #[test]
    fn static_buckets_are_precomputed() {
        let evaluators = serde_json::Map::new();
        let shared = Shared::default();
        let cx = CompileCx {
            flag_key: Some("f"),
            evaluators: &evaluators,
            shared: &shared,
        };
        let e = compile(
            &json!({"fractional": [["on", 10], ["off", -5], ["x"]]}),
            &cx,
        )
        .unwrap();
        let Expr::Fractional(f) = e else {
            panic!("not fractional")
        };
        let Some(Ok(fixed)) = &f.fixed else {
            panic!("not precomputed")
        };
        assert_eq!(fixed.weights(), vec![10, 0, 1]);
        assert_eq!(fixed.total, 11);
    }
}
