//! The quick-sync bitmap: one bit per 4 KiB block of data, set = the block
//! may differ from the peer's copy.
//!
//! On disk the bitmap is a little-endian bit string: block `b` is bit `b % 8`
//! of byte `b / 8` of the bitmap area (equivalently bit `b % 64` of the
//! little-endian `u64` word `b / 64`), written in 4 KiB pages of 32768 bits.
//! Bits past the end of the data are zero.
//!
//! In memory, [`Bitmap`] keeps just the bits as `u64` words (1 TiB of data →
//! 32 MiB), its weight (set bits) maintained on every change so reading it is
//! O(1), and one bit per on-disk page saying which pages changed since the
//! last [`Bitmap::take_dirty_pages`], so that only those are written back.

use super::{MetaError, BLOCK_BYTES, BLOCK_BYTES_U64, BM_BLOCK_BYTES};
use std::ops::Range;

/// Blocks (bits) described by one 4 KiB bitmap page.
pub const BITS_PER_PAGE: u64 = BLOCK_BYTES_U64 * 8;
const WORD_BITS: u64 = u64::BITS as u64;
const WORDS_PER_PAGE: usize = BLOCK_BYTES / 8;

/// Bitmap blocks needed for `data_bytes` of data: one per started 4 KiB.
pub fn blocks_for(data_bytes: u64) -> u64 {
    data_bytes.div_ceil(BM_BLOCK_BYTES)
}

/// Bytes of on-disk bitmap for `data_bytes` of data: one bit per 4 KiB,
/// rounded up to whole 4 KiB pages.
pub fn bitmap_bytes_for(data_bytes: u64) -> u64 {
    bitmap_pages_for(data_bytes) * BLOCK_BYTES_U64
}

/// 4 KiB bitmap pages for `data_bytes` of data.
pub fn bitmap_pages_for(data_bytes: u64) -> u64 {
    blocks_for(data_bytes).div_ceil(BITS_PER_PAGE)
}

/// Where block `block`'s bit is in the bitmap area: `(byte offset, bit in byte)`.
pub fn bit_location(block: u64) -> (u64, u8) {
    (block / 8, (block % 8) as u8)
}

/// The block whose bit is bit `bit` (0..8) of byte `byte` of the bitmap area.
pub fn block_at(byte: u64, bit: u8) -> Option<u64> {
    (bit < 8).then(|| byte.checked_mul(8)?.checked_add(u64::from(bit)))?
}

/// The 4 KiB bitmap page holding block `block`'s bit.
pub fn page_of_block(block: u64) -> u64 {
    block / BITS_PER_PAGE
}

/// The blocks page `page` describes, `(first block, count)` (the last page of a
/// bitmap may describe fewer real blocks).
pub fn page_blocks(page: u64) -> (u64, u64) {
    (page.saturating_mul(BITS_PER_PAGE), BITS_PER_PAGE)
}

/// The out-of-sync bitmap of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    bits: u64,
    weight: u64,
    /// One bit per 4 KiB page: changed since the last `take_dirty_pages`.
    dirty: Vec<u64>,
}

fn word_count(bits: u64) -> usize {
    // usize is 64 bits (asserted in meta/mod.rs), so this cannot truncate.
    bits.div_ceil(WORD_BITS) as usize
}

/// Mask of bits `lo..hi` of a word (`lo < hi <= 64`).
fn mask(lo: u64, hi: u64) -> u64 {
    let high = if hi >= WORD_BITS { u64::MAX } else { (1u64 << hi) - 1 };
    high & (u64::MAX << lo)
}

impl Bitmap {
    /// A clear bitmap of `bits` bits (blocks).
    pub fn new(bits: u64) -> Bitmap {
        let pages = bits.div_ceil(BITS_PER_PAGE);
        Bitmap {
            words: vec![0; word_count(bits)],
            bits,
            weight: 0,
            dirty: vec![0; word_count(pages)],
        }
    }

    /// A clear bitmap for `data_bytes` of data.
    pub fn for_data_bytes(data_bytes: u64) -> Bitmap {
        Bitmap::new(blocks_for(data_bytes))
    }

