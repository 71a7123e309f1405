//! Sandboxed JavaScript: the map and reduce functions of design documents,
//! run in an embedded QuickJS (the engine CouchDB 3.4 ships) with
//! CouchDB's query-server API (`emit`, `log`, `sum`, `isArray`, `toJSON`,
//! `require` of the design document's CommonJS modules).
//!
//! - `prelude.js`: that API and the entry points the host calls.
//! - `sandbox.rs`: one runtime with its limits; errors.
//! - `functions.rs`: [`Functions`], a design document's compiled functions.
//! - `cache.rs`: compiled functions kept per thread, by signature.
//!
//! The sandbox: the code sees only the ECMAScript built-ins and the
//! prelude (no module loader, no `std`/`os`, no timers, no host objects but
//! a log line); each call has a deadline (`Limits::time`), each runtime a
//! memory and a stack limit. What an app's code does wrong stays inside: a
//! map function that throws gives no rows for that document (logged, as
//! CouchDB does); one that runs out of time or memory fails that view's
//! update with [`JsError`], and its runtime is thrown away.
//!
//! This module knows nothing of the store or the views: it takes and gives
//! JSON text.

mod cache;
mod functions;
mod sandbox;

pub(crate) use cache::with_functions;
pub(crate) use functions::{Functions, Mapped};

use std::time::Duration;

/// Limits on an application's JavaScript.
///
/// ```
/// use settee::query::ScriptLimits;
/// use std::time::Duration;
///
/// let limits = ScriptLimits::default().with_time(Duration::from_secs(1));
/// assert_eq!(limits.time, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Limits {
    /// How long one call may run: a map function over one document, a
    /// reduce over one group of rows. CouchDB's `os_process_timeout`
    /// default: 5 s.
    pub time: Duration,
    /// Bytes one runtime may allocate (each indexing thread has its own).
    pub memory: usize,
    /// Bytes of native stack the code may use (deep recursion).
    pub stack: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(5),
            memory: 64 << 20,
            // Well inside the 2 MiB stack of an indexing thread.
            stack: 512 << 10,
        }
    }
}

impl Limits {
    /// With this time limit per call.
    pub fn with_time(mut self, time: Duration) -> Self {
        self.time = time;
        self
    }

    /// With this memory limit per runtime.
    pub fn with_memory(mut self, bytes: usize) -> Self {
        self.memory = bytes;
        self
    }
}

/// What went wrong running a design document's JavaScript.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JsError {
    /// A function does not compile, or is not a function.
    #[error("compilation_error: {0}")]
    Compile(String),
    /// A call ran past its time limit and was stopped.
    #[error("the function ran longer than its limit of {0:?} and was stopped")]
    Timeout(Duration),
    /// The runtime ran out of its memory (or stack) limit.
    #[error("the function needed more than its limit of {limit} bytes of memory: {message}")]
    Memory {
        /// The limit.
        limit: usize,
        /// QuickJS's message.
        message: String,
    },
    /// The code threw what CouchDB treats as fatal for the request
    /// (`"fatal_error"`, `["fatal", …]`, a bad `require`).
    #[error("{0}")]
    Fatal(String),
    /// An exception where none is expected (in the prelude's own code).
    #[error("the function threw: {0}")]
    Thrown(String),
    /// The function returned what is not JSON.
    #[error("the function's output is not JSON: {0}")]
    Output(String),
    /// QuickJS itself failed (a runtime could not be created).
    #[error("the JavaScript engine failed: {0}")]
    Engine(String),
}

impl JsError {
    /// Whether the runtime may be in a bad state and must be dropped.
    pub(crate) fn poisons(&self) -> bool {
        matches!(
            self,
            JsError::Timeout(_) | JsError::Memory { .. } | JsError::Engine(_)
        )
    }

    /// CouchDB's `error` for it.
    pub(crate) fn couch_error(&self) -> &'static str {
        match self {
            JsError::Compile(_) => "compilation_error",
            JsError::Timeout(_) => "os_process_error",
            JsError::Memory { .. } => "os_process_error",
            JsError::Fatal(_) | JsError::Thrown(_) => "map_runtime_error",
            JsError::Output(_) | JsError::Engine(_) => "os_process_error",
        }
    }
}

#[cfg(test)]
mod tests;
