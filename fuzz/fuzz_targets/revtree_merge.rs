//! Revision paths built from the input merged into one tree: merging never
//! panics, a merged revision is then in the tree, merging it again changes
//! nothing, and the winner is one of the leaves.
#![no_main]
use libfuzzer_sys::fuzz_target;
use settee::revtree::{MergeOutcome, RevPath, RevTree};

fuzz_target!(|data: &[u8]| {
    let mut tree = RevTree::default();
    // Each path: [start, len, deleted, hash bytes...]; a small hash
    // alphabet so paths share ancestors and branch.
    for chunk in data.chunks(8) {
        let [start, len, deleted, hashes @ ..] = chunk else {
            continue;
        };
        let start = u64::from(*start % 12);
        let len = usize::from(*len % 6);
        let ids: Vec<String> = hashes
            .iter()
            .take(len)
            .map(|b| ((b'a' + b % 3) as char).to_string())
            .collect();
        let path = RevPath { start, ids };
        let deleted = deleted % 2 == 1;
        let Ok(_) = tree.merge(&path, deleted) else {
            continue;
        };
        let leaf = path.leaf().expect("a merged path has a leaf");
        assert!(tree.contains(&leaf));
        assert!(matches!(
            tree.merge(&path, deleted),
            Ok(MergeOutcome::AlreadyKnown)
        ));
    }
    if let Some(w) = tree.winner() {
        assert!(tree.leaves().iter().any(|l| l.rev == w.rev));
    }
});
