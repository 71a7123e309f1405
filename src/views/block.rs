//! Sorted blocks: how a key space of the `views` tree (a view's rows, or
//! its back-index) packs many small entries into few sled entries.
//!
//! A space holds blocks; each block is one sled entry whose key is the
//! space's prefix followed by the block's first entry key, and whose value
//! is its entries in ascending key order (a `u32` BE count, then per entry a
//! `u32` BE key length, the key, a `u32` BE value length, the value; a
//! value equal to an earlier one of the block is instead that entry's
//! index with the top bit set, so a tag's value is stored once per block
//! rather than once per row). Blocks
//! never overlap: every entry key of a block is below the next block's key.
//! A block holds at least one entry and is split when it grows past
//! [`TARGET`] bytes; an emptied block is deleted.
//!
//! sled 0.34 spends 20–30 µs of CPU per written entry whatever its size,
//! so one write per block instead of per row is where warm-up time goes
//! down. This file owns the format, the edit (read–merge–rewrite of the
//! touched blocks into a caller's batch) and the scans; it must not decide
//! what goes into a space (that is `index.rs`) nor commit anything itself.

use super::error::ViewError;
use super::fx::BuildFx;
use sled::IVec;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::ops::Bound;

/// Bytes a block aims at: big enough that writes are few, small enough
/// that a point edit rewrites little and a query decodes little.
pub(crate) const TARGET: usize = 16 * 1024;

/// One entry of a block: offsets of its key and value in the block bytes.
#[derive(Clone, Copy)]
struct Slot {
    key: (u32, u32),
    value: (u32, u32),
}

/// A decoded block: the sled value and where its entries are.
pub(crate) struct Block {
    bytes: IVec,
    slots: Vec<Slot>,
}

impl Block {
    /// Decodes a block value; `None` when the bytes are not a block.
    pub(crate) fn decode(bytes: IVec) -> Option<Block> {
        let b: &[u8] = &bytes;
        let (count, _) = b.split_first_chunk::<4>()?;
        let count = usize::try_from(u32::from_be_bytes(*count)).ok()?;
        let mut slots: Vec<Slot> = Vec::with_capacity(count.min(b.len() / 8));
        let mut at = 4usize;
        let field = |at: &mut usize| -> Option<(u32, u32)> {
            let len = b.get(*at..*at + 4)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            let start = *at + 4;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            if end > b.len() {
                return None;
            }
            *at = end;
            Some((u32::try_from(start).ok()?, len))
        };
        for _ in 0..count {
            let key = field(&mut at)?;
            let raw = b.get(at..at + 4)?;
            let raw = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
            let value = if raw & SHARED != 0 {
                // The value of an earlier entry of this block.
                at += 4;
                slots.get(usize::try_from(raw & !SHARED).ok()?)?.value
            } else {
                field(&mut at)?
            };
            slots.push(Slot { key, value });
        }
        (at == b.len()).then_some(Block { bytes, slots })
    }

    /// Entries in the block.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The key of entry `i`.
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        let (start, len) = self.slots[i].key;
        &self.bytes[start as usize..start as usize + len as usize]
    }

    /// The key of entry `i`, sharing the block's buffer.
    pub(crate) fn key_ivec(&self, i: usize) -> IVec {
        let (start, len) = self.slots[i].key;
        self.bytes.subslice(start as usize, len as usize)
    }

    /// The value of entry `i`, sharing the block's buffer.
    pub(crate) fn value(&self, i: usize) -> IVec {
        let (start, len) = self.slots[i].value;
        self.bytes.subslice(start as usize, len as usize)
    }

    /// The value of entry `i` as a slice.
    fn value_slice(&self, i: usize) -> &[u8] {
        let (start, len) = self.slots[i].value;
        &self.bytes[start as usize..start as usize + len as usize]
    }

    /// The index of the first entry whose key is not below `key`.
    pub(crate) fn lower_bound(&self, key: &[u8]) -> usize {
        self.slots.partition_point(|s| self.slot_key(s) < key)
    }

    /// The index of the first entry inside lower bound `lo`.
    fn first_from(&self, lo: Bound<&[u8]>) -> usize {
        match lo {
            Bound::Included(l) => self.lower_bound(l),
            Bound::Excluded(l) => self.upper_bound(l),
            Bound::Unbounded => 0,
        }
    }

    /// The index of the first entry beyond upper bound `hi` (the length
    /// when none is).
    fn first_past(&self, hi: Bound<&[u8]>) -> usize {
        match hi {
            Bound::Included(h) => self.upper_bound(h),
            Bound::Excluded(h) => self.lower_bound(h),
            Bound::Unbounded => self.len(),
        }
    }

    /// The index of the first entry whose key is above `key`.
    pub(crate) fn upper_bound(&self, key: &[u8]) -> usize {
        self.slots.partition_point(|s| self.slot_key(s) <= key)
    }

    fn slot_key(&self, s: &Slot) -> &[u8] {
        &self.bytes[s.key.0 as usize..(s.key.0 + s.key.1) as usize]
    }
}

