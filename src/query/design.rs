//! The replica's design documents as view definitions: which views there
//! are, their map and reduce functions, and each view's signature, the
//! version its index is built for.
//!
//! A view's signature covers what its rows depend on: the language, its
//! map function, the design document's `views.lib` (what `require` can
//! load) and the options that change what the map sees. So a design
//! document whose code changes rebuilds the views whose rows may change,
//! and only those; a new reduce function or a new sibling view rebuilds
//! nothing (CouchDB hashes a whole design document and rebuilds all of its
//! views). Design-doc views always run their JavaScript: the built-in Rust
//! `elo`/`getTags` views (`crate::views`) stay a typed API of their own and
//! are never substituted for a design document's code, which may differ
//! from the app's in ways a port would miss (`for … in` over a string,
//! number formatting, `Math.random()`).

use super::error::QueryError;
use crate::js::{self, Functions, Limits, Mapped};
use crate::store::{Document, Replica};
use crate::views::{Emitter, RawDocument, View};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use std::sync::Arc;

/// Bumped when the JavaScript layer's output for the same code changes
/// (the prelude, the document given to a map): every index is rebuilt.
const ENGINE: u32 = 1;

/// CouchDB's built-in reduce functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Count,
    Sum,
    Stats,
    ApproxCountDistinct,
}

/// A view's reduce function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reduce {
    Builtin(Builtin),
    /// The index of its source among the design document's reduces.
    Js(usize),
}

/// One view of a design document.
#[derive(Debug, Clone)]
pub(crate) struct DesignView {
    /// Its name in the design document.
    pub(crate) name: String,
    /// Its index's name in the `views` tree.
    pub(crate) index_name: String,
    /// The index of its map source among the design document's maps.
    pub(crate) map: usize,
    pub(crate) reduce: Option<Reduce>,
    /// The version of its index.
    pub(crate) signature: u64,
}

/// A design document with JavaScript views.
#[derive(Debug, Clone)]
pub(crate) struct DesignDoc {
    pub(crate) id: String,
    pub(crate) views: Vec<DesignView>,
    /// Its compiled functions' key in the per-thread cache.
    pub(crate) functions_key: u64,
    code: Arc<Code>,
}

/// What a sandbox for one design document is built from.
#[derive(Debug)]
struct Code {
    ddoc: String,
    lib: Value,
    maps: Vec<String>,
    reduces: Vec<String>,
    limits: Limits,
    design_docs: bool,
}

impl Code {
    /// Its compiled functions' key in the per-thread cache: everything the
    /// sandbox is built from.
    fn functions_key(&self) -> u64 {
        let limits = self.limits;
        digest64(&json!([
            ENGINE,
            self.ddoc,
            self.lib,
            self.maps,
            self.reduces,
            [limits.time.as_nanos() as u64, limits.memory, limits.stack]
        ]))
    }

    fn compile(&self) -> Result<Functions, js::JsError> {
        let maps: Vec<&str> = self.maps.iter().map(String::as_str).collect();
        let reduces: Vec<&str> = self.reduces.iter().map(String::as_str).collect();
        Functions::new(&self.ddoc, &self.lib, &maps, &reduces, self.limits)
    }
}

