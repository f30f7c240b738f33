//! JsonLogic, compiled: a targeting rule is parsed once into an [`Expr`] tree whose
//! evaluation neither parses nor, on the common shapes, allocates.
//!
//! Semantics follow jsonlogic.com (JavaScript truthiness, `==` with coercion, lazy `if`,
//! `and`, `or`) plus flagd's custom operators `fractional`, `sem_ver`, `starts_with` and
//! `ends_with`, which return `null` on bad input instead of failing. Where flagd's own
//! engine fails a whole evaluation (`cat` of a boolean, an array or an object), the
//! rule records a fault in [`Env`] and the flag evaluates to `PARSE_ERROR`.

use std::borrow::Cow;
use std::cell::Cell;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::bucket::{self, Murmur3};
use crate::context::{EvaluationContext, Map, Tag, Value};
use crate::semver::{self, Version};

/// How many arguments an operator takes, as the flagd schema says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arity {
    Exactly(usize),
    Between(usize, usize),
    AtLeast(usize),
}

impl Arity {
    pub(crate) fn allows(self, n: usize) -> bool {
        match self {
            Self::Exactly(k) => n == k,
            Self::Between(a, b) => (a..=b).contains(&n),
            Self::AtLeast(k) => n >= k,
        }
    }

    pub(crate) fn describe(self) -> String {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        match self {
            Self::Exactly(k) => format!("exactly {k} argument{}", plural(k)),
            Self::Between(a, b) => format!("{a} or {b} arguments"),
            Self::AtLeast(k) => format!("at least {k} argument{}", plural(k)),
        }
    }
}

/// Every operator the evaluator knows, with the arity the flagd schema gives it.
/// `?:` is not in the schema (strict validation refuses it) but flagd's engine runs it.
pub(crate) const OPERATORS: &[(&str, Arity)] = &[
    ("var", Arity::Between(0, 2)),
    ("missing", Arity::AtLeast(0)),
    ("missing_some", Arity::Exactly(2)),
    ("if", Arity::AtLeast(1)),
    ("?:", Arity::Exactly(3)),
    ("==", Arity::Exactly(2)),
    ("===", Arity::Exactly(2)),
    ("!=", Arity::Exactly(2)),
    ("!==", Arity::Exactly(2)),
    (">", Arity::Exactly(2)),
    (">=", Arity::Exactly(2)),
    ("<", Arity::Between(2, 3)),
    ("<=", Arity::Between(2, 3)),
    ("!", Arity::Exactly(1)),
    ("!!", Arity::Exactly(1)),
    ("or", Arity::AtLeast(1)),
    ("and", Arity::AtLeast(1)),
    ("%", Arity::Exactly(2)),
    ("/", Arity::Exactly(2)),
    ("+", Arity::AtLeast(1)),
    ("-", Arity::Between(1, 2)),
    ("*", Arity::AtLeast(2)),
    ("max", Arity::AtLeast(1)),
    ("min", Arity::AtLeast(1)),
    ("map", Arity::Exactly(2)),
    ("filter", Arity::Exactly(2)),
    ("reduce", Arity::Exactly(3)),
    ("all", Arity::Exactly(2)),
    ("none", Arity::Exactly(2)),
    ("some", Arity::Exactly(2)),
    ("in", Arity::Exactly(2)),
    ("merge", Arity::AtLeast(1)),
    ("cat", Arity::AtLeast(1)),
    ("substr", Arity::Between(2, 3)),
    ("fractional", Arity::AtLeast(1)),
    ("sem_ver", Arity::Exactly(3)),
    ("starts_with", Arity::Exactly(2)),
    ("ends_with", Arity::Exactly(2)),
];

pub(crate) fn arity(op: &str) -> Option<Arity> {
    OPERATORS
        .iter()
        .find(|(name, _)| *name == op)
        .map(|(_, a)| *a)
}

/// A targeting rule that cannot run: evaluating the flag gives `PARSE_ERROR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompileError(pub(crate) String);

#[derive(Clone, Copy, Debug)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Max,
    Min,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Iter {
    Map,
    Filter,
    All,
    None,
    Some,
}

