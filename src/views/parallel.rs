//! Indexing on more than one core: the two parts of a warm-up that split
//! cleanly across threads, behind an interface that keeps them in order.
//!
//! - [`Ordered`] takes parts in order (ranges of local sequences, or
//!   documents read in id order), prepares them on worker threads (reading
//!   the documents and running the map functions, the larger half of a
//!   build from nothing), and hands the results to one consumer in the
//!   parts' order, a bounded number of parts (and of rows, by the weight
//!   the caller gives them) ahead of it.
//! - [`map_in_threads`] runs one job per view (sorting a view's edits and
//!   cutting its blocks) on up to N threads and returns the results in the
//!   views' order.
//!
//! Nothing here knows what a view or a document is, nor writes anything:
//! `index.rs` decides what is prepared and commits it, in order, on its own
//! thread, so the crash analysis of a chunk does not change. A panic on a
//! worker (an app's map function) is carried to the consumer and resumed
//! there, as it would surface without threads.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

/// How many threads a warm-up may use: `SETTEE_VIEW_THREADS` if set (1
/// turns threads off), else the available cores, at most 4.
pub(crate) fn threads() -> usize {
    std::env::var("SETTEE_VIEW_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get().min(4)))
}

/// A part's outcome: what the worker returned, or the panic it raised.
type Part<T> = thread::Result<T>;

struct Progress<T> {
    /// Finished parts not yet taken, by part number, with their weight.
    done: BTreeMap<usize, (Part<T>, usize)>,
    /// The weight of the parts in `done`.
    weight: usize,
    /// Parts taken by the consumer; the next one it takes is this one.
    taken: usize,
    /// How many parts there are, once a worker found the source empty.
    total: Option<usize>,
    /// The consumer left (finished, failed or panicked): workers stop.
    stop: bool,
}

/// Where workers claim parts: the source, and the number the next part
/// claimed gets.
struct Claims<P> {
    parts: Box<dyn Iterator<Item = P> + Send>,
    next: usize,
}

/// Parts (of `(after, upto]`, or from any source) prepared by workers,
/// taken in order.
pub(crate) struct Ordered<P, T> {
    /// Claimed one at a time: a source that reads (documents in id order)
    /// is read by one worker at a time, each taking the next part.
    claims: Mutex<Claims<P>>,
    /// How many parts a worker may finish ahead of the consumer: memory
    /// is bounded by it, not by the backlog.
    window: usize,
    /// The weight (rows, say) finished parts may hold ahead of the
    /// consumer: past it, a worker starts no part but the one the consumer
    /// waits for, so a few parts of heavy documents cannot hold more than
    /// this (plus the parts being prepared).
    max_weight: usize,
    progress: Mutex<Progress<T>>,
    changed: Condvar,
}

/// Sequences `after + 1 ..= upto` in parts of about `span`.
pub(crate) fn seq_parts(
    after: u64,
    upto: u64,
    span: u64,
) -> std::vec::IntoIter<RangeInclusive<u64>> {
    let span = span.max(1);
    let mut parts = Vec::new();
    let mut start = after.saturating_add(1);
    while start <= upto {
        let end = start.saturating_add(span - 1).min(upto);
        parts.push(start..=end);
        if end == u64::MAX {
            break;
        }
        start = end + 1;
    }
    parts.into_iter()
}

impl<P, T: Send> Ordered<P, T> {
    /// The parts `source` yields, in its order, for `workers` threads,
    /// with at most `max_weight` of finished parts ahead of the consumer.
    pub(crate) fn from_source(
        source: impl Iterator<Item = P> + Send + 'static,
        workers: usize,
        max_weight: usize,
    ) -> Self {
        Ordered {
            claims: Mutex::new(Claims {
                parts: Box::new(source),
                next: 0,
            }),
            window: workers.max(1) * 4,
            max_weight,
            progress: Mutex::new(Progress {
                done: BTreeMap::new(),
                weight: 0,
                taken: 0,
                total: None,
                stop: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress<T>> {
        // A poisoned lock only means a thread panicked while holding it;
        // the map is still consistent (every update is one insert/remove).
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A worker's loop: claims parts in order and prepares each with
    /// `prepare(state, part)`, until every part is claimed or the consumer
    /// stops. `state` is the worker's own (a key cache, say); `weigh` tells
    /// what a prepared part holds, against `max_weight`.
    pub(crate) fn work<S>(
        &self,
        mut state: S,
        prepare: impl Fn(&mut S, P) -> T,
        weigh: impl Fn(&T) -> usize,
    ) {
        loop {
            let Some((i, part)) = self.claim() else {
                return;
            };
            {
                let mut p = self.lock();
                // The part the consumer waits for never waits: no deadlock.
                while !p.stop
                    && (i >= p.taken + self.window || (i > p.taken && p.weight >= self.max_weight))
                {
                    p = self.changed.wait(p).unwrap_or_else(PoisonError::into_inner);
                }
                if p.stop {
                    return;
                }
            }
            let out = catch_unwind(AssertUnwindSafe(|| prepare(&mut state, part)));
            let panicked = out.is_err();
            let weight = out.as_ref().map_or(0, &weigh);
            let mut p = self.lock();
            p.weight += weight;
            p.done.insert(i, (out, weight));
            drop(p);
            self.changed.notify_all();
            if panicked {
                return;
            }
        }
    }

    /// The next part and its number; `None` once the source is empty
    /// (then the consumer learns how many parts there are).
    fn claim(&self) -> Option<(usize, P)> {
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        // The source is read outside any lock the consumer takes.
        let next = claims.parts.next();
        let i = claims.next;
        if next.is_some() {
            claims.next += 1;
        }
        drop(claims);
        match next {
            Some(part) => Some((i, part)),
            None => {
                self.lock().total = Some(i);
                self.changed.notify_all();
                None
            }
        }
    }

    /// The next part's result, in order; `None` after the last. Resumes a
    /// worker's panic here.
    pub(crate) fn next_part(&self) -> Option<T> {
        let mut p = self.lock();
        loop {
            if p.total.is_some_and(|total| p.taken >= total) {
                return None;
            }
            let want = p.taken;
            if let Some((out, weight)) = p.done.remove(&want) {
                p.taken += 1;
                p.weight -= weight;
                drop(p);
                self.changed.notify_all();
                return Some(out.unwrap_or_else(|panic| resume_unwind(panic)));
            }
            p = self.changed.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Tells the workers to stop; call it (or hold [`Ordered::stop_guard`])
    /// before the scope that runs them ends, or they may wait forever.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// Stops the workers when dropped, also when the consumer returns early
    /// with an error or unwinds.
    pub(crate) fn stop_guard(&self) -> StopGuard<'_, P, T> {
        StopGuard(self)
    }
}

impl<P: Send, T: Send> Ordered<P, T> {
    /// Runs `prepare` over the parts on up to `threads` worker threads
    /// named `name` (each with its own state from `state`), and `consume`
    /// on this thread, which takes the results in order with
    /// [`Ordered::next_part`]; its result and the number of workers that
    /// started. `None` when not one could start (nothing was read).
    pub(crate) fn run<S, R>(
        &self,
        name: &str,
        threads: usize,
        state: impl Fn() -> S + Sync,
        prepare: impl Fn(&mut S, P) -> T + Sync,
        weigh: impl Fn(&T) -> usize + Sync,
        consume: impl FnOnce() -> R,
    ) -> Option<(R, usize)> {
        thread::scope(|scope| {
            // Workers stop with the consumer: also on an error, a panic, or
            // a worker that could not start (before the others fill the
            // window and wait).
            let _stop = self.stop_guard();
            let mut started = 0;
            for _ in 0..threads {
                let worker = thread::Builder::new()
                    .name(name.to_owned())
                    .spawn_scoped(scope, || self.work(state(), &prepare, &weigh));
                match worker {
                    Ok(_) => started += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, started, "could not start a worker thread");
                        break;
                    }
                }
            }
            (started > 0).then(|| (consume(), started))
        })
    }
}

/// See [`Ordered::stop_guard`].
pub(crate) struct StopGuard<'a, P, T: Send>(&'a Ordered<P, T>);

impl<P, T: Send> Drop for StopGuard<'_, P, T> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// `f` of every item, on up to `threads` threads, in the items' order
/// (on the calling thread alone when one thread or one item).
pub(crate) fn map_in_threads<I: Send, O: Send>(
    items: Vec<I>,
    threads: usize,
    f: impl Fn(I) -> O + Sync,
) -> Vec<O> {
    if threads < 2 || items.len() < 2 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let queue = Mutex::new(items.into_iter().enumerate());
    let mut results: Vec<(usize, Part<O>)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(n))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                        let Some((i, item)) = next else {
                            return mine;
                        };
                        mine.push((i, catch_unwind(AssertUnwindSafe(|| f(item)))));
                    }
                })
            })
            .collect();
        // A worker's own code cannot panic outside `catch_unwind`.
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|panic| resume_unwind(panic)))
            .collect()
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results
        .into_iter()
        .map(|(_, out)| out.unwrap_or_else(|panic| resume_unwind(panic)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Parts come back in sequence order, each exactly once, whatever
    /// order the workers finish them in, and cover the range.
    #[test]
    fn ordered_parts_arrive_in_order_and_cover_the_range() {
        let ordered: Ordered<_, Vec<u64>> =
            Ordered::from_source(seq_parts(10, 1000, 7), 3, usize::MAX);
        thread::scope(|s| {
            for w in 0..3u64 {
                let ordered = &ordered;
                s.spawn(move || {
                    ordered.work(
                        (),
                        |(), part| {
                            // Uneven work, so parts finish out of order.
                            if (part.start() + w) % 3 == 0 {
                                thread::sleep(std::time::Duration::from_millis(1));
                            }
                            part.collect()
                        },
                        Vec::len,
                    )
                });
            }
            let _guard = ordered.stop_guard();
            let mut seen = Vec::new();
            while let Some(part) = ordered.next_part() {
                seen.extend(part);
            }
            assert_eq!(seen, (11..=1000).collect::<Vec<_>>());
        });
    }

    /// Past `max_weight`, workers start only the part the consumer waits
    /// for: finished parts never hold much more than it, and a slow
    /// consumer still gets every part.
    #[test]
    fn finished_parts_ahead_are_bounded_by_weight() {
        let ordered: Ordered<_, u64> = Ordered::from_source(seq_parts(0, 200, 1), 3, 10);
        let heaviest = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| ordered.work((), |(), part| *part.start(), |_| 4));
            }
            let _guard = ordered.stop_guard();
            let mut seen = Vec::new();
            while let Some(part) = ordered.next_part() {
                heaviest.fetch_max(ordered.lock().weight, Ordering::Relaxed);
                thread::sleep(std::time::Duration::from_micros(200));
                seen.push(part);
            }
            assert_eq!(seen, (1..=200).collect::<Vec<_>>());
        });
        // Below 10 when each of the three workers started its part, plus
        // the three parts' weight.
        let heaviest = heaviest.load(Ordering::Relaxed);
        assert!(heaviest < 10 + 3 * 4, "{heaviest}");
        assert!(
            heaviest >= 8,
            "the consumer was slow enough to fill it: {heaviest}"
        );
        assert_eq!(ordered.lock().weight, 0);
    }

    /// A consumer that stops early does not leave workers waiting.
    #[test]
    fn an_early_stop_releases_the_workers() {
        let ordered: Ordered<_, u64> = Ordered::from_source(seq_parts(0, 10_000, 1), 2, usize::MAX);
        thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| ordered.work((), |(), part| *part.start(), |_| 1));
            }
            let _guard = ordered.stop_guard();
            assert_eq!(ordered.next_part(), Some(1));
            assert_eq!(ordered.next_part(), Some(2));
        });
        // Reaching here means the scope joined both workers.
        assert!(ordered.lock().done.len() <= ordered.window);
    }

    /// A worker's panic surfaces on the consumer, not as a hang.
    #[test]
    fn a_worker_panic_is_resumed_on_the_consumer() {
        let caught = catch_unwind(|| {
            let ordered: Ordered<_, u64> =
                Ordered::from_source(seq_parts(0, 100, 10), 2, usize::MAX);
            thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        ordered.work(
                            (),
                            |(), part| {
                                assert!(*part.start() != 41, "map function failed");
                                *part.start()
                            },
                            |_| 1,
                        )
                    });
                }
                let _guard = ordered.stop_guard();
                while ordered.next_part().is_some() {}
            });
        });
        assert!(caught.is_err());
    }

    #[test]
    fn map_in_threads_keeps_the_items_order() {
        let out = map_in_threads((0..50).collect(), 3, |i: u64| i * i);
        assert_eq!(out, (0..50).map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(map_in_threads(vec![7u64], 3, |i| i + 1), vec![8]);
    }
}