/// A value length with this bit set is instead the index of an earlier
/// entry of the block with the same value (a tag's value, shared by the
/// rows of all its cards in the block, is stored once per block).
const SHARED: u32 = 1 << 31;

/// Values shorter than this are always written out (a reference costs
/// as much).
const MIN_SHARED: usize = 8;

fn encode(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let size = 4 + entries
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len32(entries.len()));
    let mut seen: HashMap<&[u8], u32, BuildFx> = HashMap::default();
    for (i, (k, v)) in entries.iter().enumerate() {
        out.extend_from_slice(&len32(k.len()));
        out.extend_from_slice(k);
        if let Some(i) = u32::try_from(i)
            .ok()
            .filter(|&i| i < SHARED && v.len() >= MIN_SHARED)
        {
            match seen.entry(v) {
                MapEntry::Occupied(first) => {
                    out.extend_from_slice(&(first.get() | SHARED).to_be_bytes());
                    continue;
                }
                MapEntry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
        out.extend_from_slice(&len32(v.len()));
        out.extend_from_slice(v);
    }
    out
}

fn corrupt(space: &[u8]) -> ViewError {
    ViewError::Corrupt {
        view: String::from_utf8_lossy(space.get(3..).unwrap_or_default()).into_owned(),
        detail: "index block".into(),
    }
}

/// A block (key, value), if any, and the key of the block after it.
type Located = (Option<(IVec, IVec)>, Option<IVec>);

/// The block that holds (or would hold) `key` in `space`: the last block
/// whose key is at or before it, else the first block; and the key of the
/// block after that one (entries of the found block stay below it).
fn locate(tree: &sled::Tree, space: &[u8], key: &[u8]) -> Result<Located, ViewError> {
    let mut full = Vec::with_capacity(space.len() + key.len());
    full.extend_from_slice(space);
    full.extend_from_slice(key);
    let found = match tree
        .range::<&[u8], _>((Bound::Included(space), Bound::Included(full.as_slice())))
        .next_back()
    {
        Some(kv) => Some(kv?),
        None => tree.scan_prefix(space).next().transpose()?,
    };
    let next = match &found {
        Some((k, _)) => tree
            .range::<&[u8], _>((Bound::Excluded(&k[..]), Bound::Unbounded))
            .next()
            .transpose()?
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(space)),
        None => None,
    };
    Ok((found, next))
}

/// The values of `keys` (sorted, unique) in `space`, where present; each
/// block read once.
pub(crate) fn lookup(
    tree: &sled::Tree,
    space: &[u8],
    keys: &[&[u8]],
) -> Result<Vec<Option<IVec>>, ViewError> {
    let mut out = Vec::with_capacity(keys.len());
    if tree.scan_prefix(space).next().is_none() {
        out.resize(keys.len(), None);
        return Ok(out);
    }
    let mut current: Option<(Block, Option<IVec>)> = None;
    for &key in keys {
        let reuse = matches!(&current, Some((_, next)) if next.as_ref().is_none_or(|n| &n[space.len()..] > key));
        if !reuse {
            let (found, next) = locate(tree, space, key)?;
            current = match found {
                Some((_, v)) => Some((Block::decode(v).ok_or_else(|| corrupt(space))?, next)),
                None => None,
            };
        }
        out.push(current.as_ref().and_then(|(block, _)| {
            let i = block.lower_bound(key);
            (i < block.len() && block.key(i) == key).then(|| block.value(i))
        }));
    }
    Ok(out)
}

/// An edit of one entry: `Some` value to put, `None` to remove. The value
/// is any byte container: rows share one buffer for a value many of them
/// store (a tag's), back-index entries own theirs.
pub(crate) type Edit<V = Vec<u8>> = (Vec<u8>, Option<V>);

