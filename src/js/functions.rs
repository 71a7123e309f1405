//! A design document's functions, compiled in one sandbox: its views' map
//! functions and its JavaScript reduce functions, called by index.

use super::sandbox::Sandbox;
use super::{JsError, Limits};
use serde_json::Value;

/// The compiled functions of one design document.
#[derive(Debug)]
pub(crate) struct Functions {
    sandbox: Sandbox,
}

/// What a map function gave for one document.
#[derive(Debug, PartialEq)]
pub(crate) enum Mapped {
    /// Its rows, `(key, value)`, in emit order.
    Rows(Vec<(Value, Value)>),
    /// It threw: no rows for this document (CouchDB logs and goes on).
    Threw(String),
}

impl Functions {
    /// Compiles `maps` and `reduces` with `lib` (the design document's
    /// `views.lib`, or `Value::Null`) for `require`.
    pub(crate) fn new(
        ddoc: &str,
        lib: &Value,
        maps: &[&str],
        reduces: &[&str],
        limits: Limits,
    ) -> Result<Functions, JsError> {
        let lib = serde_json::to_string(lib).map_err(|e| JsError::Engine(e.to_string()))?;
        Ok(Functions {
            sandbox: Sandbox::new(ddoc, &lib, maps, reduces, limits)?,
        })
    }

    /// Runs map function `i` over a document given as JSON text (`_id`,
    /// `_rev` and the body). `key` names the document's revision: the map
    /// functions of one design document parse a document once.
    pub(crate) fn map(&self, i: usize, key: &str, doc: &str) -> Result<Mapped, JsError> {
        let out = self.sandbox.call("__map", (i as u32, key, doc))?;
        if let Some(thrown) = out.strip_prefix('!') {
            return Ok(Mapped::Threw(thrown.to_owned()));
        }
        let rows: Vec<(Value, Value)> =
            serde_json::from_str(&out).map_err(|e| JsError::Output(e.to_string()))?;
        Ok(Mapped::Rows(rows))
    }

    /// Runs reduce function `i`: over `[[key, id], value]` pairs (as JSON
    /// text) or, with `rereduce`, over earlier reductions. A function
    /// that throws reduces to `null` (CouchDB logs it and goes on).
    pub(crate) fn reduce(&self, i: usize, input: &str, rereduce: bool) -> Result<Value, JsError> {
        let out = self.sandbox.call("__reduce", (i as u32, input, rereduce))?;
        if let Some(thrown) = out.strip_prefix('!') {
            tracing::info!(
                ddoc = self.sandbox.ddoc(),
                "reduce function raised exception {thrown}"
            );
            return Ok(Value::Null);
        }
        serde_json::from_str(&out).map_err(|e| JsError::Output(e.to_string()))
    }

    /// Bytes its runtime holds.
    #[cfg(test)]
    pub(crate) fn memory_used(&self) -> i64 {
        self.sandbox.memory_used()
    }
}