    /// Bits (blocks) in the bitmap.
    pub fn len(&self) -> u64 {
        self.bits
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Set bits: blocks out of sync. O(1).
    pub fn count_ones(&self) -> u64 {
        self.weight
    }

    /// Same as [`Bitmap::count_ones`], DRBD's word for it.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// Bytes out of sync (`count_ones() * 4096`), what `oos:` shows in KiB.
    pub fn out_of_sync_bytes(&self) -> u64 {
        self.weight.saturating_mul(BM_BLOCK_BYTES)
    }

    /// Is block `block` out of sync? `false` past the end.
    pub fn get(&self, block: u64) -> bool {
        block < self.bits && self.words[(block / WORD_BITS) as usize] & (1 << (block % WORD_BITS)) != 0
    }

    /// Set one bit; true if it changed.
    pub fn set(&mut self, block: u64) -> bool {
        self.set_range(block, 1) == 1
    }

    /// Clear one bit; true if it changed.
    pub fn clear(&mut self, block: u64) -> bool {
        self.clear_range(block, 1) == 1
    }

    /// Set `count` bits from `start` (clamped to the bitmap); returns how many changed.
    pub fn set_range(&mut self, start: u64, count: u64) -> u64 {
        self.apply(start, count, true)
    }

    /// Clear `count` bits from `start` (clamped to the bitmap); returns how many changed.
    pub fn clear_range(&mut self, start: u64, count: u64) -> u64 {
        self.apply(start, count, false)
    }

    /// Set every bit (full sync); returns how many changed.
    pub fn set_all(&mut self) -> u64 {
        self.set_range(0, self.bits)
    }

    /// Clear every bit; returns how many changed.
    pub fn clear_all(&mut self) -> u64 {
        self.clear_range(0, self.bits)
    }

    fn mark_word_dirty(&mut self, word: usize) {
        let page = word / WORDS_PER_PAGE;
        self.dirty[page / 64] |= 1 << (page % 64);
    }

    /// Replace word `w` with `v`, keeping weight and dirty pages right.
    /// Returns the number of bits that changed.
    fn store(&mut self, w: usize, v: u64, mark_dirty: bool) -> u64 {
        let before = self.words[w];
        if before == v {
            return 0;
        }
        self.words[w] = v;
        self.weight = self.weight - u64::from(before.count_ones()) + u64::from(v.count_ones());
        if mark_dirty {
            self.mark_word_dirty(w);
        }
        u64::from((before ^ v).count_ones())
    }

    fn apply(&mut self, start: u64, count: u64, set: bool) -> u64 {
        let end = start.saturating_add(count).min(self.bits);
        let mut changed = 0;
        let mut bit = start;
        while bit < end {
            let w = (bit / WORD_BITS) as usize;
            let base = bit - bit % WORD_BITS;
            let m = mask(bit - base, (end - base).min(WORD_BITS));
            let v = if set { self.words[w] | m } else { self.words[w] & !m };
            changed += self.store(w, v, true);
            bit = base + WORD_BITS;
        }
        changed
    }

    /// Set bits among `count` bits from `start` (clamped to the bitmap).
    pub fn count_ones_in(&self, start: u64, count: u64) -> u64 {
        let end = start.saturating_add(count).min(self.bits);
        let mut n = 0;
        let mut bit = start;
        while bit < end {
            let base = bit - bit % WORD_BITS;
            let m = mask(bit - base, (end - base).min(WORD_BITS));
            n += u64::from((self.words[(bit / WORD_BITS) as usize] & m).count_ones());
            bit = base + WORD_BITS;
        }
        n
    }

    /// The first bit at or after `from` that is set (`want`) or clear (`!want`).
    fn find_next(&self, from: u64, want: bool) -> Option<u64> {
        if from >= self.bits {
            return None;
        }
        let mut w = (from / WORD_BITS) as usize;
        let flip = if want { 0 } else { u64::MAX };
        let mut word = (self.words[w] ^ flip) & (u64::MAX << (from % WORD_BITS));
        loop {
            if word != 0 {
                let bit = w as u64 * WORD_BITS + u64::from(word.trailing_zeros());
                return (bit < self.bits).then_some(bit);
            }
            w += 1;
            word = *self.words.get(w)? ^ flip;
        }
    }

    /// The first set bit at or after `from` (what resync does next).
    pub fn find_next_set(&self, from: u64) -> Option<u64> {
        self.find_next(from, true)
    }

    /// The first clear bit at or after `from`.
    pub fn find_next_clear(&self, from: u64) -> Option<u64> {
        self.find_next(from, false)
    }

    /// Runs of set bits as `(first block, length)`, in order.
    pub fn iter_set_runs(&self) -> SetRuns<'_> {
        SetRuns { bitmap: self, at: 0 }
    }

