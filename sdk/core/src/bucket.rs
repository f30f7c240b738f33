//! The only hashing code: MurmurHash3 x86 32-bit (seed 0) and flagd's integer bucketing.
//!
//! flagd's `fractional` hashes the UTF-8 bucketing value with murmur3 x86_32, seed 0, and
//! picks bucket `b = (hash * total_weight) >> 32` in `0..total_weight`. The default
//! bucketing value is the flag key immediately followed by the targeting key, with no
//! separator. The hasher here is streaming so that this concatenation is hashed in place,
//! without building the string.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Streaming MurmurHash3 x86_32. Feeding `a` then `b` gives the hash of `a ++ b`.
#[derive(Clone, Copy, Debug)]
pub struct Murmur3 {
    h: u32,
    tail: u32,
    tail_len: u32,
    len: u32,
}

impl Default for Murmur3 {
    fn default() -> Self {
        Self::new(0)
    }
}

#[inline(always)]
fn mix_k(mut k: u32) -> u32 {
    k = k.wrapping_mul(C1);
    k = k.rotate_left(15);
    k.wrapping_mul(C2)
}

#[inline(always)]
fn mix_h(h: u32, k: u32) -> u32 {
    let h = (h ^ mix_k(k)).rotate_left(13);
    h.wrapping_mul(5).wrapping_add(0xe654_6b64)
}

impl Murmur3 {
    /// A hasher with the given seed (flagd uses 0).
    pub const fn new(seed: u32) -> Self {
        Self {
            h: seed,
            tail: 0,
            tail_len: 0,
            len: 0,
        }
    }

    /// Feeds bytes.
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) {
        // murmur3 is defined on lengths below 2^32; wrapping keeps longer input defined.
        self.len = self.len.wrapping_add(bytes.len() as u32);
        let mut chunks = bytes.chunks_exact(4);
        if self.tail_len == 0 {
            for c in &mut chunks {
                self.h = mix_h(self.h, u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
        } else {
            // Bytes left over from the last write (the flag key's, when a targeting key
            // follows it) start each block: a block is the carried bytes and the first
            // bytes of a word, the rest of the word is carried on. Word by word instead
            // of a byte at a time.
            let shift = 8 * self.tail_len;
            for c in &mut chunks {
                let w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                self.h = mix_h(self.h, self.tail | (w << shift));
                self.tail = w >> (32 - shift);
            }
        }
        let rest = chunks.remainder();
        if rest.is_empty() {
            return;
        }
        let mut r = 0u32;
        for (i, &b) in rest.iter().enumerate() {
            r |= u32::from(b) << (8 * i);
        }
        let n = rest.len() as u32;
        if self.tail_len == 0 {
            self.tail = r;
            self.tail_len = n;
            return;
        }
        let shift = 8 * self.tail_len;
        let block = self.tail | (r << shift);
        if self.tail_len + n >= 4 {
            self.h = mix_h(self.h, block);
            self.tail = r >> (32 - shift);
            self.tail_len = self.tail_len + n - 4;
        } else {
            self.tail = block;
            self.tail_len += n;
        }
    }

    /// The hash of everything written so far.
    #[inline]
    pub fn finish(&self) -> u32 {
        let mut h = self.h;
        if self.tail_len > 0 {
            h ^= mix_k(self.tail);
        }
        h ^= self.len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

/// MurmurHash3 x86_32 of `bytes` with seed 0, as flagd computes it.
pub fn murmur3_x86_32(bytes: &[u8]) -> u32 {
    let mut m = Murmur3::new(0);
    m.write(bytes);
    m.finish()
}

/// The bucket `(hash * total) >> 32`, in `0..total` for any `total > 0`.
#[inline]
pub fn bucket(hash: u32, total: u32) -> u32 {
    ((u64::from(hash) * u64::from(total)) >> 32) as u32
}

/// The index of the bucket that `b` falls in, given cumulative upper bounds in declaration
/// order (`ends[i]` = sum of the weights `0..=i`).
#[inline]
pub(crate) fn pick(ends: impl ExactSizeIterator<Item = u32>, b: u32) -> usize {
    let n = ends.len();
    // Weights are few; a linear scan beats a binary search here.
    let mut ends = ends;
    ends.position(|end| b < end).unwrap_or(n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(murmur3_x86_32(b""), 0);
        assert_eq!(murmur3_x86_32(b"hello"), 613_153_351);
        assert_eq!(
            murmur3_x86_32(b"The quick brown fox jumps over the lazy dog"),
            776_992_547
        );
        assert_eq!(murmur3_x86_32(b"fractional-flagjack"), 2_682_799_072);
    }

    #[test]
    fn streaming_equals_whole() {
        let s = b"fractional-flag-shorthandjon@company.com";
        for split in 0..s.len() {
            let mut m = Murmur3::new(0);
            m.write(&s[..split]);
            m.write(&s[split..]);
            assert_eq!(m.finish(), murmur3_x86_32(s), "split at {split}");
        }
    }

    #[test]
    fn three_writes_equal_one_wherever_they_split() {
        // Carried bytes meet writes shorter and longer than a block.
        let s = "new-checkout-ü-user-1234567@example.com".as_bytes();
        for i in 0..=s.len() {
            for j in i..=s.len() {
                let mut m = Murmur3::new(0);
                m.write(&s[..i]);
                m.write(&s[i..j]);
                m.write(&s[j..]);
                assert_eq!(m.finish(), murmur3_x86_32(s), "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn bucket_edges() {
        assert_eq!(bucket(0, 100), 0);
        assert_eq!(bucket(u32::MAX, 100), 99);
        assert_eq!(bucket(2_147_483_647, 100), 49);
        assert_eq!(bucket(2_147_483_648, 100), 50);
        assert_eq!(bucket(u32::MAX, i32::MAX as u32), i32::MAX as u32 - 1);
    }

    #[test]
    fn pick_in_declaration_order() {
        let ends = [0, 50, 100];
        assert_eq!(pick(ends.iter().copied(), 0), 1);
        assert_eq!(pick(ends.iter().copied(), 49), 1);
        assert_eq!(pick(ends.iter().copied(), 50), 2);
    }
}
