//! Semantic versions as flagd's `sem_ver` reads them (Go's `golang.org/x/mod/semver`):
//! an optional `v`/`V` prefix, shorthand `1` and `1.2` for `1.0.0` and `1.2.0`, SemVer 2.0.0
//! precedence with build metadata ignored.

use std::cmp::Ordering;

/// A parsed version. Pre-release identifiers borrow nothing so that literal versions can
/// be parsed once, at compile time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Vec<Ident>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ident {
    Num(u64),
    Alnum(Box<str>),
}

/// The comparison a `sem_ver` rule asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `~`: same major and minor.
    Tilde,
    /// `^`: same major.
    Caret,
}

impl Op {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "=" => Self::Eq,
            "!=" => Self::Ne,
            "<" => Self::Lt,
            "<=" => Self::Le,
            ">" => Self::Gt,
            ">=" => Self::Ge,
            "~" => Self::Tilde,
            "^" => Self::Caret,
            _ => return None,
        })
    }

    pub(crate) fn apply(self, a: &Version, b: &Version) -> bool {
        match self {
            Self::Eq => a.cmp(b) == Ordering::Equal,
            Self::Ne => a.cmp(b) != Ordering::Equal,
            Self::Lt => a.cmp(b) == Ordering::Less,
            Self::Le => a.cmp(b) != Ordering::Greater,
            Self::Gt => a.cmp(b) == Ordering::Greater,
            Self::Ge => a.cmp(b) != Ordering::Less,
            Self::Tilde => a.major == b.major && a.minor == b.minor,
            Self::Caret => a.major == b.major,
        }
    }
}

fn numeric(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Version {
    /// Parses a version the way flagd does: one leading `V` or `v` is optional.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let (rest, build) = match s.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let mut parts = core.split('.');
        let major = numeric(parts.next()?)?;
        let minor = parts.next().map(numeric);
        let patch = parts.next().map(numeric);
        if parts.next().is_some() {
            return None;
        }
        let full = patch.is_some();
        if !full && (pre.is_some() || build.is_some()) {
            return None;
        }
        let minor = minor.unwrap_or(Some(0))?;
        let patch = patch.unwrap_or(Some(0))?;
        if let Some(b) = build
            && !b.split('.').all(ident_ok)
        {
            return None;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) => {
                let mut ids = Vec::new();
                for id in p.split('.') {
                    if !ident_ok(id) {
                        return None;
                    }
                    if id.bytes().all(|b| b.is_ascii_digit()) {
                        ids.push(Ident::Num(numeric(id)?));
                    } else {
                        ids.push(Ident::Alnum(id.into()));
                    }
                }
                ids
            }
        };
        Some(Self {
            major,
            minor,
            patch,
            pre,
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = match (a, b) {
                            (Ident::Num(x), Ident::Num(y)) => x.cmp(y),
                            (Ident::Num(_), Ident::Alnum(_)) => Ordering::Less,
                            (Ident::Alnum(_), Ident::Num(_)) => Ordering::Greater,
                            (Ident::Alnum(x), Ident::Alnum(y)) => x.cmp(y),
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Whether `s` is a version the flagd schema accepts as a literal: strict SemVer 2.0.0,
/// `MAJOR.MINOR.PATCH` in full and no `v` prefix.
pub(crate) fn is_strict(s: &str) -> bool {
    !s.starts_with(['v', 'V'])
        && s.split(['-', '+'])
            .next()
            .is_some_and(|c| c.split('.').count() == 3)
        && Version::parse(s).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_like_go() {
        assert_eq!(v("1"), v("1.0.0"));
        assert_eq!(v("v1.2"), v("1.2.0"));
        assert_eq!(v("V1.0.0"), v("1.0.0"));
        for bad in [
            "2.0.0.0",
            "not-a-version",
            "01.0.0",
            "1.2-pre",
            "1.0.0-",
            "1.0.0+",
            "",
            "v",
            "1..0",
        ] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn precedence() {
        let order = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ];
        for w in order.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.0.0+other"), v("1.0.0+build"));
    }

    #[test]
    fn tilde_and_caret_have_no_lower_bound() {
        assert!(Op::Tilde.apply(&v("3.0.1"), &v("3.0.0")));
        assert!(Op::Tilde.apply(&v("3.0.0"), &v("3.0.5")));
        assert!(!Op::Tilde.apply(&v("3.1.0"), &v("3.0.0")));
        assert!(Op::Caret.apply(&v("3.1.0"), &v("3.0.0")));
        assert!(!Op::Caret.apply(&v("4.0.0"), &v("3.0.0")));
    }

    #[test]
    fn strict_literals() {
        assert!(is_strict("1.0.0"));
        assert!(is_strict("1.0.0-rc.1+build.5"));
        assert!(!is_strict("v1.0.0"));
        assert!(!is_strict("1.0"));
        assert!(!is_strict("2.0.0.0"));
    }
}
