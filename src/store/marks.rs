//! Where to cut the replica's documents into parts of about equal size
//! for readers that walk them on several threads: every [`STEP`]-th id,
//! noted by the last walk of every record in id order.
//!
//! Only a guide: parts cut at marks are exact ranges whatever the marks
//! (every record is in exactly one part), so marks that have aged only
//! make the parts less even. Marks taken when the replica held less than
//! half or more than twice the documents it holds now are not used; the
//! next walk without them notes new ones. Kept in memory, per open
//! replica.

use std::sync::{Arc, Mutex, PoisonError};

/// One mark per this many records.
pub(crate) const STEP: usize = 4096;

/// The marks of one open replica.
#[derive(Debug, Default)]
pub(crate) struct IdMarks {
    noted: Mutex<Option<Noted>>,
}

#[derive(Debug, Clone)]
struct Noted {
    /// Every `STEP`-th id, in id order.
    ids: Arc<Vec<String>>,
    /// Records the walk that noted them read.
    records: u64,
}

impl IdMarks {
    /// The marks, if they were taken at about `records` records.
    pub(crate) fn current(&self, records: u64) -> Option<Arc<Vec<String>>> {
        let noted = self.noted.lock().unwrap_or_else(PoisonError::into_inner);
        let n = noted.as_ref()?;
        (n.records / 2 <= records && records <= n.records.saturating_mul(2))
            .then(|| Arc::clone(&n.ids))
    }

    /// Keeps the marks of a walk of every record, `records` of them.
    pub(crate) fn note(&self, ids: Vec<String>, records: u64) {
        *self.noted.lock().unwrap_or_else(PoisonError::into_inner) = Some(Noted {
            ids: Arc::new(ids),
            records,
        });
    }
}

/// What a walk of every record notes as it goes.
#[derive(Debug, Default)]
pub(crate) struct Noting {
    ids: Vec<String>,
    records: u64,
}

impl Noting {
    /// One more record, `id`.
    pub(crate) fn saw(&mut self, id: &[u8]) {
        self.records += 1;
        if self.records.is_multiple_of(STEP as u64) {
            self.ids.push(String::from_utf8_lossy(id).into_owned());
        }
    }

    /// The walk reached the last record: its marks for `marks`.
    pub(crate) fn finish(self, marks: &IdMarks) {
        marks.note(self.ids, self.records);
    }
}