fn digest64(parts: &Value) -> u64 {
    let mut h = Md5::new();
    h.update(parts.to_string().as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The index name of view `view` of design document `ddoc` (`_design/…`).
pub(crate) fn index_name(ddoc: &str, view: &str) -> String {
    format!("{ddoc}/_view/{view}")
}

impl DesignDoc {
    /// The design document's JavaScript views; `None` when it has none (or
    /// is a Mango index, `"language": "query"`).
    pub(crate) fn parse(doc: &Document, limits: Limits) -> Result<Option<DesignDoc>, QueryError> {
        let language = doc
            .body
            .get("language")
            .and_then(Value::as_str)
            .unwrap_or("javascript");
        if language != "javascript" {
            return Ok(None);
        }
        let Some(views) = doc.body.get("views").and_then(Value::as_object) else {
            return Ok(None);
        };
        let lib = views.get("lib").cloned().unwrap_or(Value::Null);
        let options = doc.body.get("options");
        let design_docs = options
            .and_then(|o| o.get("include_design"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut code = Code {
            ddoc: doc.id.clone(),
            lib,
            maps: Vec::new(),
            reduces: Vec::new(),
            limits,
            design_docs,
        };
        let mut out = Vec::new();
        for (name, def) in views {
            if name == "lib" {
                continue;
            }
            let Some(map) = def.get("map").and_then(Value::as_str) else {
                // CouchDB refuses such a design document on write; one
                // that came anyway has no usable view of that name.
                continue;
            };
            let reduce = match def.get("reduce") {
                None | Some(Value::Null) => None,
                Some(Value::String(src)) => Some(match src.trim() {
                    "_count" => Reduce::Builtin(Builtin::Count),
                    "_sum" => Reduce::Builtin(Builtin::Sum),
                    "_stats" => Reduce::Builtin(Builtin::Stats),
                    "_approx_count_distinct" => Reduce::Builtin(Builtin::ApproxCountDistinct),
                    builtin if builtin.starts_with('_') => {
                        return Err(QueryError::bad(
                            "invalid_design_doc",
                            format!(
                                "{} view {name:?}: unknown built-in reduce function {builtin:?}",
                                doc.id
                            ),
                        ))
                    }
                    _ => {
                        code.reduces.push(src.clone());
                        Reduce::Js(code.reduces.len() - 1)
                    }
                }),
                Some(_) => {
                    return Err(QueryError::bad(
                        "invalid_design_doc",
                        format!("{} view {name:?}: reduce must be a string", doc.id),
                    ))
                }
            };
            code.maps.push(map.to_owned());
            let signature = digest64(&json!([ENGINE, language, map, code.lib, design_docs]));
            out.push(DesignView {
                name: name.clone(),
                index_name: index_name(&doc.id, name),
                map: code.maps.len() - 1,
                reduce,
                signature,
            });
        }
        if out.is_empty() {
            return Ok(None);
        }
        let functions_key = code.functions_key();
        Ok(Some(DesignDoc {
            id: doc.id.clone(),
            views: out,
            functions_key,
            code: Arc::new(code),
        }))
    }

    /// The index-engine view of `view`: its map function in the sandbox.
    pub(crate) fn index_view(&self, view: &DesignView) -> View {
        let code = Arc::clone(&self.code);
        let key = self.functions_key;
        let i = view.map;
        let label = view.index_name.clone();
        let nondeterministic = code.maps[i].contains("Math.random");
        let design_docs = code.design_docs;
        let map = move |doc: &RawDocument<'_>, emit: &mut Emitter| {
            let json = doc_json(doc);
            let revision = format!("{}\u{0}{}", doc.id, doc.rev);
            let mapped = js::with_functions(key, || code.compile(), |f| f.map(i, &revision, &json));
            match mapped {
                Ok(Mapped::Rows(rows)) => {
                    for (k, v) in rows {
                        emit.emit(k, v);
                    }
                }
                Ok(Mapped::Threw(e)) => {
                    // CouchDB logs it and indexes the document with no rows.
                    tracing::info!(view = %label, id = doc.id, "map function raised exception {e}");
                }
                Err(e) => emit.fail(e.couch_error(), e.to_string()),
            }
        };
        let mut v = View::new_raw(view.index_name.clone(), view.signature, map);
        if nondeterministic {
            v = v.nondeterministic();
        }
        if design_docs {
            v = v.including_design_docs();
        }
        v
    }

    /// Runs `f` with this design document's compiled functions (on this
    /// thread's sandbox).
    pub(crate) fn with_functions<R>(
        &self,
        f: impl FnOnce(&Functions) -> Result<R, js::JsError>,
    ) -> Result<R, QueryError> {
        js::with_functions(self.functions_key, || self.code.compile(), f).map_err(|e| {
            QueryError::Script {
                ddoc: self.id.clone(),
                error: e.couch_error().to_owned(),
                status: if matches!(e, js::JsError::Compile(_)) {
                    400
                } else {
                    500
                },
                reason: e.to_string(),
            }
        })
    }

    /// Compiles every function once, so code that does not compile is an
    /// error of the query rather than of each document.
    pub(crate) fn compile_check(&self) -> Result<(), QueryError> {
        self.with_functions(|_| Ok(()))
    }
}

/// Filter function `name` of design document `doc` (its `filters`), for
/// a changes feed (`filter=ddoc/name`): a view whose map emits one row
/// for a document the function passes, given `req` (CouchDB's request
/// object: `query`, `method`, `userCtx`, ...). It sees design documents
/// and tombstones, as CouchDB's filters do; one that throws passes
/// nothing for that document. Run in the same sandbox, with the same
/// limits, as a view's map.
#[cfg(feature = "serve")]
pub(crate) fn filter_view(
    doc: &Document,
    name: &str,
    req: &Value,
    limits: Limits,
) -> Result<View, QueryError> {
    let Some(source) = doc
        .body
        .get("filters")
        .and_then(|f| f.get(name))
        .and_then(Value::as_str)
    else {
        return Err(QueryError::not_found(format!("missing json key: {name}")));
    };
    // The request goes into the source as a JSON literal (JSON is valid
    // JavaScript), sealed like the document.
    let map = format!(
        "function (doc) {{ var __req = __freeze({req}); \
         if ((({source}\n))(doc, __req)) {{ emit(null, null); }} }}"
    );
    let lib = doc
        .body
        .get("views")
        .and_then(|v| v.get("lib"))
        .cloned()
        .unwrap_or(Value::Null);
    let code = Code {
        ddoc: doc.id.clone(),
        lib,
        maps: vec![map],
        reduces: Vec::new(),
        limits,
        design_docs: true,
    };
    // The wrapper is in `maps`: no view's functions share this key.
    let functions_key = code.functions_key();
    let view = DesignView {
        name: name.to_owned(),
        index_name: format!("{}/_filter/{name}", doc.id),
        map: 0,
        reduce: None,
        signature: functions_key,
    };
    let dd = DesignDoc {
        id: doc.id.clone(),
        views: vec![view.clone()],
        functions_key,
        code: Arc::new(code),
    };
    dd.compile_check()?;
    Ok(dd.index_view(&view))
}

/// The document as a map function sees it: `_id`, `_rev`, then the body
/// as stored (attachment stubs included).
fn doc_json(doc: &RawDocument<'_>) -> String {
    let body = String::from_utf8_lossy(doc.body);
    let rest = body
        .trim_start()
        .strip_prefix('{')
        .unwrap_or("}")
        .trim_start();
    let id = Value::String(doc.id.to_owned());
    let mut out = String::with_capacity(body.len() + doc.id.len() + 64);
    out.push_str("{\"_id\":");
    out.push_str(&id.to_string());
    out.push_str(",\"_rev\":\"");
    out.push_str(&doc.rev.to_string());
    out.push('"');
    if !rest.starts_with('}') {
        out.push(',');
    }
    out.push_str(rest);
    out
}

/// The replica's design documents with JavaScript views, in id order.
pub(crate) fn design_docs(replica: &Replica, limits: Limits) -> Result<Vec<DesignDoc>, QueryError> {
    let mut out = Vec::new();
    for doc in replica.documents_with_prefix("_design/") {
        if let Some(d) = DesignDoc::parse(&doc?, limits)? {
            out.push(d);
        }
    }
    Ok(out)
}

/// One design document by id (`_design/…`); 404 as CouchDB words it.
pub(crate) fn design_doc(
    replica: &Replica,
    id: &str,
    limits: Limits,
) -> Result<DesignDoc, QueryError> {
    let doc = live_document(replica, id)?;
    DesignDoc::parse(&doc, limits)?.ok_or_else(|| QueryError::not_found("missing_named_view"))
}

/// Design document `id` as stored; CouchDB's 404 (`missing`, `deleted`)
/// when it is not live.
pub(crate) fn live_document(replica: &Replica, id: &str) -> Result<Document, QueryError> {
    match replica.get(id)? {
        Some(d) if !d.deleted => Ok(d),
        Some(_) => Err(QueryError::not_found("deleted")),
        None => Err(QueryError::not_found("missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revtree::Rev;

    #[test]
    fn a_map_sees_id_and_rev_first_then_the_body() {
        let Ok(rev) = "2-abc".parse::<Rev>() else {
            unreachable!("a valid revision")
        };
        let doc = RawDocument::new("a\"b", &rev, br#"{"n":1,"_attachments":{}}"#);
        assert_eq!(
            doc_json(&doc),
            r#"{"_id":"a\"b","_rev":"2-abc","n":1,"_attachments":{}}"#
        );
        let empty = RawDocument::new("e", &rev, b"{ }");
        assert_eq!(doc_json(&empty), r#"{"_id":"e","_rev":"2-abc"}"#);
    }
}
