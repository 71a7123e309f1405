//! One QuickJS runtime with the query server loaded: limits, the entry
//! points of `prelude.js`, and the translation of what can go wrong into
//! [`JsError`]. A runtime is single-threaded (QuickJS is); callers keep
//! one per thread ([`super::cache`]).

use super::{JsError, Limits};
use rquickjs::{CatchResultExt, CaughtError, Context, Ctx, Function, Runtime};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const PRELUDE: &str = include_str!("prelude.js");

/// No deadline is set (between calls).
const NO_DEADLINE: u64 = u64::MAX;

/// A runtime, its one context, and the functions of one design document.
pub(crate) struct Sandbox {
    // Field order: the context must go before its runtime.
    context: Context,
    // Read only by tests (memory use); the context keeps its runtime alive.
    #[cfg_attr(not(test), allow(dead_code))]
    runtime: Runtime,
    /// Nanoseconds after `epoch` at which the running call is stopped.
    deadline: Arc<AtomicU64>,
    epoch: Instant,
    limits: Limits,
    /// The design document, for errors and log lines.
    ddoc: Arc<str>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("ddoc", &self.ddoc)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A runtime with `prelude.js` and the design document's functions
    /// compiled: `lib` is its `views.lib` (JSON, `null` if none), `maps`
    /// and `reduces` the sources by index.
    pub(crate) fn new(
        ddoc: &str,
        lib: &str,
        maps: &[&str],
        reduces: &[&str],
        limits: Limits,
    ) -> Result<Sandbox, JsError> {
        let engine = |e: rquickjs::Error| JsError::Engine(e.to_string());
        let runtime = Runtime::new().map_err(engine)?;
        runtime.set_memory_limit(limits.memory);
        runtime.set_max_stack_size(limits.stack);
        let epoch = Instant::now();
        let deadline = Arc::new(AtomicU64::new(NO_DEADLINE));
        let watched = Arc::clone(&deadline);
        // QuickJS calls this every few thousand operations: a loop with no
        // end is stopped within microseconds of its deadline.
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let at = watched.load(Ordering::Relaxed);
            at != NO_DEADLINE && epoch.elapsed().as_nanos() as u64 > at
        })));
        let context = Context::full(&runtime).map_err(engine)?;
        let ddoc: Arc<str> = Arc::from(ddoc);
        let sandbox = Sandbox {
            context,
            runtime,
            deadline,
            epoch,
            limits,
            ddoc: Arc::clone(&ddoc),
        };
        let maps = serde_json::to_string(maps).map_err(|e| JsError::Engine(e.to_string()))?;
        let reduces = serde_json::to_string(reduces).map_err(|e| JsError::Engine(e.to_string()))?;
        let outcome = sandbox.run(|ctx| {
            let host_ddoc = Arc::clone(&ddoc);
            let log = Function::new(ctx.clone(), move |message: String| {
                tracing::info!(ddoc = %host_ddoc, "{message}");
            })?;
            ctx.globals().set("__host_log", log)?;
            ctx.eval::<(), _>(PRELUDE)?;
            let init: Function = ctx.globals().get("__init")?;
            init.call::<_, String>((lib, maps.as_str(), reduces.as_str()))
        })?;
        if let Some(reason) = outcome.strip_prefix("compilation_error: ") {
            return Err(JsError::Compile(reason.to_owned()));
        }
        Ok(sandbox)
    }

    /// The design document this sandbox runs.
    pub(crate) fn ddoc(&self) -> &str {
        &self.ddoc
    }

    /// Calls entry point `name` of the prelude with a deadline.
    pub(crate) fn call<A>(&self, name: &str, args: A) -> Result<String, JsError>
    where
        A: for<'js> rquickjs::function::IntoArgs<'js>,
    {
        self.run(|ctx| {
            let f: Function = ctx.globals().get(name)?;
            f.call::<_, String>(args)
        })
    }

    fn run<R>(
        &self,
        f: impl for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<R>,
    ) -> Result<R, JsError> {
        let limit = self.limits.time.as_nanos() as u64;
        let start = self.epoch.elapsed().as_nanos() as u64;
        self.deadline
            .store(start.saturating_add(limit), Ordering::Relaxed);
        let outcome = self
            .context
            .with(|ctx| f(&ctx).catch(&ctx).map_err(|caught| describe(&caught)));
        self.deadline.store(NO_DEADLINE, Ordering::Relaxed);
        outcome.map_err(|message| {
            let ran_out = self.epoch.elapsed().as_nanos() as u64 > start.saturating_add(limit);
            if ran_out {
                JsError::Timeout(self.limits.time)
            } else if message.contains("out of memory") || message.contains("stack overflow") {
                JsError::Memory {
                    limit: self.limits.memory,
                    message,
                }
            } else if let Some(thrown) = fatal(&message) {
                JsError::Fatal(thrown)
            } else {
                JsError::Thrown(message)
            }
        })
    }

    /// Bytes the runtime holds.
    #[cfg(test)]
    pub(crate) fn memory_used(&self) -> i64 {
        self.runtime.memory_usage().memory_used_size
    }
}

/// What a caught exception says, as text.
fn describe(caught: &CaughtError<'_>) -> String {
    match caught {
        CaughtError::Exception(e) => {
            let message = e.message().unwrap_or_default();
            match e.stack() {
                Some(stack) if !stack.is_empty() => format!("{message}\n{stack}"),
                _ => message,
            }
        }
        CaughtError::Value(v) => {
            // A thrown non-Error ("fatal_error", ["error", key, reason]).
            match v.ctx().json_stringify(v.clone()) {
                Ok(Some(s)) => s.to_string().unwrap_or_default(),
                _ => format!("{v:?}"),
            }
        }
        CaughtError::Error(e) => e.to_string(),
    }
}

/// A throw CouchDB treats as fatal for the whole request: "fatal_error"
/// or `["fatal", key, reason]`, and `["error", key, reason]` out of
/// `require` or the prelude.
fn fatal(message: &str) -> Option<String> {
    if message == "\"fatal_error\"" {
        return Some("function raised 'fatal_error'".into());
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(message) {
        Ok(parts) if parts.len() == 3 && (parts[0] == "fatal" || parts[0] == "error") => {
            Some(format!(
                "{}: {}",
                parts[1].as_str().unwrap_or_default(),
                parts[2].as_str().unwrap_or_default()
            ))
        }
        _ => None,
    }
}