/// Where a `var` reads from.
#[derive(Debug)]
pub(crate) enum VarPath {
    /// `""`: the whole data object.
    Whole,
    /// `targetingKey`.
    TargetingKey,
    /// A dotted path; each segment pre-split and tagged.
    Segments(Box<[Segment]>),
    /// Computed at evaluation time.
    Dynamic(Box<Expr>),
}

/// One segment of a `var` path.
#[derive(Debug)]
pub(crate) struct Segment {
    tag: Tag,
    name: Box<str>,
}

fn segments(path: &str) -> Box<[Segment]> {
    path.split('.')
        .map(|p| Segment {
            tag: Tag::of(p),
            name: p.into(),
        })
        .collect()
}

/// A set of literal strings for `in`; small sets are scanned, larger ones hashed.
#[derive(Debug)]
pub(crate) enum StrSet {
    Small(Box<[(Tag, Box<str>)]>),
    Large(HashSet<Box<str>, foldhash::fast::RandomState>),
}

impl StrSet {
    fn contains(&self, s: &str) -> bool {
        match self {
            Self::Small(items) => {
                let tag = Tag::of(s);
                items.iter().any(|(t, i)| tag.same(s, *t, i))
            }
            Self::Large(set) => set.contains(s),
        }
    }
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

const NO_VARIANT: u32 = u32::MAX;

/// Buckets whose variants and weights are all literals, resolved at compile time.
#[derive(Debug)]
pub(crate) struct StaticBuckets {
    variants: Box<[Value]>,
    /// Per bucket, in one array so that a pick reads one cache line: the cumulative
    /// upper bound, and the index of the flag's variant it selects (filled in by
    /// [`resolve_variants`]; `NO_VARIANT` when it names none).
    ends: Box<[(u32, u32)]>,
    total: u32,
}

#[derive(Debug)]
pub(crate) enum BucketBy {
    /// Shorthand: the flag key followed by the targeting key.
    Default,
    /// A rule or literal evaluated first; see [`eval_fractional`].
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

/// A compiled JsonLogic expression.
#[derive(Debug)]
pub(crate) enum Expr {
    Lit(Value),
    /// A literal in result position that names variant `.0` of the flag.
    Variant(u32, Value),
    /// `==` / `!=` (when `.3`) against a literal string.
    EqStr(Box<Expr>, Tag, Box<str>, bool),
    Array(Vec<Expr>),
    Var(VarPath, Option<Box<Expr>>),
    Timestamp,
    FlagdObject,
    /// `$flagd.flagKey` inside a shared evaluator: the key of the flag being evaluated.
    FlagKey,
    /// `{"$ref": name}`: the evaluator, compiled once per snapshot and shared by every
    /// reference (a rule referencing a large evaluator 10,000 times holds it once).
    Ref(Arc<Expr>),
    Missing(Vec<Expr>),
    MissingSome(Vec<Expr>),
    If(Vec<Expr>),
    Eq(Box<[Expr; 2]>, bool),
    StrictEq(Box<[Expr; 2]>, bool),
    Cmp(Cmp, Vec<Expr>),
    Not(Box<Expr>, bool),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Arith(Arith, Vec<Expr>),
    In(Box<[Expr; 2]>),
    InSet(Box<Expr>, StrSet, Box<[Value]>),
    Merge(Vec<Expr>),
    /// `cat` of an argument list, see [`eval_cat`].
    Cat(Vec<Expr>),
    /// `cat` of one argument that is not a list (`{"cat": {"var": "s"}}`): flagd returns
    /// it if it is a string and fails the evaluation otherwise.
    CatOne(Box<Expr>),
    Substr(Vec<Expr>),
    Iter(Iter, Box<[Expr; 2]>),
    Reduce(Box<[Expr; 3]>),
    StartsWith(Vec<Expr>, bool),
    SemVer(Box<SemVerRule>),
    Fractional(Box<Fractional>),
}

/// What compilation needs to know besides the rule.
#[derive(Clone, Copy)]
pub(crate) struct CompileCx<'s> {
    /// The flag's key; `None` while compiling a shared evaluator.
    pub(crate) flag_key: Option<&'s str>,
    pub(crate) evaluators: &'s serde_json::Map<String, Json>,
    /// The evaluators compiled so far, shared by every flag of one snapshot.
    pub(crate) shared: &'s Shared,
}

/// Evaluators compiled once per snapshot.
#[derive(Default)]
pub(crate) struct Shared {
    compiled: RefCell<HashMap<String, Result<Arc<Expr>, CompileError>>>,
    sizes: RefCell<HashMap<String, usize>>,
}

/// The compiled size of a rule (see [`crate::limits::MAX_COMPILED_SIZE`]): every JSON
/// value once, an array of literals as one, a `$ref` as the size of its evaluator each
/// time. Stops counting above `cap`, so that a rule far too large costs little to refuse.
pub(crate) fn rule_size(
    v: &Json,
    evaluators: &serde_json::Map<String, Json>,
    shared: &Shared,
    cap: usize,
) -> usize {
    fn walk(
        v: &Json,
        evaluators: &serde_json::Map<String, Json>,
        shared: &Shared,
        cap: usize,
        total: &mut usize,
        in_evaluator: bool,
    ) {
        if *total > cap {
            return;
        }
        match v {
            Json::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
                *total += 1;
            }
            Json::Array(items) => {
                *total += 1;
                for i in items {
                    walk(i, evaluators, shared, cap, total, in_evaluator);
                }
            }
            Json::Object(m) => {
                if !in_evaluator
                    && m.len() == 1
                    && let Some(Json::String(name)) = m.get("$ref")
                {
                    let known = shared.sizes.borrow().get(name.as_str()).copied();
                    let size = match known {
                        Some(n) => n,
                        None => {
                            let mut n = 0;
                            if let Some(body) = evaluators.get(name) {
                                walk(body, evaluators, shared, cap, &mut n, true);
                            }
                            shared.sizes.borrow_mut().insert(name.clone(), n);
                            n
                        }
                    };
                    *total += size.max(1);
                    return;
                }
                *total += 1;
                for x in m.values() {
                    walk(x, evaluators, shared, cap, total, in_evaluator);
                }
            }
            _ => *total += 1,
        }
    }
    let mut total = 0;
    walk(v, evaluators, shared, cap, &mut total, false);
    total
}

