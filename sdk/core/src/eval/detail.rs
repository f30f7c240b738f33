//! What an evaluation answers: the result and its reason and error codes, as OpenFeature
//! names them.

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value as Json};

/// Why an evaluation produced its value (the OpenFeature reasons flagd uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum Reason {
    /// No targeting: the default variant.
    Static,
    /// Targeting chose a variant (a `fractional` split included).
    TargetingMatch,
    /// Targeting did not decide: the default variant, or the caller's default when the
    /// flag has none.
    Default,
    /// The flag is disabled: the caller's default.
    Disabled,
    /// Something went wrong: the caller's default, see the error code.
    Error,
}

impl Reason {
    /// The OpenFeature name, e.g. `TARGETING_MATCH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "STATIC",
            Self::TargetingMatch => "TARGETING_MATCH",
            Self::Default => "DEFAULT",
            Self::Disabled => "DISABLED",
            Self::Error => "ERROR",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, with the OpenFeature error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No flag with that key.
    FlagNotFound,
    /// The flag's value is not of the requested type.
    TypeMismatch,
    /// The targeting rule cannot run (unknown operator, missing `$ref`, `cat` of a
    /// boolean, an array or an object).
    ParseError,
    /// A targeting key was required and missing.
    TargetingKeyMissing,
    /// The context is not usable.
    InvalidContext,
    /// Anything else, e.g. targeting returned a variant the flag does not have.
    General,
}

impl ErrorCode {
    /// The OpenFeature name, e.g. `FLAG_NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FlagNotFound => "FLAG_NOT_FOUND",
            Self::TypeMismatch => "TYPE_MISMATCH",
            Self::ParseError => "PARSE_ERROR",
            Self::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            Self::InvalidContext => "INVALID_CONTEXT",
            Self::General => "GENERAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type a caller asks for, to detect `TYPE_MISMATCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// `true` / `false`.
    Boolean,
    /// A string.
    String,
    /// A whole number (a float with no fractional part is accepted).
    Integer,
    /// Any number.
    Float,
    /// A JSON object.
    Object,
}

impl ValueType {
    pub(super) fn accepts(self, v: &Json) -> bool {
        match self {
            Self::Boolean => v.is_boolean(),
            Self::String => v.is_string(),
            Self::Integer => integer_of(v).is_some(),
            Self::Float => v.is_number(),
            Self::Object => v.is_object(),
        }
    }
}

/// A lossless integer reading of a JSON number: `10` and `10.0` are 10, `3.5` is not an
/// integer, and neither is a float beyond the exactly representable range.
pub(super) fn integer_of(v: &Json) -> Option<i64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0).then_some(f as i64)
}

/// The full result of one evaluation. Borrows from the snapshot; building it does not
/// allocate unless an error message has to be composed.
#[derive(Clone, Debug, PartialEq)]
pub struct Detail<'a> {
    /// The variant's value; `None` means the caller's default applies (reasons
    /// `DISABLED`, `ERROR`, and `DEFAULT` for a flag without default variant).
    pub value: Option<&'a Json>,
    /// The variant's name, when a variant was chosen.
    pub variant: Option<&'a str>,
    /// Why.
    pub reason: Reason,
    /// What went wrong, when `reason` is `ERROR`.
    pub error_code: Option<ErrorCode>,
    /// A person-readable explanation of the error.
    pub error_message: Option<Cow<'a, str>>,
    /// Flag metadata merged over the flag-set metadata.
    pub flag_metadata: &'a Map<String, Json>,
    /// The flag-set version the snapshot was compiled from.
    pub version: u64,
}
