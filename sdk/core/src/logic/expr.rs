//! The compiled tree. The operators with compile-time state of their own (`sem_ver`,
//! `fractional`) keep their node types next to their code.

use std::collections::HashSet;
use std::sync::Arc;

use super::compare::SemVerRule;
use super::fractional::Fractional;
use crate::context::{Tag, Value};

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
    pub(super) tag: Tag,
    pub(super) name: Box<str>,
}

pub(super) fn segments(path: &str) -> Box<[Segment]> {
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
    /// Inlined where `in` is evaluated; a large set's hash lookup stays out of line.
    #[inline(always)]
    pub(super) fn contains(&self, s: &str) -> bool {
        match self {
            Self::Small(items) => {
                let tag = Tag::of(s);
                items.iter().any(|(t, i)| tag.same(s, *t, i))
            }
            Self::Large(set) => large_contains(set, s),
        }
    }
}

#[inline(never)]
fn large_contains(set: &HashSet<Box<str>, foldhash::fast::RandomState>, s: &str) -> bool {
    set.contains(s)
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
    /// `cat` of an argument list, see [`super::strings::eval_cat`].
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
