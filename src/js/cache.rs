//! Compiled design documents kept per thread: QuickJS runtimes are
//! single-threaded, and compiling a design document for every document or
//! query would cost more than running it. Each indexing thread builds its
//! own the first time it needs one (CouchDB runs one OS process per
//! worker the same way).

use super::{Functions, JsError};
use std::cell::RefCell;
use std::collections::HashMap;

/// Sandboxes a thread keeps; past that the oldest is dropped.
const PER_THREAD: usize = 16;

/// A use counter, and by signature the functions with their last use.
type Kept = (u64, HashMap<u64, (u64, Functions)>);

thread_local! {
    static SANDBOXES: RefCell<Kept> = RefCell::new((0, HashMap::new()));
}

/// Runs `f` with this thread's compiled functions for signature `sig`,
/// compiling them with `build` if the thread has none. A runtime an error
/// may have left broken (a timeout, out of memory) is dropped.
pub(crate) fn with_functions<R>(
    sig: u64,
    build: impl FnOnce() -> Result<Functions, JsError>,
    f: impl FnOnce(&Functions) -> Result<R, JsError>,
) -> Result<R, JsError> {
    // Taken out of the map while it runs, so `f` may use other sandboxes.
    let taken = SANDBOXES.with(|s| s.borrow_mut().1.remove(&sig));
    let functions = match taken {
        Some((_, functions)) => functions,
        None => build()?,
    };
    let outcome = f(&functions);
    if !matches!(&outcome, Err(e) if e.poisons()) {
        SANDBOXES.with(|s| {
            let mut s = s.borrow_mut();
            s.0 += 1;
            let tick = s.0;
            if s.1.len() >= PER_THREAD {
                let oldest = s.1.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    s.1.remove(&k);
                }
            }
            s.1.insert(sig, (tick, functions));
        });
    }
    outcome
}