    /// 4 KiB pages the on-disk bitmap of these bits occupies.
    pub fn pages(&self) -> u64 {
        self.bits.div_ceil(BITS_PER_PAGE)
    }

    /// The on-disk bytes of `pages` (clamped to [`Bitmap::pages`]): 4096
    /// bytes per page, bits past the end zero.
    pub fn to_le_bytes(&self, pages: Range<u64>) -> Vec<u8> {
        let (first, last) = (pages.start.min(self.pages()), pages.end.min(self.pages()));
        let mut out = Vec::with_capacity((last.saturating_sub(first) * BLOCK_BYTES_U64) as usize);
        for page in first..last {
            let w0 = page as usize * WORDS_PER_PAGE;
            for i in 0..WORDS_PER_PAGE {
                out.extend_from_slice(&self.words.get(w0 + i).copied().unwrap_or(0).to_le_bytes());
            }
        }
        out
    }

    /// A bitmap of `bits` bits from its on-disk bytes (at least
    /// `ceil(bits / 8)` of them; more, such as the rest of the last page, are
    /// ignored, as are set bits past the end). Nothing is dirty afterwards.
    pub fn from_le_bytes(bits: u64, bytes: &[u8]) -> Result<Bitmap, MetaError> {
        if (bytes.len() as u64) < bits.div_ceil(8) {
            return Err(MetaError::Insane {
                field: "bitmap",
                detail: format!(
                    "{} bytes cannot hold {bits} bits ({} bytes needed)",
                    bytes.len(),
                    bits.div_ceil(8)
                ),
            });
        }
        let mut b = Bitmap::new(bits);
        b.merge_le_bytes(0, bytes, false, false)?;
        Ok(b)
    }

    /// Replace the pages from `first_page` with on-disk `bytes` (partial
    /// loading of a large bitmap). Does not mark them dirty: the disk already
    /// holds them.
    pub fn load_le_bytes(&mut self, first_page: u64, bytes: &[u8]) -> Result<(), MetaError> {
        self.merge_le_bytes(first_page, bytes, false, false).map(|_| ())
    }

    /// OR on-disk `bytes` (e.g. the peer's bitmap) into the pages from
    /// `first_page`; returns how many bits became set. Changed pages are dirty.
    pub fn or_le_bytes(&mut self, first_page: u64, bytes: &[u8]) -> Result<u64, MetaError> {
        self.merge_le_bytes(first_page, bytes, true, true)
    }