/// Block writes gathered for one batch. Kept apart from a `sled::Batch`
/// (which cannot be merged) so that views can prepare theirs on separate
/// threads and the indexer still applies one batch; in order, so that a
/// block removed and rewritten under the same key ends up written.
#[derive(Default)]
pub(crate) struct Writes(Vec<(IVec, Option<IVec>)>);

impl Writes {
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.push((key.into(), Some(value.into())));
    }

    fn remove(&mut self, key: IVec) {
        self.0.push((key, None));
    }

    /// Adds the writes, in order, to `batch`.
    pub(crate) fn add_to(self, batch: &mut sled::Batch) {
        for (key, value) in self.0 {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
    }

    /// Applies the writes to `tree` as one batch.
    #[cfg(test)]
    pub(crate) fn apply_to(self, tree: &sled::Tree) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        self.add_to(&mut batch);
        tree.apply_batch(batch)
    }
}

/// Applies `edits` (sorted by key, keys unique) to `space`, adding to
/// `batch` the removal of every touched block and the blocks that replace
/// it. Touched blocks are read now: the caller must be the space's only
/// writer until the batch is applied.
pub(crate) fn apply<V: AsRef<[u8]>>(
    tree: &sled::Tree,
    space: &[u8],
    edits: &[Edit<V>],
    batch: &mut Writes,
) -> Result<(), ViewError> {
    let mut rest = edits;
    let empty = tree.scan_prefix(space).next().is_none();
    while let Some((first, _)) = rest.first() {
        let (found, next) = if empty {
            (None, None)
        } else {
            locate(tree, space, first)?
        };
        let take = match &next {
            Some(n) => rest.partition_point(|(k, _)| k.as_slice() < &n[space.len()..]),
            None => rest.len(),
        };
        let (group, tail) = rest.split_at(take.max(1));
        rest = tail;
        let old = match found {
            Some((k, v)) => Some((k, Block::decode(v).ok_or_else(|| corrupt(space))?)),
            None => None,
        };
        let (merged, changed) = merge(old.as_ref().map(|(_, b)| b), group);
        // A document re-indexed to the same rows (a tag whose cards did
        // not change) leaves its blocks as they are.
        if !changed {
            continue;
        }
        if let Some((k, _)) = &old {
            batch.remove(k.clone());
        }
        write_blocks(space, &merged, batch);
    }
    Ok(())
}

/// A (key, value) entry, borrowed.
type Entry<'a> = (&'a [u8], &'a [u8]);

