//! The out-of-sync bitmap: one bit per 4 KiB block, set = may differ from the
//! peer. Kept in memory as 64-bit words (1 TiB of data → 32 MiB), with its
//! weight maintained incrementally and the 4 KiB on-disk pages it dirtied
//! remembered, so that only changed pages are written back.

use super::BLOCK_BYTES;

const WORD_BITS: u64 = 64;
const BITS_PER_PAGE: u64 = BLOCK_BYTES as u64 * 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    bits: u64,
    weight: u64,
    dirty_pages: Vec<u64>,
}

impl Bitmap {
    /// A clear bitmap of `bits` bits.
    pub fn new(bits: u64) -> Bitmap {
        Bitmap {
            words: vec![0; bits.div_ceil(WORD_BITS) as usize],
            bits,
            weight: 0,
            dirty_pages: vec![0; bits.div_ceil(BITS_PER_PAGE).div_ceil(64) as usize],
        }
    }

    pub fn len(&self) -> u64 {
        self.bits
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Set bits (blocks out of sync).
    pub fn weight(&self) -> u64 {
        self.weight
    }

    pub fn get(&self, bit: u64) -> bool {
        bit < self.bits && self.words[(bit / WORD_BITS) as usize] & (1 << (bit % WORD_BITS)) != 0
    }

    fn mark_dirty(&mut self, first_bit: u64, last_bit: u64) {
        for page in first_bit / BITS_PER_PAGE..=last_bit / BITS_PER_PAGE {
            self.dirty_pages[(page / 64) as usize] |= 1 << (page % 64);
        }
    }

    /// Set or clear `count` bits from `start`, clamped to the bitmap.
    /// Returns how many bits changed.
    fn apply(&mut self, start: u64, count: u64, set: bool) -> u64 {
        let end = start.saturating_add(count).min(self.bits);
        if start >= end {
            return 0;
        }
        let mut changed = 0;
        let mut bit = start;
        while bit < end {
            let w = (bit / WORD_BITS) as usize;
            let lo = bit % WORD_BITS;
            let hi = (end - (bit - lo)).min(WORD_BITS);
            let mask = if hi - lo == WORD_BITS {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            let before = self.words[w];
            self.words[w] = if set { before | mask } else { before & !mask };
            changed += u64::from((before ^ self.words[w]).count_ones());
            bit = bit - lo + WORD_BITS;
        }
        if changed > 0 {
            self.mark_dirty(start, end - 1);
            if set {
                self.weight += changed;
            } else {
                self.weight -= changed;
            }
        }
        changed
    }

    pub fn set_range(&mut self, start: u64, count: u64) -> u64 {
        self.apply(start, count, true)
    }

    pub fn clear_range(&mut self, start: u64, count: u64) -> u64 {
        self.apply(start, count, false)
    }

    /// The first set bit at or after `from`.
    pub fn find_next_set(&self, from: u64) -> Option<u64> {
        if from >= self.bits {
            return None;
        }
        let mut w = (from / WORD_BITS) as usize;
        let mut word = self.words[w] & (u64::MAX << (from % WORD_BITS));
        loop {
            if word != 0 {
                let bit = w as u64 * WORD_BITS + u64::from(word.trailing_zeros());
                return (bit < self.bits).then_some(bit);
            }
            w += 1;
            word = *self.words.get(w)?;
        }
    }

    fn find_next_clear(&self, from: u64) -> u64 {
        let mut bit = from;
        while bit < self.bits {
            let w = (bit / WORD_BITS) as usize;
            let word = !self.words[w] & (u64::MAX << (bit % WORD_BITS));
            if word != 0 {
                return (w as u64 * WORD_BITS + u64::from(word.trailing_zeros())).min(self.bits);
            }
            bit = (w as u64 + 1) * WORD_BITS;
        }
        self.bits
    }

    /// Runs of set bits as `(start, len)`, in order.
    pub fn iter_set_runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let start = self.find_next_set(at)?;
            let end = self.find_next_clear(start);
            at = end;
            Some((start, end - start))
        })
    }

    /// Number of 4 KiB pages the on-disk bitmap occupies.
    pub fn pages(&self) -> u64 {
        self.bits.div_ceil(BITS_PER_PAGE)
    }

    /// The on-disk (little-endian) bytes of page `page`.
    pub fn page_bytes(&self, page: u64) -> [u8; BLOCK_BYTES] {
        let mut out = [0u8; BLOCK_BYTES];
        let first_word = (page * BITS_PER_PAGE / WORD_BITS) as usize;
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            if let Some(w) = self.words.get(first_word + i) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Load page `page` from disk bytes; bits beyond the bitmap are ignored.
    pub fn load_page(&mut self, page: u64, bytes: &[u8]) {
        let first_word = (page * BITS_PER_PAGE / WORD_BITS) as usize;
        for (i, chunk) in bytes.chunks_exact(8).enumerate().take(BLOCK_BYTES / 8) {
            let Some(slot) = self.words.get_mut(first_word + i) else {
                break;
            };
            let mut v = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            let base = (first_word + i) as u64 * WORD_BITS;
            if base + WORD_BITS > self.bits {
                v &= (1u64 << (self.bits - base)) - 1;
            }
            self.weight = self.weight - u64::from(slot.count_ones()) + u64::from(v.count_ones());
            *slot = v;
        }
    }

    /// Pages changed since the last call, in order.
    pub fn take_dirty_pages(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, w) in self.dirty_pages.iter_mut().enumerate() {
            let mut bits = std::mem::take(w);
            while bits != 0 {
                out.push(i as u64 * 64 + u64::from(bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_runs_and_weight() {
        let mut b = Bitmap::new(1000);
        assert_eq!(b.set_range(3, 100), 100);
        assert_eq!(b.set_range(50, 10), 0);
        assert_eq!(b.set_range(990, 100), 10);
        assert_eq!(b.weight(), 110);
        assert_eq!(b.iter_set_runs().collect::<Vec<_>>(), vec![(3, 100), (990, 10)]);
        assert_eq!(b.clear_range(0, 50), 47);
        assert_eq!(b.find_next_set(0), Some(50));
        assert_eq!(b.take_dirty_pages(), vec![0]);
        assert!(b.take_dirty_pages().is_empty());
    }

    #[test]
    fn pages_round_trip_through_disk_bytes() {
        let mut b = Bitmap::new(BITS_PER_PAGE * 2 + 5);
        b.set_range(BITS_PER_PAGE - 3, 10);
        b.set_range(BITS_PER_PAGE * 2 + 4, 1);
        assert_eq!(b.take_dirty_pages(), vec![0, 1, 2]);
        let mut c = Bitmap::new(b.len());
        for p in 0..b.pages() {
            c.load_page(p, &b.page_bytes(p));
        }
        assert_eq!(c.weight(), 11);
        assert_eq!(
            c.iter_set_runs().collect::<Vec<_>>(),
            b.iter_set_runs().collect::<Vec<_>>()
        );
    }

    #[test]
    fn one_tib_costs_32_mib() {
        let b = Bitmap::new((1u64 << 40) / 4096);
        assert_eq!(b.words.len() * 8, 32 << 20);
    }

    proptest! {
        #[test]
        fn matches_a_naive_model(ops in proptest::collection::vec((any::<bool>(), 0u64..300, 0u64..150), 0..40)) {
            let mut b = Bitmap::new(257);
            let mut model = vec![false; 257];
            for (set, start, count) in ops {
                if set { b.set_range(start, count); } else { b.clear_range(start, count); }
                for i in start..(start + count).min(257) { model[i as usize] = set; }
            }
            prop_assert_eq!(b.weight(), model.iter().filter(|&&x| x).count() as u64);
            for (i, &m) in model.iter().enumerate() { prop_assert_eq!(b.get(i as u64), m); }
            let total: u64 = b.iter_set_runs().map(|(_, l)| l).sum();
            prop_assert_eq!(total, b.weight());
        }
    }
}
