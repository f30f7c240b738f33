//! What is wrong with a document, and the collector every reader and check writes to.
//!
//! A leaf below both the model and strict validation: the model records structural
//! problems and validation records the rest into the same [`Checker`], so neither has to
//! know the other.

use std::fmt;

use crate::path::Path;

/// One thing wrong with a document: where (a JSON path such as
/// `flags.new-checkout.defaultVariant`) and what, in words a person understands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The JSON path of the offending value; empty for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A document that was refused, with every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<Problem>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Collects problems; a soft one only counts when validating strictly.
pub(crate) struct Checker {
    pub(crate) strict: bool,
    /// Loading for evaluation (SDK, server): a broken flag or evaluator is set aside
    /// instead of failing the whole set.
    pub(crate) isolate: bool,
    pub(crate) problems: Vec<Problem>,
}

impl Checker {
    pub(crate) fn hard(&mut self, path: &Path, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }
    pub(crate) fn soft(&mut self, path: &Path, message: impl Into<String>) {
        if self.strict {
            self.hard(path, message);
        }
    }

    /// What was read, unless anything was found wrong on the way: a document with any
    /// problem is refused as a whole, with all of them.
    pub(crate) fn finish<T>(self, read: Option<T>) -> Result<T, ValidationErrors> {
        match read {
            Some(v) if self.problems.is_empty() => Ok(v),
            _ => Err(ValidationErrors(self.problems)),
        }
    }
}