/// The entries of `old` with `edits` applied, in key order, and whether
/// that differs from `old`.
fn merge<'a, V: AsRef<[u8]>>(
    old: Option<&'a Block>,
    edits: &'a [Edit<V>],
) -> (Vec<Entry<'a>>, bool) {
    let n = old.map_or(0, Block::len);
    let mut out = Vec::with_capacity(n + edits.len());
    let mut changed = false;
    let (mut i, mut j) = (0, 0);
    while i < n || j < edits.len() {
        let order = match (old.filter(|_| i < n), edits.get(j)) {
            (Some(b), Some((k, _))) => b.key(i).cmp(k.as_slice()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match (order, old) {
            (std::cmp::Ordering::Less, Some(b)) => {
                out.push((b.key(i), b.value_slice(i)));
                i += 1;
            }
            (std::cmp::Ordering::Equal, Some(b)) => {
                let (k, v) = &edits[j];
                match v {
                    Some(v) => {
                        changed |= v.as_ref() != b.value_slice(i);
                        out.push((k.as_slice(), v.as_ref()));
                    }
                    None => changed = true,
                }
                i += 1;
                j += 1;
            }
            _ => {
                let (k, v) = &edits[j];
                if let Some(v) = v {
                    out.push((k.as_slice(), v.as_ref()));
                    changed = true;
                }
                j += 1;
            }
        }
    }
    (out, changed)
}

/// Cuts sorted entries into blocks of about [`TARGET`] bytes (evenly, so
/// that a block split by one insert leaves two half-full blocks).
fn write_blocks(space: &[u8], entries: &[(&[u8], &[u8])], batch: &mut Writes) {
    if entries.is_empty() {
        return;
    }
    let size: usize = entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let blocks = size.div_ceil(TARGET).max(1);
    let per = size / blocks;
    let mut start = 0;
    let mut acc = 0;
    for (i, (k, v)) in entries.iter().enumerate() {
        acc += 8 + k.len() + v.len();
        if acc >= per || i + 1 == entries.len() {
            let part = &entries[start..=i];
            let mut key = Vec::with_capacity(space.len() + part[0].0.len());
            key.extend_from_slice(space);
            key.extend_from_slice(part[0].0);
            batch.insert(key, encode(part));
            start = i + 1;
            acc = 0;
        }
    }
}

/// Sorts edits by key, keeping the last edit of each key (a document seen
/// twice in one chunk).
pub(crate) fn normalize<V>(mut edits: Vec<Edit<V>>) -> Vec<Edit<V>> {
    // Stable, so the last edit of a key stays last; runs already in order
    // (a document's rows, documents in id order) make it nearly linear.
    edits.sort_by(|a, b| a.0.cmp(&b.0));
    if !edits.windows(2).any(|w| w[0].0 == w[1].0) {
        return edits;
    }
    let mut out: Vec<Edit<V>> = Vec::with_capacity(edits.len());
    for e in edits {
        match out.last_mut() {
            Some(last) if last.0 == e.0 => *last = e,
            _ => out.push(e),
        }
    }
    out
}

/// The key of the block of `space` that holds `bound`'s entry (the last
/// block whose key is at or before it), if any block is; `None` for an
/// unbounded side.
fn block_holding(
    tree: &sled::Tree,
    space: &[u8],
    bound: Bound<&[u8]>,
) -> Result<Option<IVec>, ViewError> {
    let (Bound::Included(k) | Bound::Excluded(k)) = bound else {
        return Ok(None);
    };
    let mut full = space.to_vec();
    full.extend_from_slice(k);
    Ok(tree
        .range::<&[u8], _>((Bound::Included(space), Bound::Included(full.as_slice())))
        .next_back()
        .transpose()?
        .map(|(k, _)| k))
}

/// A key above every block of `space`: entry keys (encoded view keys, doc
/// ids) never start with 0xFF.
fn space_end(space: &[u8]) -> IVec {
    let mut end = space.to_vec();
    end.extend_from_slice(&[0xFF; 8]);
    IVec::from(end)
}

/// The number of entries of `space` between two key bounds (on the entry
/// keys, without the space prefix). A block wholly inside the bounds is
/// counted from its header, without decoding it: only the two blocks at
/// the bounds are decoded (a view's `offset` over 100k rows reads a few
/// hundred headers instead of decoding 100k rows).
pub(crate) fn count(
    tree: &sled::Tree,
    space: &[u8],
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
) -> Result<u64, ViewError> {
    let start = block_holding(tree, space, lo)?.unwrap_or_else(|| IVec::from(space));
    let mut blocks = tree
        .range((Bound::Included(start), Bound::Excluded(space_end(space))))
        .peekable();
    let below_hi = |key: &[u8]| match hi {
        Bound::Included(h) => key <= h,
        Bound::Excluded(h) => key < h,
        Bound::Unbounded => true,
    };
    let above_lo = |key: &[u8]| match lo {
        Bound::Included(l) => key >= l,
        Bound::Excluded(l) => key > l,
        Bound::Unbounded => true,
    };
    let mut n = 0u64;
    while let Some(item) = blocks.next() {
        let (k, v) = item?;
        let Some(first_key) = k.strip_prefix(space) else {
            break;
        };
        if !below_hi(first_key) {
            break;
        }
        // Every entry of this block sorts below the next block's key.
        let next_within = match blocks.peek() {
            Some(Ok((next, _))) => next.strip_prefix(space).is_some_and(below_hi),
            Some(Err(_)) => false,
            None => matches!(hi, Bound::Unbounded),
        };
        if above_lo(first_key) && next_within {
            let header = v.first_chunk::<4>().ok_or_else(|| corrupt(space))?;
            n += u64::from(u32::from_be_bytes(*header));
            continue;
        }
        let block = Block::decode(v).ok_or_else(|| corrupt(space))?;
        let (from, to) = (block.first_from(lo), block.first_past(hi));
        n += to.saturating_sub(from) as u64;
        if to < block.len() {
            break;
        }
    }
    Ok(n)
}

/// Entries of `space` between two key bounds (bounds on the entry keys,
/// without the space prefix), forwards or backwards, lazily.
pub(crate) struct Scan<'a> {
    blocks: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>> + 'a>,
    space: Vec<u8>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    descending: bool,
    /// The current block and, forwards, the next entry index; backwards,
    /// one past it.
    current: Option<(Block, usize)>,
    done: bool,
}

impl<'a> Scan<'a> {
    /// A scan of `space` over `(lo, hi)`.
    pub(crate) fn new(
        tree: &'a sled::Tree,
        space: Vec<u8>,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        descending: bool,
    ) -> Result<Scan<'a>, ViewError> {
        let anchor = if descending { &hi } else { &lo };
        let start = block_holding(tree, &space, anchor.as_ref().map(Vec::as_slice))?;
        let end = space_end(&space);
        let first = IVec::from(space.as_slice());
        let blocks: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> = match (descending, start)
        {
            (false, Some(s)) => Box::new(tree.range((Bound::Included(s), Bound::Excluded(end)))),
            (false, None) => Box::new(tree.range((Bound::Included(first), Bound::Excluded(end)))),
            (true, Some(s)) => Box::new(
                tree.range((Bound::Included(first), Bound::Included(s)))
                    .rev(),
            ),
            (true, None) if matches!(hi, Bound::Unbounded) => Box::new(
                tree.range((Bound::Included(first), Bound::Excluded(end)))
                    .rev(),
            ),
            // Every block starts after the scan's first bound.
            (true, None) => Box::new(std::iter::empty()),
        };
        Ok(Scan {
            blocks,
            space,
            lo,
            hi,
            descending,
            current: None,
            done: false,
        })
    }

    /// True when `key` is beyond the scan's far bound.
    fn past(&self, key: &[u8]) -> bool {
        if self.descending {
            match &self.lo {
                Bound::Included(l) => key < l.as_slice(),
                Bound::Excluded(l) => key <= l.as_slice(),
                Bound::Unbounded => false,
            }
        } else {
            match &self.hi {
                Bound::Included(h) => key > h.as_slice(),
                Bound::Excluded(h) => key >= h.as_slice(),
                Bound::Unbounded => false,
            }
        }
    }

    /// Loads the next block in scan order, positioned at its first entry
    /// inside the near bound; false at the end of the space.
    fn next_block(&mut self) -> Result<bool, ViewError> {
        let Some(item) = self.blocks.next() else {
            return Ok(false);
        };
        let (k, v) = item?;
        if !k.starts_with(&self.space) {
            return Ok(false);
        }
        let block = Block::decode(v).ok_or_else(|| corrupt(&self.space))?;
        let at = if self.descending {
            block.first_past(self.hi.as_ref().map(Vec::as_slice))
        } else {
            block.first_from(self.lo.as_ref().map(Vec::as_slice))
        };
        self.current = Some((block, at));
        Ok(true)
    }
}

