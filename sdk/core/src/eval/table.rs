//! The compiled flags and the table they are found in by key: laid out for the lookup
//! and the variant selection that every evaluation makes.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use crate::context::Tag;
use crate::logic::{self, Expr};
use crate::shared_vec::SharedVec;

/// The variants of one flag: names and values in document order.
#[derive(Debug)]
pub(super) struct Variants {
    pub(super) names: Box<[Box<str>]>,
    pub(super) values: Box<[Json]>,
    /// Only for flags with many variants; a scan is faster for the usual two or three.
    /// Boxed so that the rarely used map does not widen every compiled flag.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Box<str>, usize, foldhash::fast::RandomState>>>,
}

impl Variants {
    pub(super) fn new(map: &Map<String, Json>) -> Self {
        let names: Box<[Box<str>]> = map.keys().map(|k| k.as_str().into()).collect();
        let index = (names.len() > 8)
            .then(|| {
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), i))
                    .collect::<HashMap<_, _, _>>()
            })
            .map(Box::new);
        Self {
            names,
            values: map.values().cloned().collect(),
            index,
        }
    }

    #[inline]
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(name).copied(),
            None => {
                let tag = Tag::of(name);
                self.names
                    .iter()
                    .position(|n| tag.same(name, Tag::of(n), n))
            }
        }
    }
}

#[derive(Debug)]
pub(super) enum Targeting {
    None,
    /// The rule is a single `fractional` (the usual percentage rollout).
    Split(logic::Fractional),
    Rule(Expr),
    /// The rule cannot run; every evaluation is `PARSE_ERROR` with this message.
    Invalid(Box<str>),
}

#[derive(Debug)]
pub(super) struct CompiledFlag {
    pub(super) key_tag: Tag,
    pub(super) disabled: bool,
    pub(super) default_variant: Option<usize>,
    pub(super) targeting: Targeting,
    pub(super) variants: Variants,
    pub(super) key: Box<str>,
    /// Boxed: only its address is needed on the hot path.
    pub(super) metadata: Box<Map<String, Json>>,
    /// The `$evaluators` its targeting names with `$ref`: it is compiled again when one
    /// of them (or one they name) changes.
    pub(super) refs: Box<[Box<str>]>,
}

/// Hashes a key's bytes with one `write`, without the length or terminator that `str`'s
/// `Hash` adds.
struct KeyBytes<'k>(&'k str);

impl std::hash::Hash for KeyBytes<'_> {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
    }
}

/// Flags by key: open addressing over full 64-bit hashes, so a lookup touches one
/// slot array and compares a key only when its whole hash matches. Each compiled flag
/// is shared: a snapshot made from another by a change shares every flag the change
/// did not touch.
///
/// A change that replaces flags without adding or removing one costs neither the slots
/// (shared) nor the list of flags (chunks shared, [`SharedVec`]): a toggle in 10,000 flags
/// copies one chunk of 64 pointers and 157 chunk pointers.
#[derive(Debug)]
pub(super) struct FlagTable {
    hasher: foldhash::fast::FixedState,
    /// `(hash, index + 1)`; index 0 marks an empty slot.
    slots: Arc<[(u64, u32)]>,
    pub(super) flags: SharedVec<Arc<CompiledFlag>>,
}

impl FlagTable {
    pub(super) fn new(flags: SharedVec<Arc<CompiledFlag>>) -> Self {
        let seed = foldhash::fast::RandomState::default().hash_one(flags.len());
        let hasher = foldhash::fast::FixedState::with_seed(seed);
        // Load factor at most one half keeps probe sequences short.
        let cap = (flags.len() * 2).next_power_of_two().max(8);
        let mut slots = vec![(0u64, 0u32); cap].into_boxed_slice();
        for (i, f) in flags.iter().enumerate() {
            let h = hasher.hash_one(KeyBytes(&f.key));
            let mut at = (h as usize) & (cap - 1);
            while slots[at].1 != 0 {
                at = (at + 1) & (cap - 1);
            }
            slots[at] = (h, u32::try_from(i + 1).unwrap_or(u32::MAX));
        }
        Self {
            hasher,
            slots: slots.into(),
            flags,
        }
    }

    /// The same keys at the same places with other compiled flags (a change that
    /// replaced flags and added or removed none): the slots are shared, not rebuilt.
    pub(super) fn with_flags(&self, flags: SharedVec<Arc<CompiledFlag>>) -> Self {
        debug_assert_eq!(flags.len(), self.flags.len());
        Self {
            hasher: self.hasher.clone(),
            slots: self.slots.clone(),
            flags,
        }
    }

    #[inline(always)]
    pub(super) fn get(&self, key: &str) -> Option<&CompiledFlag> {
        self.find(key).map(|(_, f)| &**f)
    }

    /// Where the flag is in `flags`.
    #[inline]
    pub(super) fn index_of(&self, key: &str) -> Option<usize> {
        self.find(key).map(|(i, _)| i)
    }

    /// The flag and where it is: one read of its chunk for both.
    #[inline(always)]
    fn find(&self, key: &str) -> Option<(usize, &Arc<CompiledFlag>)> {
        let h = self.hasher.hash_one(KeyBytes(key));
        let mask = self.slots.len() - 1;
        let mut at = (h as usize) & mask;
        loop {
            let (sh, ix) = self.slots[at];
            if ix == 0 {
                return None;
            }
            if sh == h {
                let i = ix as usize - 1;
                if let Some(f) = self.flags.get(i)
                    && Tag::of(key).same(key, f.key_tag, &f.key)
                {
                    return Some((i, f));
                }
            }
            at = (at + 1) & mask;
        }
    }
}
