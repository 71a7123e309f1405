//! A fast, non-cryptographic hash for the indexer's in-memory maps (the
//! Firefox/rustc "Fx" hash, with a final fold): its keys (view keys, block values) come from
//! the replica's own documents, and SipHash's resistance to chosen keys is
//! not worth its cost on a warm-up's hundreds of thousands of lookups.
//! Nothing here is stored: the hash may change between builds.

use std::hash::{BuildHasherDefault, Hasher};

/// The hasher state.
#[derive(Default, Clone, Copy)]
pub(crate) struct Fx(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
const FOLD: u64 = 0x9e_37_79_b9_7f_4a_7c_15;

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    /// A folded multiply: the word's low bits depend only on the input's
    /// low bits, and ids sharing a prefix (`c-000001`, `c-000002`) differ
    /// in their high bits, which hashbrown would otherwise not see.
    fn finish(&self) -> u64 {
        let wide = u128::from(self.0) * u128::from(FOLD);
        (wide as u64) ^ ((wide >> 64) as u64)
    }
}

/// `HashMap<K, V, BuildFx>`.
pub(crate) type BuildFx = BuildHasherDefault<Fx>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Ids that share a prefix spread over the low bits hashbrown indexes
    /// by (a plain Fx hash of `c-000001`… left them in 32 buckets).
    #[test]
    fn similar_ids_spread_over_low_bits() {
        let b = BuildFx::default();
        let buckets: std::collections::HashSet<u64> = (0..4096)
            .map(|i| b.hash_one(format!("c-{i:06}")) & 0xFFF)
            .collect();
        assert!(buckets.len() > 2000, "{} buckets", buckets.len());
    }
}