fn args_of(v: &Json) -> Cow<'_, [Json]> {
    match v {
        Json::Array(a) => Cow::Borrowed(a.as_slice()),
        other => Cow::Owned(vec![other.clone()]),
    }
}

fn lit_from_json(v: &Json) -> Value {
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

fn compile_all(args: &[Json], cx: &CompileCx<'_>) -> Result<Vec<Expr>, CompileError> {
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
        let Json::String(name) = raw else {
            return Err(CompileError(
                "\"$ref\" must name an evaluator with a string".into(),
            ));
        };
        if cx.flag_key.is_none() {
            return Err(CompileError(format!(
                "evaluators cannot reference other evaluators (\"$ref\": \"{name}\")"
            )));
        }
        if let Some(done) = cx.shared.compiled.borrow().get(name.as_str()) {
            return done.clone().map(Expr::Ref);
        }
        let Some(body) = cx.evaluators.get(name) else {
            return Err(CompileError(format!(
                "\"$ref\": \"{name}\" names no evaluator in $evaluators"
            )));
        };
        let inner = CompileCx {
            flag_key: None,
            ..*cx
        };
        let done = compile(body, &inner).map(Arc::new);
        cx.shared
            .compiled
            .borrow_mut()
            .insert(name.clone(), done.clone());
        return done.map(Expr::Ref);
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

fn compile_semver(args: &[Json], cx: &CompileCx<'_>) -> Result<Expr, CompileError> {
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

fn compile_fractional(args: &[Json], cx: &CompileCx<'_>) -> Result<Expr, CompileError> {
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

/// A value during evaluation: borrowed from the rule or the context where possible.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    String(String),
    Arr(&'a [Value]),
    Obj(&'a Map),
    List(Vec<Val<'a>>),
    Owned(Box<Value>),
}

impl<'a> Val<'a> {
    #[inline]
    pub(crate) fn of(v: &'a Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Int(i) => Self::Num(*i as f64),
            Value::Float(f) => Self::Num(*f),
            Value::String(s) => Self::Str(s),
            Value::Array(a) => Self::Arr(a),
            Value::Object(o) => Self::Obj(o),
        }
    }

    fn owned(v: Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(b),
            Value::Int(i) => Self::Num(i as f64),
            Value::Float(f) => Self::Num(f),
            Value::String(s) => Self::String(s),
            other => Self::Owned(Box::new(other)),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Num(n) => num_value(*n),
            Self::Str(s) => Value::String((*s).to_owned()),
            Self::String(s) => Value::String(s.clone()),
            Self::Arr(a) => Value::Array(a.to_vec()),
            Self::Obj(o) => Value::Object((*o).clone()),
            Self::List(l) => Value::Array(l.iter().map(Val::to_value).collect()),
            Self::Owned(v) => (**v).clone(),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            Self::String(s) => Some(s),
            Self::Owned(v) => match &**v {
                Value::String(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Self::Null) || matches!(self, Self::Owned(v) if **v == Value::Null)
    }

    fn kind(&self) -> Kind {
        match self {
            Self::Null => Kind::Null,
            Self::Bool(_) => Kind::Bool,
            Self::Num(_) => Kind::Num,
            Self::Str(_) | Self::String(_) => Kind::Str,
            Self::Arr(_) | Self::List(_) => Kind::Array,
            Self::Obj(_) => Kind::Object,
            Self::Owned(v) => match &**v {
                Value::Null => Kind::Null,
                Value::Bool(_) => Kind::Bool,
                Value::Int(_) | Value::Float(_) => Kind::Num,
                Value::String(_) => Kind::Str,
                Value::Array(_) => Kind::Array,
                Value::Object(_) => Kind::Object,
            },
        }
    }

    /// The elements, if this is an array.
    fn items(&self) -> Option<Vec<Val<'_>>> {
        match self {
            Self::Arr(a) => Some(a.iter().map(Val::of).collect()),
            Self::List(l) => Some(l.clone()),
            Self::Owned(v) => match &**v {
                Value::Array(a) => Some(a.iter().map(Val::of).collect()),
                _ => None,
            },
            _ => None,
        }
    }

    fn len_if_array(&self) -> Option<usize> {
        match self {
            Self::Arr(a) => Some(a.len()),
            Self::List(l) => Some(l.len()),
            Self::Owned(v) => match &**v {
                Value::Array(a) => Some(a.len()),
                _ => None,
            },
            _ => None,
        }
    }

    /// One member or element, following a path segment.
    fn member(&self, seg: &str) -> Option<Val<'a>> {
        self.member_tagged(Tag::of(seg), seg)
    }

    #[inline]
    fn member_tagged(&self, tag: Tag, seg: &str) -> Option<Val<'a>> {
        match self {
            Self::Obj(m) => m.get_tagged(tag, seg).map(Val::of),
            Self::Arr(a) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .map(Val::of),
            Self::List(l) => seg.parse::<usize>().ok().and_then(|i| l.get(i)).cloned(),
            Self::Owned(v) => {
                let found = match &**v {
                    Value::Object(m) => m.get(seg),
                    Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                found.map(|f| Val::owned(f.clone()))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Num,
    Str,
    Array,
    Object,
}

fn num_value(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Value::Int(n as i64)
    } else {
        Value::Float(n)
    }
}

/// JavaScript truthiness, with `[]` falsy as in JsonLogic.
#[inline]
pub(crate) fn truthy(v: &Val<'_>) -> bool {
    match v {
        Val::Null => false,
        Val::Bool(b) => *b,
        Val::Num(n) => *n != 0.0 && !n.is_nan(),
        Val::Str(s) => !s.is_empty(),
        Val::String(s) => !s.is_empty(),
        Val::Arr(a) => !a.is_empty(),
        Val::List(l) => !l.is_empty(),
        Val::Obj(_) => true,
        Val::Owned(v) => value_truthy(v),
    }
}

fn value_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0 && !f.is_nan(),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

fn to_number(v: &Val<'_>) -> f64 {
    match v {
        Val::Null => 0.0,
        Val::Bool(b) => f64::from(u8::from(*b)),
        Val::Num(n) => *n,
        Val::Str(s) => str_to_number(s),
        Val::String(s) => str_to_number(s),
        Val::Owned(v) => to_number(&Val::of(v)),
        Val::Arr(a) if a.len() == 1 => to_number(&Val::of(&a[0])),
        Val::Arr([]) => 0.0,
        _ => f64::NAN,
    }
}

fn str_to_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        0.0
    } else {
        t.parse().unwrap_or(f64::NAN)
    }
}

/// Numbers as flagd prints them: shortest decimal, no exponent (`1`, `1.5`).
pub(crate) fn format_number(n: f64) -> String {
    if n == 0.0 {
        "0".to_owned()
    } else {
        format!("{n}")
    }
}

fn write_str(v: &Val<'_>, out: &mut String) {
    match v {
        Val::Null => {}
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Num(n) => out.push_str(&format_number(*n)),
        Val::Str(s) => out.push_str(s),
        Val::String(s) => out.push_str(s),
        Val::Arr(_) | Val::List(_) => {
            if let Some(items) = v.items() {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(item, out);
                }
            }
        }
        Val::Obj(_) => out.push_str(&v.to_value().to_json().to_string()),
        Val::Owned(o) => write_str(&Val::of(o), out),
    }
}

/// Why an evaluation failed on `cat`.
pub(crate) const CAT_FAULT: &str = "cat can join only strings, numbers and null (flagd fails the evaluation on a boolean, an array or an object)";

/// `cat` as flagd's engine (diegoholiveira/jsonlogic v3.9.1) does it: `null` (a missing
/// attribute too) adds nothing, numbers are written as Go's
/// `strconv.FormatFloat(n, 'f', -1, 64)` writes them, strings as they are; with two or
/// more arguments the result is whitespace-trimmed. A boolean, an array or an object
/// fails the evaluation there (a type assertion panics), so it is a fault here.
fn eval_cat<'a>(args: &'a [Expr], env: &Env<'a>, scope: &Scope<'a, '_>) -> Val<'a> {
    let mut s = String::new();
    for a in args {
        if !write_cat_part(&a.eval_in(env, scope), &mut s) {
            env.fail(CAT_FAULT);
            return Val::Null;
        }
    }
    if args.len() > 1 {
        let t = s.trim();
        if t.len() != s.len() {
            s = t.to_owned();
        }
    }
    Val::String(s)
}

/// Appends one `cat` argument; `false` for the values flagd cannot join.
fn write_cat_part(v: &Val<'_>, out: &mut String) -> bool {
    match v {
        Val::Null => true,
        Val::Num(n) => {
            write_go_number(*n, out);
            true
        }
        Val::Str(s) => {
            out.push_str(s);
            true
        }
        Val::String(s) => {
            out.push_str(s);
            true
        }
        Val::Bool(_) | Val::Arr(_) | Val::List(_) | Val::Obj(_) => false,
        Val::Owned(o) => write_cat_part(&Val::of(o), out),
    }
}

/// Go's `strconv.FormatFloat(n, 'f', -1, 64)`: the shortest digits that read back as
/// `n`, never an exponent (`1`, `1.5`, `1000000000000000000000`, `0.0000001`), and
/// `-0` for negative zero. Rust's `Display` for `f64` is the same for finite numbers.
fn write_go_number(n: f64, out: &mut String) {
    use std::fmt::Write as _;
    if n.is_nan() {
        out.push_str("NaN");
    } else if n.is_infinite() {
        out.push_str(if n > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Writing into a String cannot fail.
        let _ = write!(out, "{n}");
    }
}

fn to_cow_str<'v>(v: &'v Val<'_>) -> Cow<'v, str> {
    match v.as_str() {
        Some(s) => Cow::Borrowed(s),
        None => {
            let mut s = String::new();
            write_str(v, &mut s);
            Cow::Owned(s)
        }
    }
}

fn loose_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
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

fn strict_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    a.kind() == b.kind() && loose_eq(a, b)
}

fn less(a: &Val<'_>, b: &Val<'_>, or_equal: bool) -> bool {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        return if or_equal { x <= y } else { x < y };
    }
    let (x, y) = (to_number(a), to_number(b));
    if or_equal { x <= y } else { x < y }
}

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
    fn fail(&self, why: &'static str) {
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

/// What `var` reads: the context at the top, an element inside `map`/`filter`/…, and
/// `current`/`accumulator` inside `reduce`.
enum Scope<'a, 's> {
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
        match (self, scope) {
            (Expr::Var(VarPath::Segments(segs), None), Scope::Root) if segs.len() == 1 => {
                let seg = &segs[0];
                env.ctx
                    .get_tagged(seg.tag, &seg.name)
                    .map_or(Val::Null, Val::of)
            }
            (Expr::Lit(v), _) => Val::of(v),
            _ => self.eval_in(env, scope),
        }
    }

    /// Truthiness of the result, without building it where the operator is boolean
    /// anyway: conditions of `if`, `and`, `or`, `!` take this path.
    #[inline]
    fn eval_bool(&'a self, env: &Env<'a>, scope: &Scope<'a, '_>) -> bool {
        match self {
            Expr::And(args) => args.iter().all(|a| a.eval_bool(env, scope)),
            Expr::Or(args) => args.iter().any(|a| a.eval_bool(env, scope)),
            Expr::Not(a, negate) => a.eval_bool(env, scope) != *negate,
            Expr::EqStr(other, tag, lit, negate) => {
                let v = other.eval_operand(env, scope);
                let eq = match v.as_str() {
                    Some(s) => tag.same(lit, Tag::of(s), s),
                    None => loose_eq(&v, &Val::Str(lit)),
                };
                eq != *negate
            }
            Expr::InSet(needle, set, lits) => {
                let n = needle.eval_operand(env, scope);
                match n.as_str() {
                    Some(s) => set.contains(s),
                    None => contains(&Val::Arr(lits), &n),
                }
            }
            Expr::Ref(inner) => inner.eval_bool(env, scope),
            other => truthy(&other.eval_in(env, scope)),
        }
    }

    fn eval_in(&'a self, env: &Env<'a>, scope: &Scope<'a, '_>) -> Val<'a> {
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
                    if args[i].eval_bool(env, scope) {
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

fn contains(hay: &Val<'_>, needle: &Val<'_>) -> bool {
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

fn eval_substr<'a>(args: &'a [Expr], env: &Env<'a>, scope: &Scope<'a, '_>) -> Val<'a> {
    let s = args.first().map_or(Val::Null, |a| a.eval_in(env, scope));
    let s = to_cow_str(&s);
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len() as i64;
    let start = args
        .get(1)
        .map_or(0.0, |a| to_number(&a.eval_in(env, scope)));
    let start = if start.is_nan() { 0 } else { start as i64 };
    let start = if start < 0 {
        (n + start).max(0)
    } else {
        start.min(n)
    };
    let end = match args.get(2) {
        None => n,
        Some(l) => {
            let len = to_number(&l.eval_in(env, scope));
            let len = if len.is_nan() { 0 } else { len as i64 };
            if len < 0 {
                (n + len).max(start)
            } else {
                (start + len).min(n)
            }
        }
    };
    Val::String(
        chars[start as usize..end.max(start) as usize]
            .iter()
            .collect(),
    )
}

fn eval_semver<'a>(rule: &'a SemVerRule, env: &Env<'a>, scope: &Scope<'a, '_>) -> Val<'a> {
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

fn eval_fractional<'a>(f: &'a Fractional, env: &Env<'a>, scope: &Scope<'a, '_>) -> Val<'a> {
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
        let mut h = f.flag_key_hash.unwrap_or_else(|| key_hash(env.flag_key));
        h.write(tk.as_bytes());
        return Pick::Fixed(fixed, fixed.pick(h.finish()));
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
                    if args[i].eval_bool(env, &scope) {
                        return args[i + 1].eval_outcome(env);
                    }
                    i += 2;
                }
                if i < args.len() {
                    args[i].eval_outcome(env)
                } else {
                    Outcome::Value(Val::Null)
                }
            }
            Expr::Fractional(f) => f.outcome(env),
            other => Outcome::Value(other.eval(env)),
        }
    }
}

impl Fractional {
    /// Evaluates a `fractional` in result position.
    #[inline]
    pub(crate) fn outcome<'a>(&'a self, env: &Env<'a>) -> Outcome<'a> {
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

/// The variant name a literal result selects: strings name it, booleans select
/// `"true"`/`"false"`, numbers their decimal text.
fn variant_key(v: &Value) -> Option<Cow<'_, str>> {
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
        Expr::Fractional(f) => {
            if let Some(Ok(fixed)) = &mut f.fixed {
                for (slot, v) in fixed.ends.iter_mut().zip(&fixed.variants) {
                    slot.1 = variant_key(v)
                        .and_then(|k| find(&k))
                        .and_then(|i| u32::try_from(i).ok())
                        .unwrap_or(NO_VARIANT);
                }
            }
        }
        _ => {}
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
mod tests;
