//! One flag of the document, and how it is written back.

use serde_json::{Map, Value};

/// A flag's `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagState {
    /// `"ENABLED"`.
    Enabled,
    /// `"DISABLED"`: the flag evaluates to the caller's default with reason `DISABLED`.
    Disabled,
    /// Any other string, kept for the round trip; flagd evaluates it as enabled.
    Other(String),
}

impl FlagState {
    /// The JSON string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Enabled => "ENABLED",
            Self::Disabled => "DISABLED",
            Self::Other(s) => s,
        }
    }

    pub(super) fn parse(s: &str) -> Self {
        match s {
            "ENABLED" => Self::Enabled,
            "DISABLED" => Self::Disabled,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// The JSON type shared by a flag's variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VariantType {
    /// All variants are booleans.
    Boolean,
    /// All variants are strings.
    String,
    /// All variants are numbers.
    Number,
    /// All variants are objects.
    Object,
    /// No variants, or variants of several types (only a lenient load allows this).
    Mixed,
}

/// One flag: its state, variants, default variant, targeting and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Flag {
    /// `ENABLED` or `DISABLED`.
    pub state: FlagState,
    /// Variant name to value, in document order.
    pub variants: Map<String, Value>,
    /// The variant served when targeting does not decide; `None` means the caller's
    /// code default.
    pub default_variant: Option<String>,
    /// The JsonLogic targeting rule; `None` (or `{}`) means no targeting.
    pub targeting: Option<Value>,
    /// Flag metadata, returned with every evaluation (over the flag-set metadata).
    pub metadata: Option<Map<String, Value>>,
    /// `defaultVariant` was written as an explicit `null`.
    pub(super) default_variant_null: bool,
    /// `metadata` was written as an explicit `null`.
    pub(super) metadata_null: bool,
    /// Properties flagd does not know, kept for the round trip.
    pub(super) extra: Map<String, Value>,
    /// Property names in document order.
    pub(super) order: Vec<String>,
}

impl Flag {
    /// A flag with the given state and variants and nothing else.
    pub fn new(state: FlagState, variants: Map<String, Value>) -> Self {
        Self {
            state,
            variants,
            default_variant: None,
            targeting: None,
            metadata: None,
            default_variant_null: false,
            metadata_null: false,
            extra: Map::new(),
            order: Vec::new(),
        }
    }

    /// Sets the default variant.
    pub fn with_default_variant(mut self, variant: impl Into<String>) -> Self {
        self.default_variant = Some(variant.into());
        self
    }

    /// Sets the targeting rule.
    pub fn with_targeting(mut self, rule: Value) -> Self {
        self.targeting = Some(rule);
        self
    }

    /// The flag's targeting rule, unless it is absent or `{}`.
    pub fn effective_targeting(&self) -> Option<&Value> {
        effective(self.targeting.as_ref())
    }

    /// The JSON type of the variants.
    pub fn variant_type(&self) -> VariantType {
        let mut ty = None;
        for v in self.variants.values() {
            let t = match v {
                Value::Bool(_) => VariantType::Boolean,
                Value::String(_) => VariantType::String,
                Value::Number(_) => VariantType::Number,
                Value::Object(_) => VariantType::Object,
                _ => return VariantType::Mixed,
            };
            match ty {
                None => ty = Some(t),
                Some(prev) if prev != t => return VariantType::Mixed,
                Some(_) => {}
            }
        }
        ty.unwrap_or(VariantType::Mixed)
    }

    /// The flag as JSON, keys in their original order (new keys in flagd's usual order).
    pub fn to_json(&self) -> Value {
        self.to_json_with_key(None)
    }

    pub(super) fn to_json_with_key(&self, key: Option<&str>) -> Value {
        let mut out = Map::new();
        let put = |out: &mut Map<String, Value>, name: &str| {
            if out.contains_key(name) {
                return;
            }
            let v = match name {
                "key" => key.map(|k| Value::String(k.to_owned())),
                "state" => Some(Value::String(self.state.as_str().to_owned())),
                "variants" => Some(Value::Object(self.variants.clone())),
                "defaultVariant" => match &self.default_variant {
                    Some(d) => Some(Value::String(d.clone())),
                    None if self.default_variant_null => Some(Value::Null),
                    None => None,
                },
                "targeting" => self.targeting.clone(),
                "metadata" => match &self.metadata {
                    Some(m) => Some(Value::Object(m.clone())),
                    None if self.metadata_null => Some(Value::Null),
                    None => None,
                },
                other => self.extra.get(other).cloned(),
            };
            if let Some(v) = v {
                out.insert(name.to_owned(), v);
            }
        };
        for name in &self.order {
            put(&mut out, name);
        }
        for name in [
            "key",
            "state",
            "variants",
            "defaultVariant",
            "targeting",
            "metadata",
        ] {
            put(&mut out, name);
        }
        for name in self.extra.keys() {
            put(&mut out, name);
        }
        Value::Object(out)
    }
}

/// A targeting rule, unless it is absent, `null` or `{}` (no targeting).
pub(super) fn effective(targeting: Option<&Value>) -> Option<&Value> {
    match targeting {
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(Value::Null) | None => None,
        Some(t) => Some(t),
    }
}
