//! OpenFeature's Rust flagd evaluator, `flagd-evaluation-engine` 0.1.0, on the same
//! flagd JSON as our engine.
//!
//! The crate offers a parser ([`FlagParser`]) and a targeting evaluator
//! ([`Operator::apply`], which takes the rule as JSON text and returns the variant name),
//! but no "evaluate a flag" call: the flagd provider's in-process resolver wraps them.
//! [`FlagdEngine::enabled`] does what that resolver does per evaluation: find the flag,
//! check its state, return the default variant when there is no targeting, otherwise
//! apply the rule (the default variant when it returns null), then read the variant's
//! value. Unlike the provider it serializes each rule once at load time rather than on
//! every call, and does not clone the flag, so this is a lower bound of the provider's
//! cost.

use std::collections::HashMap;
use std::fmt;

use flagd_evaluation_engine::{FlagParser, Operator};
use open_feature::EvaluationContext;
use serde_json::Value as Json;

use crate::{Engine, User, flagd_doc, flagd_s4_doc};

struct Flag {
    enabled: bool,
    default_variant: String,
    variants: HashMap<String, Json>,
    /// The targeting rule as JSON text, `None` when the flag has none.
    targeting: Option<String>,
}

/// The flagd evaluation engine's [`Operator`] and a parsed flag set.
pub struct FlagdEngine {
    operator: Operator,
    flags: HashMap<String, Flag>,
}

impl fmt::Debug for FlagdEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagdEngine")
            .field("flags", &self.flags.len())
            .finish_non_exhaustive()
    }
}

impl FlagdEngine {
    /// Parses a flagd document with the crate's [`FlagParser`].
    pub fn load(text: &str) -> Self {
        let parsed = match FlagParser::parse_string(text) {
            Ok(p) => p,
            Err(e) => panic!("flagd-evaluation-engine rejects the benchmark document: {e}"),
        };
        let flags = parsed
            .flags
            .into_iter()
            .map(|(key, flag)| {
                let targeting = match &flag.targeting {
                    None => None,
                    Some(Json::Object(o)) if o.is_empty() => None,
                    Some(_) => Some(flag.get_targeting()),
                };
                let flag = Flag {
                    enabled: flag.state == "ENABLED",
                    default_variant: flag.default_variant,
                    variants: flag.variants,
                    targeting,
                };
                (key, flag)
            })
            .collect();
        Self {
            operator: Operator::new(),
            flags,
        }
    }
}

impl Engine for FlagdEngine {
    type Ctx = EvaluationContext;
    const NAME: &'static str = "flagd-engine";

    fn small() -> Self {
        Self::load(&flagd_doc())
    }

    fn large() -> Self {
        Self::load(&flagd_s4_doc())
    }

    fn context(user: &User) -> EvaluationContext {
        EvaluationContext::default()
            .with_targeting_key(user.key.as_str())
            .with_custom_field("country", user.country)
            .with_custom_field("plan", user.plan)
    }

    fn enabled(&self, key: &str, ctx: &EvaluationContext) -> bool {
        let Some(flag) = self.flags.get(key) else {
            return false;
        };
        if !flag.enabled {
            return false;
        }
        let chosen;
        let variant = match &flag.targeting {
            None => &flag.default_variant,
            Some(rule) => match self.operator.apply(key, rule, ctx) {
                Ok(Some(v)) => {
                    chosen = v;
                    &chosen
                }
                Ok(None) => &flag.default_variant,
                Err(_) => return false,
            },
        };
        matches!(flag.variants.get(variant), Some(Json::Bool(true)))
    }
}
