//! Strict validation: the entry points that read a document at a chosen [`Strictness`],
//! and the checks of the whole document that reading its structure cannot make: the
//! size limits (`size`) and the targeting rules (`rules`).
//!
//! It sits above the model (`model::read_set` reads the structure first) so that the
//! model never depends on validation.

mod rules;
mod size;
#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::model::{self, FlagSet, Strictness};
use crate::problem::{Checker, Problem, ValidationErrors};
use rules::check_rules;
use size::check_limits;

impl FlagSet {
    /// Parses JSON text.
    pub fn parse_str(text: &str, strictness: Strictness) -> Result<Self, ValidationErrors> {
        let json: Value = serde_json::from_str(text).map_err(|e| {
            ValidationErrors(vec![Problem {
                path: String::new(),
                message: format!(
                    "invalid JSON at line {} column {}: {}",
                    e.line(),
                    e.column(),
                    strip_position(&e)
                ),
            }])
        })?;
        Self::parse(&json, strictness)
    }

    /// Parses a JSON document.
    pub fn parse(json: &Value, strictness: Strictness) -> Result<Self, ValidationErrors> {
        let mut ck = Checker {
            strict: strictness == Strictness::Strict,
            isolate: false,
            problems: Vec::new(),
        };
        let set = model::read_set(json, &mut ck);
        if ck.strict
            && let (Some(set), Value::Object(obj)) = (&set, json)
        {
            check_limits(json, obj, set, &mut ck);
            check_rules(set, &mut ck);
        }
        ck.finish(set)
    }

    /// Every problem strict validation finds in this flag set (empty when it is valid).
    pub fn validate(&self) -> Vec<Problem> {
        match Self::parse(&self.to_json(), Strictness::Strict) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }
}

fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
