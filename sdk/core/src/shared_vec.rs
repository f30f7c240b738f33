//! [`SharedVec`]: a vector whose clones share their items in fixed chunks, so that a new
//! version of a large list (a flag set with one flag changed) costs its chunk pointers
//! and one chunk, not a copy of every item.

use std::sync::Arc;

/// Items per chunk: 64 keeps a copied chunk small (64 pointers for compiled flags) and
/// the chunk list short (157 chunks for 10,000 flags).
const CHUNK_BITS: u32 = 6;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A vector whose clones share their items in chunks of 64: cloning copies one pointer
/// per chunk, [`SharedVec::set`] copies the one chunk it changes, and reading an item is
/// two indexed loads.
///
/// The snapshot's compiled flags are kept in one, and so is the SDK's document: a delta
/// frame that changes one flag of 10,000 copies 157 chunk pointers and one chunk of 64
/// items instead of 10,000 items.
///
/// ```
/// use flagd_core::shared_vec::SharedVec;
/// let v1: SharedVec<u32> = (0..1000).collect();
/// let mut v2 = v1.clone();
/// v2.set(500, 7);
/// assert_eq!((v1.get(500), v2.get(500)), (Some(&500), Some(&7)));
/// assert_eq!(v2.iter().filter(|x| **x == 7).count(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct SharedVec<T> {
    /// Every chunk but the last holds exactly [`CHUNK`] items; the last is never empty.
    chunks: Vec<Arc<[T]>>,
    len: usize,
}

impl<T> Default for SharedVec<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> SharedVec<T> {
    /// An empty vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many items it holds.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no item.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item at `i`.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks
            .get(i >> CHUNK_BITS)
            .and_then(|c| c.get(i & (CHUNK - 1)))
    }

    /// The items in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Replaces the item at `i`, copying its chunk (the clones keep theirs). Returns
    /// `false`, changing nothing, when `i` is out of range.
    pub fn set(&mut self, i: usize, item: T) -> bool {
        let Some(chunk) = self.chunks.get_mut(i >> CHUNK_BITS) else {
            return false;
        };
        let k = i & (CHUNK - 1);
        if k >= chunk.len() {
            return false;
        }
        let mut items = chunk.to_vec();
        items[k] = item;
        *chunk = items.into();
        true
    }

    /// Appends an item, copying the last chunk unless it is full.
    pub fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                let mut items = Vec::with_capacity(last.len() + 1);
                items.extend_from_slice(last);
                items.push(item);
                *last = items.into();
            }
            _ => self.chunks.push(Arc::from([item])),
        }
        self.len += 1;
    }
}

impl<T: Clone> FromIterator<T> for SharedVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v = Self::new();
        let mut chunk = Vec::with_capacity(CHUNK);
        for item in iter {
            chunk.push(item);
            if chunk.len() == CHUNK {
                v.len += CHUNK;
                v.chunks
                    .push(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)).into());
            }
        }
        if !chunk.is_empty() {
            v.len += chunk.len();
            v.chunks.push(chunk.into());
        }
        v
    }
}

impl<T: PartialEq + Clone> PartialEq for SharedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation gives what the same operations on a `Vec` give, at every length
    /// around the chunk boundaries, and a clone never sees a change made after it.
    #[test]
    fn behaves_as_a_vec_and_clones_never_see_later_changes() {
        for n in [0, 1, 63, 64, 65, 127, 128, 129, 1000] {
            let plain: Vec<usize> = (0..n).collect();
            let shared: SharedVec<usize> = plain.iter().copied().collect();
            assert_eq!(shared.len(), n);
            assert_eq!(shared.is_empty(), n == 0);
            assert_eq!(shared.iter().copied().collect::<Vec<_>>(), plain);
            assert_eq!(shared.iter().next_back(), plain.last());
            assert_eq!(shared.get(n), None);
            assert!(!shared.clone().set(n, 0));

            let mut changed = shared.clone();
            let mut expect = plain.clone();
            for i in (0..n).step_by(37) {
                assert!(changed.set(i, i + 10_000));
                expect[i] = i + 10_000;
            }
            for x in 0..70 {
                changed.push(x);
                expect.push(x);
                assert_eq!(changed.len(), expect.len());
            }
            assert_eq!(changed.iter().copied().collect::<Vec<_>>(), expect);
            for (i, x) in expect.iter().enumerate() {
                assert_eq!(changed.get(i), Some(x));
            }
            assert_eq!(shared.iter().copied().collect::<Vec<_>>(), plain);
            assert_eq!(shared, plain.iter().copied().collect());
            assert_ne!(changed, shared);
            let mut pushed = SharedVec::new();
            for x in &expect {
                pushed.push(*x);
            }
            assert_eq!(pushed, changed);
        }
    }

    /// A change copies only its chunk: the others are the same allocations.
    #[test]
    fn a_change_shares_every_other_chunk() {
        let v1: SharedVec<u32> = (0..1000).collect();
        let mut v2 = v1.clone();
        v2.set(130, 0);
        let shared = v1
            .chunks
            .iter()
            .zip(&v2.chunks)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!((v1.chunks.len(), shared), (16, 15));
    }
}
