//! Where an id ranks among the live documents, for `_all_docs`' `offset`:
//! every [`STEP`]-th live id with the count of live ids before it, taken
//! at one local sequence, so an offset is a binary search and a walk of
//! at most `STEP` ids instead of a walk of half the replica.
//!
//! The marks are built by one walk of the ids, and only for a replica
//! that holds still: the first query at a sequence answers by walking
//! (the caller's way) and notes the sequence; a second query at the same
//! sequence builds the marks. A replica being written between every two
//! queries never pays for a build it could not reuse. Marks taken while
//! a commit landed are thrown away (the sequence moved during the walk).

use super::error::QueryError;
use crate::store::{DocInfo, Replica, StoreError};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

/// One mark per this many live documents.
const STEP: u64 = 1024;

/// Every `step`-th live id and the count of live ids before it, in id
/// order.
type Marks = Arc<Vec<(String, u64)>>;

/// The marks of one replica (shared by the clones of its `Query`).
#[derive(Debug)]
pub(crate) struct Ranks {
    step: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The marks and the sequence they were taken at.
    marks: Option<(u64, Marks)>,
    /// The sequence of the last query that found no current marks.
    asked_at: Option<u64>,
}

impl Default for Ranks {
    fn default() -> Self {
        Ranks::with_step(STEP)
    }
}

impl Ranks {
    fn with_step(step: u64) -> Ranks {
        Ranks {
            step: step.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// The live documents on the start side of `start` (before it, or
    /// after it when `descending`), when the marks are current or worth
    /// building now; `None` tells the caller to count its own way.
    pub(crate) fn live_on_start_side(
        &self,
        replica: &Replica,
        start: &str,
        descending: bool,
        total: u64,
    ) -> Result<Option<u64>, QueryError> {
        let seq = replica.update_seq()?;
        let Some(marks) = self.marks_at(replica, seq)? else {
            return Ok(None);
        };
        // Live ids `< start` (ascending) or `<= start` (descending: the
        // start side is what sorts after it).
        let end = match descending {
            false => Bound::Excluded(start),
            true => Bound::Included(start),
        };
        let i = marks.partition_point(|(id, _)| match descending {
            false => id.as_str() < start,
            true => id.as_str() <= start,
        });
        let (from, base) = match i {
            0 => (Bound::Unbounded, 0),
            _ => (Bound::Included(marks[i - 1].0.as_str()), marks[i - 1].1),
        };
        let walked = count_live(replica.docs((from, end)))?;
        let below = (base + walked).min(total);
        Ok(Some(match descending {
            false => below,
            true => total - below,
        }))
    }

    /// The marks at `seq`: current ones, or built now when this is the
    /// second query at `seq` in a row.
    fn marks_at(&self, replica: &Replica, seq: u64) -> Result<Option<Marks>, QueryError> {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match &state.marks {
                Some((at, marks)) if *at == seq => return Ok(Some(Arc::clone(marks))),
                _ => {}
            }
            if state.asked_at != Some(seq) {
                state.asked_at = Some(seq);
                return Ok(None);
            }
        }
        // Built without the lock: queries meanwhile count their own way.
        let mut marks = Vec::new();
        let mut live = 0u64;
        for info in replica.docs(..) {
            let info = info?;
            if info.deleted {
                continue;
            }
            if live.is_multiple_of(self.step) {
                marks.push((info.id, live));
            }
            live += 1;
        }
        if replica.update_seq()? != seq {
            // A commit landed during the walk: these marks describe no
            // one sequence.
            return Ok(None);
        }
        let marks = Arc::new(marks);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.marks = Some((seq, Arc::clone(&marks)));
        Ok(Some(marks))
    }
}

fn count_live(walk: impl Iterator<Item = Result<DocInfo, StoreError>>) -> Result<u64, QueryError> {
    let mut live = 0;
    for info in walk {
        if !info?.deleted {
            live += 1;
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::ReplicaConfig;
    use serde_json::json;

    /// Live ids on the start side, by walking them all.
    fn walked(replica: &Replica, start: &str, descending: bool) -> u64 {
        let all: Vec<DocInfo> = replica.docs(..).map(Result::unwrap).collect();
        all.iter()
            .filter(|d| !d.deleted)
            .filter(|d| match descending {
                false => d.id.as_str() < start,
                true => d.id.as_str() > start,
            })
            .count() as u64
    }

    #[test]
    fn marks_give_the_walks_offsets_and_only_for_their_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        for i in 0..200u32 {
            replica
                .put_blocking(&format!("d{:03}", i * 7 % 200), &json!({"n": i}))
                .unwrap();
        }
        for i in (0..200u32).step_by(3) {
            replica.delete_blocking(&format!("d{i:03}"), None).unwrap();
        }
        let ranks = Ranks::with_step(16);
        let total = replica.doc_count().unwrap();
        let starts = [
            "", "d000", "d001", "d050", "d0505", "d099", "d100", "d199", "e", "\u{fff0}",
        ];
        // The first query at a sequence walks; the second builds.
        assert!(ranks
            .live_on_start_side(&replica, "d050", false, total)
            .unwrap()
            .is_none());
        for start in starts {
            for descending in [false, true] {
                let got = ranks
                    .live_on_start_side(&replica, start, descending, total)
                    .unwrap();
                assert_eq!(
                    got,
                    Some(walked(&replica, start, descending)),
                    "{start} {descending}"
                );
            }
        }
        // A write makes them stale: the next query walks again.
        replica.put_blocking("d0505", &json!({})).unwrap();
        let total = replica.doc_count().unwrap();
        assert!(ranks
            .live_on_start_side(&replica, "d050", false, total)
            .unwrap()
            .is_none());
        assert_eq!(
            ranks
                .live_on_start_side(&replica, "d051", false, total)
                .unwrap(),
            Some(walked(&replica, "d051", false))
        );
    }
}