    fn merge_le_bytes(&mut self, first_page: u64, bytes: &[u8], or: bool, mark_dirty: bool) -> Result<u64, MetaError> {
        let pages = self.pages();
        let fits = first_page
            .checked_mul(BLOCK_BYTES_U64)
            .and_then(|at| at.checked_add(bytes.len() as u64))
            .is_some_and(|end| end <= pages * BLOCK_BYTES_U64);
        if !fits {
            return Err(MetaError::Insane {
                field: "bitmap page range",
                detail: format!(
                    "{} bytes from page {first_page} go past the bitmap's {pages} pages",
                    bytes.len()
                ),
            });
        }
        let w0 = first_page as usize * WORDS_PER_PAGE;
        let mut changed = 0;
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let w = w0 + i;
            if w >= self.words.len() {
                break; // the rest of the last page, past the last word
            }
            let mut le = [0u8; 8];
            le[..chunk.len()].copy_from_slice(chunk);
            let base = w as u64 * WORD_BITS;
            let mut v = u64::from_le_bytes(le) & mask(0, (self.bits - base).min(WORD_BITS));
            if or {
                v |= self.words[w];
            } else if chunk.len() < 8 {
                // A partial word replaces only the bytes it has.
                v |= self.words[w] & !(u64::MAX >> (64 - 8 * chunk.len()));
            }
            changed += self.store(w, v, mark_dirty);
        }
        Ok(changed)
    }

    /// Has any page changed since the last `take_dirty_pages`?
    pub fn has_dirty_pages(&self) -> bool {
        self.dirty.iter().any(|&w| w != 0)
    }

    /// Pages changed since the last `take_dirty_pages`.
    pub fn dirty_page_count(&self) -> u64 {
        self.dirty.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Mark every page dirty (e.g. after loading from a peer, or to rewrite all).
    pub fn mark_all_dirty(&mut self) {
        let pages = self.pages();
        for (i, w) in self.dirty.iter_mut().enumerate() {
            let first = i as u64 * 64;
            *w = mask(0, (pages - first).min(64));
        }
    }

    /// The pages changed since the last call, in order; clears the record.
    /// Write each with `to_le_bytes(page..page + 1)`.
    pub fn take_dirty_pages(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, w) in self.dirty.iter_mut().enumerate() {
            let mut bits = std::mem::take(w);
            while bits != 0 {
                out.push(i as u64 * 64 + u64::from(bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
        out
    }
}

/// Iterator over the runs of set bits of a [`Bitmap`].
#[derive(Debug, Clone)]
pub struct SetRuns<'a> {
    bitmap: &'a Bitmap,
    at: u64,
}

impl Iterator for SetRuns<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let start = self.bitmap.find_next_set(self.at)?;
        let end = self.bitmap.find_next_clear(start).unwrap_or(self.bitmap.bits);
        self.at = end;
        Some((start, end - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn locations_map_both_ways() {
        assert_eq!(bit_location(0), (0, 0));
        assert_eq!(bit_location(13), (1, 5));
        assert_eq!(block_at(1, 5), Some(13));
        assert_eq!(block_at(1, 8), None);
        assert_eq!(block_at(u64::MAX, 0), None);
        assert_eq!(page_of_block(32767), 0);
        assert_eq!(page_of_block(32768), 1);
        assert_eq!(page_blocks(2), (65536, 32768));
        assert_eq!(bitmap_bytes_for(0), 0);
        assert_eq!(bitmap_bytes_for(1), 4096);
        assert_eq!(bitmap_bytes_for(1 << 30), 32 << 10);
        assert_eq!(bitmap_bytes_for(16 << 40), 512 << 20);
        assert_eq!(bitmap_bytes_for(u64::MAX), 1 << 49);
    }

    #[test]
    fn ranges_runs_and_weight() {
        let mut b = Bitmap::new(1000);
        assert_eq!(b.set_range(3, 100), 100);
        assert_eq!(b.set_range(50, 10), 0);
        assert_eq!(b.set_range(990, 100), 10);
        assert_eq!(b.weight(), 110);
        assert_eq!(b.count_ones(), 110);
        assert_eq!(b.count_ones_in(0, 10), 7);
        assert_eq!(b.out_of_sync_bytes(), 110 * 4096);
        assert_eq!(b.iter_set_runs().collect::<Vec<_>>(), vec![(3, 100), (990, 10)]);
        assert_eq!(b.clear_range(0, 50), 47);
        assert_eq!(b.find_next_set(0), Some(50));
        assert_eq!(b.find_next_clear(50), Some(103));
        assert_eq!(b.find_next_set(1000), None);
        assert!(b.set(500) && !b.set(500) && b.get(500) && b.clear(500) && !b.get(500));
        assert!(!b.get(5000) && !b.set(5000));
        assert_eq!(b.set_range(u64::MAX, u64::MAX), 0);
        assert_eq!(b.set_all(), 1000 - 63);
        assert_eq!(b.find_next_clear(0), None);
        assert_eq!(b.clear_all(), 1000);
        assert_eq!(b.iter_set_runs().count(), 0);
    }

    #[test]
    fn dirty_pages_are_exactly_the_changed_ones() {
        let mut b = Bitmap::new(BITS_PER_PAGE * 3 + 5);
        assert_eq!(b.pages(), 4);
        assert!(!b.has_dirty_pages());
        b.set_range(BITS_PER_PAGE - 3, 10); // pages 0 and 1
        b.set(BITS_PER_PAGE * 3 + 4); // page 3
        assert_eq!(b.dirty_page_count(), 3);
        assert_eq!(b.take_dirty_pages(), vec![0, 1, 3]);
        assert!(b.take_dirty_pages().is_empty());
        // Setting what is already set dirties nothing.
        b.set_range(BITS_PER_PAGE - 3, 10);
        assert!(!b.has_dirty_pages());
        b.clear(BITS_PER_PAGE); // page 1 only
        assert_eq!(b.take_dirty_pages(), vec![1]);
        b.mark_all_dirty();
        assert_eq!(b.take_dirty_pages(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn pages_round_trip_through_disk_bytes() {
        let mut b = Bitmap::new(BITS_PER_PAGE * 2 + 5);
        b.set_range(BITS_PER_PAGE - 3, 10);
        b.set(BITS_PER_PAGE * 2 + 4);
        let all = b.to_le_bytes(0..b.pages());
        assert_eq!(all.len(), 3 * 4096);
        // Block 32765 is bit 5 of byte 4095.
        assert_eq!(all[4095], 0b1110_0000);
        let c = Bitmap::from_le_bytes(b.len(), &all).unwrap();
        assert_eq!(c.weight(), 11);
        assert_eq!(c, {
            let mut d = b.clone();
            d.take_dirty_pages();
            d
        });
        // Page by page, as the daemon loads a big bitmap.
        let mut d = Bitmap::new(b.len());
        for p in 0..b.pages() {
            d.load_le_bytes(p, &b.to_le_bytes(p..p + 1)).unwrap();
        }
        assert_eq!(
            d.iter_set_runs().collect::<Vec<_>>(),
            b.iter_set_runs().collect::<Vec<_>>()
        );
        assert!(!d.has_dirty_pages());
        assert!(d.load_le_bytes(3, &[0u8; 4096]).is_err());
        assert!(d.load_le_bytes(u64::MAX, &[0u8; 1]).is_err());
        assert_eq!(b.to_le_bytes(2..99).len(), 4096);
        assert!(b.to_le_bytes(5..9).is_empty());
    }

    #[test]
    fn bits_past_the_end_on_disk_are_ignored() {
        let bytes = [0xffu8; 4096];
        let b = Bitmap::from_le_bytes(10, &bytes).unwrap();
        assert_eq!(b.weight(), 10);
        assert_eq!(b.to_le_bytes(0..1)[..3], [0xff, 0x03, 0]);
        assert!(Bitmap::from_le_bytes(17, &[0xff, 0xff]).is_err());
        assert_eq!(Bitmap::from_le_bytes(16, &[0xff, 0x01]).unwrap().weight(), 9);
    }

    #[test]
    fn or_merges_the_peers_bitmap() {
        let mut mine = Bitmap::new(100);
        mine.set_range(0, 4);
        mine.take_dirty_pages();
        let mut peer = Bitmap::new(100);
        peer.set_range(2, 6);
        assert_eq!(mine.or_le_bytes(0, &peer.to_le_bytes(0..1)).unwrap(), 4);
        assert_eq!(mine.iter_set_runs().collect::<Vec<_>>(), vec![(0, 8)]);
        assert_eq!(mine.take_dirty_pages(), vec![0]);
    }

    #[test]
    fn one_tib_costs_32_mib() {
        let b = Bitmap::for_data_bytes(1 << 40);
        assert_eq!(b.words.len() * 8, 32 << 20);
        assert_eq!(b.dirty.len() * 8, 1024, "1 bit per 4 KiB page");
    }

    /// The obvious implementation, one bool per block.
    #[derive(Clone)]
    struct Model {
        bits: Vec<bool>,
        dirty: std::collections::BTreeSet<u64>,
    }

    impl Model {
        fn write(&mut self, i: u64, v: bool) {
            if let Some(b) = self.bits.get_mut(i as usize) {
                if *b != v {
                    *b = v;
                    self.dirty.insert(i / BITS_PER_PAGE);
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u64, u64),
        Clear(u64, u64),
        Or(u64, Vec<u8>),
        Take,
    }

    fn op(bits: u64) -> impl Strategy<Value = Op> {
        let pos = 0..bits + 100;
        let len = prop_oneof![0u64..80, 0u64..(2 * BITS_PER_PAGE)];
        prop_oneof![
            (pos.clone(), len.clone()).prop_map(|(s, n)| Op::Set(s, n)),
            (pos, len).prop_map(|(s, n)| Op::Clear(s, n)),
            (0u64..3, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(p, b)| Op::Or(p, b)),
            Just(Op::Take),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_naive_model(bits in 0u64..(2 * BITS_PER_PAGE + 200), ops in proptest::collection::vec(op(70_000), 0..30), probe in 0u64..70_000) {
            let mut b = Bitmap::new(bits);
            let mut m = Model { bits: vec![false; bits as usize], dirty: Default::default() };
            for op in ops {
                match op {
                    Op::Set(s, n) | Op::Clear(s, n) => {
                        let set = matches!(op, Op::Set(..));
                        let before = b.weight();
                        let changed = if set { b.set_range(s, n) } else { b.clear_range(s, n) };
                        prop_assert_eq!(b.weight().abs_diff(before), changed);
                        for i in s..s.saturating_add(n).min(bits) { m.write(i, set); }
                    }
                    Op::Or(page, bytes) => {
                        let fits = (page * 4096 + bytes.len() as u64) <= b.pages() * 4096;
                        let r = b.or_le_bytes(page, &bytes);
                        prop_assert_eq!(r.is_ok(), fits);
                        if fits {
                            for (k, byte) in bytes.iter().enumerate() {
                                for bit in 0..8 {
                                    if byte >> bit & 1 == 1 { m.write(page * BITS_PER_PAGE + k as u64 * 8 + bit, true); }
                                }
                            }
                        }
                    }
                    Op::Take => {
                        let taken = b.take_dirty_pages();
                        prop_assert_eq!(taken, std::mem::take(&mut m.dirty).into_iter().collect::<Vec<_>>());
                    }
                }
            }
            prop_assert_eq!(b.weight(), m.bits.iter().filter(|&&x| x).count() as u64);
            for (i, &x) in m.bits.iter().enumerate() { prop_assert_eq!(b.get(i as u64), x); }
            let next = m.bits.iter().enumerate().skip(probe as usize).find(|(_, &x)| x).map(|(i, _)| i as u64);
            prop_assert_eq!(b.find_next_set(probe), next);
            let next = m.bits.iter().enumerate().skip(probe as usize).find(|(_, &x)| !x).map(|(i, _)| i as u64);
            prop_assert_eq!(b.find_next_clear(probe), next);
            let mut runs = Vec::new();
            let mut i = 0;
            while i < m.bits.len() {
                if m.bits[i] {
                    let s = i;
                    while i < m.bits.len() && m.bits[i] { i += 1; }
                    runs.push((s as u64, (i - s) as u64));
                } else { i += 1; }
            }
            prop_assert_eq!(b.iter_set_runs().collect::<Vec<_>>(), runs);
            let lo = probe.min(bits);
            prop_assert_eq!(b.count_ones_in(lo, 5000), m.bits[lo as usize..(lo + 5000).min(bits) as usize].iter().filter(|&&x| x).count() as u64);
            // On-disk bytes are the model's bits, LSB first, zero padded to pages.
            let bytes = b.to_le_bytes(0..b.pages());
            prop_assert_eq!(bytes.len() as u64, b.pages() * 4096);
            for (i, &x) in m.bits.iter().enumerate() { prop_assert_eq!(bytes[i / 8] >> (i % 8) & 1 == 1, x); }
            for i in bits..b.pages() * BITS_PER_PAGE { prop_assert_eq!(bytes[(i / 8) as usize] >> (i % 8) & 1, 0); }
            let back = Bitmap::from_le_bytes(bits, &bytes).unwrap();
            prop_assert_eq!(back.weight(), b.weight());
            prop_assert_eq!(back.words, b.words.clone());
            prop_assert_eq!(b.dirty_page_count(), m.dirty.len() as u64);
        }
    }
}
