//! The operators the evaluator knows, with their arities: one table that compilation and
//! strict validation both read, so that the two cannot disagree on what a rule may use.

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