impl Iterator for Scan<'_> {
    /// An entry's key (without the space prefix) and value.
    type Item = Result<(IVec, IVec), ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let at = match &mut self.current {
                Some((block, at)) if !self.descending && *at < block.len() => {
                    *at += 1;
                    Some(*at - 1)
                }
                Some((_, at)) if self.descending && *at > 0 => {
                    *at -= 1;
                    Some(*at)
                }
                _ => None,
            };
            match (at, &self.current) {
                (Some(i), Some((block, _))) => {
                    if self.past(block.key(i)) {
                        self.done = true;
                    } else {
                        return Some(Ok((block.key_ivec(i), block.value(i))));
                    }
                }
                _ => match self.next_block() {
                    Ok(true) => {}
                    Ok(false) => self.done = true,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
            }
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    fn key(i: u64) -> Vec<u8> {
        format!("k{i:05}").into_bytes()
    }

    fn bound(rng: &mut Rng) -> Bound<Vec<u8>> {
        match rng.below(3) {
            0 => Bound::Unbounded,
            1 => Bound::Included(key(rng.below(3000))),
            _ => Bound::Excluded(key(rng.below(3000))),
        }
    }

    fn inside(k: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
        (match lo {
            Bound::Included(l) => k >= l.as_slice(),
            Bound::Excluded(l) => k > l.as_slice(),
            Bound::Unbounded => true,
        }) && (match hi {
            Bound::Included(h) => k <= h.as_slice(),
            Bound::Excluded(h) => k < h.as_slice(),
            Bound::Unbounded => true,
        })
    }

    #[test]
    fn equal_values_are_stored_once_per_block() {
        let shared = vec![7u8; 100];
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..50u64)
            .map(|i| {
                (
                    key(i),
                    if i % 5 == 0 {
                        vec![i as u8; 3]
                    } else {
                        shared.clone()
                    },
                )
            })
            .collect();
        let refs: Vec<(&[u8], &[u8])> = entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let bytes = encode(&refs);
        assert!(bytes.len() < 50 * 20 + 2 * 100, "{} bytes", bytes.len());
        let block = Block::decode(IVec::from(bytes)).unwrap();
        assert_eq!(block.len(), 50);
        for (i, (k, v)) in entries.iter().enumerate() {
            assert_eq!(block.key(i), k.as_slice());
            assert_eq!(&block.value(i)[..], v.as_slice());
        }
        // A reference to a later entry, or past the end, is damage.
        let mut bad = vec![0, 0, 0, 1, 0, 0, 0, 1, b'k'];
        bad.extend_from_slice(&SHARED.to_be_bytes());
        assert!(Block::decode(IVec::from(bad)).is_none());
    }

    /// Random edit rounds against a `BTreeMap`: scans both ways over random
    /// bounds and lookups see exactly the model, while blocks split, shrink
    /// and go away; a neighbouring space is never touched.
    #[test]
    fn edits_scans_and_lookups_match_a_model() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let space = b"r\x00\x01a".to_vec();
        let other = b"r\x00\x01b".to_vec();
        let mut batch = Writes::default();
        apply(
            &tree,
            &other,
            &[(b"x".to_vec(), Some(b"y".to_vec()))],
            &mut batch,
        )
        .unwrap();
        batch.apply_to(&tree).unwrap();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut most_blocks = 0;
        for round in 0..60 {
            let n = if round == 0 { 2000 } else { 1 + rng.below(200) };
            // Late rounds mostly remove, so blocks empty out.
            let removing = if round > 40 { 8 } else { 3 };
            let mut edits = Vec::new();
            for _ in 0..n {
                let k = key(rng.below(3000));
                if rng.below(10) < removing {
                    edits.push((k, None));
                } else {
                    let len = 1 + rng.below(2000) as usize;
                    edits.push((k, Some(vec![(round % 251) as u8; len])));
                }
            }
            let edits = normalize(edits);
            let mut batch = Writes::default();
            apply(&tree, &space, &edits, &mut batch).unwrap();
            batch.apply_to(&tree).unwrap();
            for (k, v) in &edits {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
            most_blocks = most_blocks.max(tree.scan_prefix(&space).count());
            for _ in 0..20 {
                let (lo, hi) = (bound(&mut rng), bound(&mut rng));
                let want: Vec<Vec<u8>> = model
                    .iter()
                    .filter(|(k, _)| inside(k, &lo, &hi))
                    .map(|(_, v)| v.clone())
                    .collect();
                let fwd: Vec<Vec<u8>> =
                    Scan::new(&tree, space.clone(), lo.clone(), hi.clone(), false)
                        .unwrap()
                        .map(|v| v.unwrap().1.to_vec())
                        .collect();
                assert_eq!(fwd, want, "round {round} forwards {lo:?}..{hi:?}");
                let mut back: Vec<Vec<u8>> =
                    Scan::new(&tree, space.clone(), lo.clone(), hi.clone(), true)
                        .unwrap()
                        .map(|v| v.unwrap().1.to_vec())
                        .collect();
                back.reverse();
                assert_eq!(back, want, "round {round} backwards {lo:?}..{hi:?}");
                let counted = count(
                    &tree,
                    &space,
                    lo.as_ref().map(Vec::as_slice),
                    hi.as_ref().map(Vec::as_slice),
                )
                .unwrap();
                assert_eq!(
                    counted,
                    want.len() as u64,
                    "round {round} count {lo:?}..{hi:?}"
                );
            }
            let mut probe: Vec<Vec<u8>> = (0..50).map(|_| key(rng.below(3000))).collect();
            probe.sort();
            probe.dedup();
            let refs: Vec<&[u8]> = probe.iter().map(Vec::as_slice).collect();
            let got = lookup(&tree, &space, &refs).unwrap();
            for (k, v) in probe.iter().zip(got) {
                assert_eq!(
                    v.map(|v| v.to_vec()),
                    model.get(k).cloned(),
                    "round {round}"
                );
            }
            for kv in tree.scan_prefix(&space) {
                let (_, v) = kv.unwrap();
                let block = Block::decode(v).unwrap();
                assert!(block.len() > 0, "no empty block is kept");
            }
        }
        assert!(most_blocks > 50, "blocks split ({most_blocks})");
        let others: Vec<_> = tree.scan_prefix(&other).collect();
        assert_eq!(others.len(), 1);
        let all: Vec<_> = Scan::new(&tree, other, Bound::Unbounded, Bound::Unbounded, true)
            .unwrap()
            .map(|v| v.unwrap().1.to_vec())
            .collect();
        assert_eq!(all, vec![b"y".to_vec()]);
    }
}
