//! A flag set read in place: what the reader found, borrowed from the JSON it read.
//!
//! Loading for evaluation compiles what it reads and then throws the read copy away:
//! for 10,000 flags, copying every variant, rule and metadata map into a [`FlagSet`]
//! and freeing it again cost more than compiling. The reader produces these views;
//! [`FlagSet`] is a view made owned, and a [`FlagSet`] is viewed again without copying.

use std::sync::LazyLock;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::flag::{Flag, FlagState};
use super::flag_set::FlagSet;
use crate::problem::Problem;

/// What `variants` and `metadata` are when a flag or set has none.
static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

/// The property names of a flag, in document order.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Order<'a> {
    Json(&'a Map<String, Value>),
    Owned(&'a [String]),
}

/// One flag, borrowed from what it was read from.
#[derive(Clone, Debug)]
pub(crate) struct FlagRef<'a> {
    pub(crate) state: FlagState,
    /// `None` when there are none (absent, `null` or of the wrong type).
    pub(super) variants: Option<&'a Map<String, Value>>,
    pub(crate) default_variant: Option<&'a str>,
    pub(crate) default_variant_null: bool,
    pub(crate) targeting: Option<&'a Value>,
    pub(crate) metadata: Option<&'a Map<String, Value>>,
    pub(crate) metadata_null: bool,
    pub(crate) extra: Vec<(&'a str, &'a Value)>,
    pub(crate) order: Order<'a>,
}

impl<'a> FlagRef<'a> {
    /// Variant name to value, in document order.
    pub(crate) fn variants(&self) -> &'a Map<String, Value> {
        self.variants.unwrap_or(&EMPTY)
    }

    /// The flag's targeting rule, unless it is absent or `{}` ([`Flag::effective_targeting`]).
    pub(crate) fn effective_targeting(&self) -> Option<&'a Value> {
        super::flag::effective(self.targeting)
    }

    pub(crate) fn to_flag(&self) -> Flag {
        Flag {
            state: self.state.clone(),
            variants: self.variants().clone(),
            default_variant: self.default_variant.map(str::to_owned),
            targeting: self.targeting.cloned(),
            metadata: self.metadata.cloned(),
            default_variant_null: self.default_variant_null,
            metadata_null: self.metadata_null,
            extra: self
                .extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).clone()))
                .collect(),
            order: match self.order {
                Order::Json(m) => m.keys().cloned().collect(),
                Order::Owned(o) => o.to_vec(),
            },
        }
    }
}

impl<'a> From<&'a Flag> for FlagRef<'a> {
    fn from(f: &'a Flag) -> Self {
        Self {
            state: f.state.clone(),
            variants: Some(&f.variants),
            default_variant: f.default_variant.as_deref(),
            default_variant_null: f.default_variant_null,
            targeting: f.targeting.as_ref(),
            metadata: f.metadata.as_ref(),
            metadata_null: f.metadata_null,
            extra: f.extra.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            order: Order::Owned(&f.order),
        }
    }
}

/// `$evaluators` as read: the document's own, or a copy without the entries an
/// isolating load set aside.
#[derive(Clone, Debug)]
pub(crate) enum Evaluators<'a> {
    Borrowed(&'a Map<String, Value>),
    Owned(Map<String, Value>),
}

impl std::ops::Deref for Evaluators<'_> {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Map<String, Value> {
        match self {
            Self::Borrowed(m) => m,
            Self::Owned(m) => m,
        }
    }
}

/// A flag set, borrowed from what it was read from ([`FlagSet`]'s fields, viewed).
#[derive(Clone, Debug)]
pub(crate) struct SetRef<'a> {
    pub(crate) flags: IndexMap<&'a str, FlagRef<'a>>,
    pub(crate) evaluators: Evaluators<'a>,
    pub(crate) metadata: Option<&'a Map<String, Value>>,
    pub(crate) flags_as_array: bool,
    pub(crate) extra: Vec<(&'a str, &'a Value)>,
    pub(crate) order: Vec<&'a str>,
    pub(crate) broken: IndexMap<String, String>,
    pub(crate) problems: Vec<Problem>,
    pub(crate) nulls: Vec<&'static str>,
}

impl<'a> SetRef<'a> {
    pub(super) fn empty(order: Vec<&'a str>, nulls: Vec<&'static str>) -> Self {
        Self {
            flags: IndexMap::new(),
            evaluators: Evaluators::Owned(Map::new()),
            metadata: None,
            flags_as_array: false,
            extra: Vec::new(),
            order,
            broken: IndexMap::new(),
            problems: Vec::new(),
            nulls,
        }
    }

    /// Flag-set metadata (empty when there is none).
    pub(crate) fn metadata(&self) -> &'a Map<String, Value> {
        self.metadata.unwrap_or(&EMPTY)
    }

    pub(crate) fn to_set(&self) -> FlagSet {
        FlagSet {
            flags: self
                .flags
                .iter()
                .map(|(k, f)| ((*k).to_owned(), f.to_flag()))
                .collect(),
            evaluators: (*self.evaluators).clone(),
            metadata: self.metadata().clone(),
            flags_as_array: self.flags_as_array,
            extra: self
                .extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).clone()))
                .collect(),
            order: self.order.iter().map(|k| (*k).to_owned()).collect(),
            broken: self.broken.clone(),
            problems: self.problems.clone(),
            nulls: self.nulls.iter().map(|k| (*k).to_owned()).collect(),
        }
    }
}

impl FlagSet {
    /// This set, viewed without copying it.
    pub(crate) fn view(&self) -> SetRef<'_> {
        SetRef {
            flags: self
                .flags
                .iter()
                .map(|(k, f)| (k.as_str(), FlagRef::from(f)))
                .collect(),
            evaluators: Evaluators::Borrowed(&self.evaluators),
            metadata: Some(&self.metadata),
            flags_as_array: self.flags_as_array,
            extra: self.extra.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            order: self.order.iter().map(String::as_str).collect(),
            broken: self.broken.clone(),
            problems: self.problems.clone(),
            nulls: self
                .nulls
                .iter()
                .filter_map(|n| ["$evaluators", "metadata"].into_iter().find(|k| k == n))
                .collect(),
        }
    }
}
