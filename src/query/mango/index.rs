//! Mango's indexes: the special `_all_docs` index and the `json` indexes
//! defined in design documents with `"language": "query"` (written by
//! `_index` here or pulled from the server), each kept as a view of
//! `crate::views` whose rows are `[field values…] → null`. Also `_index`'s
//! create, list and delete, writing design documents exactly as CouchDB
//! 3.4 writes them (`mango_idx.erl`, `mango_idx_view.erl`), through the
//! replica's local-write path so that they are pushed like any edit.

use super::erl::{self, Term};
use super::request::{self, Dir};
use super::selector::{get_field, parse_field, Selector};
use crate::query::QueryError;
use crate::store::Replica;
use crate::views::View;
use serde_json::{json, Map, Value};

/// One index a query may use.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    /// `_design/…`; `None` for `_all_docs`.
    pub(crate) ddoc: Option<String>,
    pub(crate) name: String,
    /// The indexed fields, in key order, with their declared direction.
    pub(crate) fields: Vec<(String, Dir)>,
    /// The parsed partial filter, if any.
    pub(crate) partial: Option<Selector>,
    /// `def` as `GET /db/_index` shows it.
    pub(crate) def: Value,
    pub(crate) partitioned: bool,
}

impl Index {
    pub(crate) fn all_docs() -> Index {
        Index {
            ddoc: None,
            name: "_all_docs".into(),
            fields: vec![("_id".into(), Dir::Asc)],
            partial: None,
            def: json!({"fields": [{"_id": "asc"}]}),
            partitioned: false,
        }
    }

    pub(crate) fn is_all_docs(&self) -> bool {
        self.ddoc.is_none()
    }

    pub(crate) fn columns(&self) -> Vec<String> {
        self.fields.iter().map(|(f, _)| f.clone()).collect()
    }

    /// The index as `GET /db/_index` and `_explain` show it.
    pub(crate) fn to_json(&self) -> Value {
        match &self.ddoc {
            None => json!({"ddoc": null, "name": self.name, "type": "special", "def": self.def}),
            Some(d) => json!({
                "ddoc": d, "name": self.name, "type": "json",
                "partitioned": self.partitioned, "def": self.def,
            }),
        }
    }

    /// The name of the view that stores it.
    pub(crate) fn view_name(&self) -> String {
        format!("{}/_find/{}", self.ddoc.as_deref().unwrap_or(""), self.name)
    }

    /// The view: one row per live, non-design document that has every
    /// indexed field and matches the partial filter, keyed by the array of
    /// the fields' values (`mango_native_proc:get_index_entries`).
    pub(crate) fn view(&self) -> View {
        let columns: Vec<Vec<String>> = self
            .fields
            .iter()
            .filter_map(|(f, _)| parse_field(f))
            .collect();
        let usable = columns.len() == self.fields.len();
        let partial = self.partial.clone();
        let version = fnv1a(
            format!(
                "mango-json-index/1 {}",
                json!({"fields": self.columns(), "partial": partial.as_ref().map(Selector::to_json)})
            )
            .as_bytes(),
        );
        View::new_raw(self.view_name(), version, move |doc, emit| {
            if !usable {
                return;
            }
            let Ok(body) = doc.fields::<Map<String, Value>>() else {
                return;
            };
            let full = full_doc(doc.id, &doc.rev.to_string(), body);
            if let Some(p) = &partial {
                if !p.matches(&full).unwrap_or(false) {
                    return;
                }
            }
            let mut key = Vec::with_capacity(columns.len());
            for path in &columns {
                match get_field(&full, path) {
                    Some(v) => key.push(v.clone()),
                    None => return,
                }
            }
            emit.emit(Value::Array(key), Value::Null);
        })
    }
}

/// A document as Mango sees it: `_id`, `_rev`, then the body.
pub(crate) fn full_doc(id: &str, rev: &str, body: Map<String, Value>) -> Value {
    let mut m = Map::with_capacity(body.len() + 2);
    m.insert("_id".into(), Value::String(id.to_owned()));
    m.insert("_rev".into(), Value::String(rev.to_owned()));
    m.extend(body);
    Value::Object(m)
}

/// 64-bit FNV-1a: a stable hash for view versions (std's is seeded).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `mango_sort:to_json` of a map's `fields` object: `[{f: dir}, …]`.
fn fields_of_map(fields: &Map<String, Value>) -> (Vec<(String, Dir)>, Value) {
    let list = fields
        .iter()
        .map(|(f, d)| {
            let dir = if d.as_str() == Some("desc") {
                Dir::Desc
            } else {
                Dir::Asc
            };
            (f.clone(), dir)
        })
        .collect();
    let json = Value::Array(
        fields
            .iter()
            .map(|(f, d)| {
                let mut m = Map::with_capacity(1);
                m.insert(f.clone(), d.clone());
                Value::Object(m)
            })
            .collect(),
    );
    (list, json)
}

/// The json indexes of one design document (`mango_idx_view:from_ddoc`);
/// a view that is not a valid index is skipped, as CouchDB logs and skips it.
fn from_ddoc(id: &str, body: &Map<String, Value>) -> Vec<Index> {
    if body.get("language").and_then(Value::as_str) != Some("query") {
        return Vec::new();
    }
    let partitioned = body
        .get("options")
        .and_then(|o| o.get("partitioned"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(Value::Object(views)) = body.get("views") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, view) in views {
        let Some(Value::Object(map)) = view.get("map") else {
            continue;
        };
        if !matches!(view.get("options"), Some(Value::Object(_))) {
            continue;
        }
        let Some(Value::Object(fields)) = map.get("fields") else {
            continue;
        };
        let (fields, fields_json) = fields_of_map(fields);
        // `def_to_json`: fields as a list, an empty partial filter dropped,
        // anything else kept.
        let mut def = Map::new();
        let mut partial = None;
        let mut valid = true;
        for (k, v) in map {
            match k.as_str() {
                "fields" => {
                    def.insert(k.clone(), fields_json.clone());
                }
                "partial_filter_selector" if v.as_object().is_some_and(Map::is_empty) => {}
                "partial_filter_selector" => {
                    match Selector::parse(v) {
                        Ok(s) => partial = Some(s),
                        Err(_) => valid = false,
                    }
                    def.insert(k.clone(), v.clone());
                }
                _ => {
                    def.insert(k.clone(), v.clone());
                }
            }
        }
        if valid {
            out.push(Index {
                ddoc: Some(id.to_owned()),
                name: name.clone(),
                fields,
                partial,
                def: Value::Object(def),
                partitioned,
            });
        }
    }
    out
}

/// Every index of the replica: `_all_docs` first, then the json indexes
/// by design document id and name (`lists:sort` of CouchDB's records).
pub(crate) fn list(replica: &Replica) -> Result<Vec<Index>, QueryError> {
    let mut out = Vec::new();
    for doc in replica.documents_with_prefix("_design/") {
        let doc = doc?;
        out.extend(from_ddoc(&doc.id, &doc.body));
    }
    out.sort_by(|a, b| {
        (a.ddoc.as_deref().map(str::as_bytes), a.name.as_bytes())
            .cmp(&(b.ddoc.as_deref().map(str::as_bytes), b.name.as_bytes()))
    });
    out.insert(0, Index::all_docs());
    Ok(out)
}

/// The views of every json index of the replica's design documents: what
/// the query facade warms after a pull (and compares with the views it
/// holds, to drop stale ones).
#[allow(dead_code)]
pub(crate) fn index_views(replica: &Replica) -> Result<Vec<View>, QueryError> {
    Ok(list(replica)?
        .iter()
        .filter(|i| !i.is_all_docs())
        .map(Index::view)
        .collect())
}

/// `GET /db/_index`.
pub(crate) fn list_json(replica: &Replica) -> Result<Value, QueryError> {
    let all = list(replica)?;
    Ok(json!({
        "total_rows": all.len(),
        "indexes": all.iter().map(Index::to_json).collect::<Vec<_>>(),
    }))
}

fn string_opt(v: Option<Value>) -> Result<Option<String>, QueryError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(QueryError::bad(
            "invalid_empty_string",
            "Index name or ddoc cannot be empty string",
        )),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(QueryError::bad(
            "invalid_string",
            format!("Invalid string: {}", erl::w(&other)),
        )),
    }
}

/// `POST /db/_index`: validates as `mango_opts:validate_idx_create` and
/// `mango_idx_view:validate_new`, then adds the view to its design
/// document (created with `"language": "query"` if needed) unless the
/// same definition is already there. Returns `{result, id, name}`.
///
/// # Durability
/// The design document is written with [`Replica::put_blocking`]: durable
/// and queued for the push when this returns `Ok`.
pub(crate) fn create(replica: &Replica, body: &Value) -> Result<Value, QueryError> {
    let Value::Object(m) = body else {
        return Err(QueryError::bad(
            "bad_request",
            "Request body must be a JSON object",
        ));
    };
    let mut m = m.clone();
    let Some(def) = m.shift_remove("index") else {
        return Err(QueryError::bad(
            "missing_required_key",
            "Missing required key: index",
        ));
    };
    let kind = match m.shift_remove("type") {
        None => "json".to_owned(),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(QueryError::bad(
                "invalid_string",
                format!("Invalid string: {}", erl::w(&other)),
            ))
        }
    };
    let name = string_opt(m.shift_remove("name"))?;
    let ddoc = string_opt(m.shift_remove("ddoc"))?;
    let w = match m.shift_remove("w") {
        None => 2,
        Some(v) => match v.as_i64() {
            Some(w) if w > 0 && !v.is_f64() => w,
            _ => {
                return Err(QueryError::bad(
                    "invalid_pos_integer",
                    format!("{} is not an integer greater than zero", erl::w(&v)),
                ))
            }
        },
    };
    let partitioned = match m.shift_remove("partitioned") {
        None => None,
        Some(Value::Bool(b)) => Some(b),
        Some(other) => {
            return Err(QueryError::bad(
                "unknown_error",
                format!(
                    "Unknown Error: mango_opts :: {{invalid_partitioned_value,{}}}",
                    erl::w(&other)
                ),
            ))
        }
    };
    if let Some(key) = m.keys().next() {
        return Err(QueryError::bad(
            "invalid_key",
            format!("Invalid key {key} for this request."),
        ));
    }
    match kind.as_str() {
        "json" => {}
        "text" | "nouveau" => {
            return Err(QueryError::bad(
                "required index service unavailable",
                kind.clone(),
            ))
        }
        _ => {
            return Err(QueryError::bad(
                "invalid_index",
                format!("Invalid type for index: {kind}"),
            ))
        }
    }
    // The generated names hash the request as CouchDB's `gen_name` does,
    // so the same request names the same design document on both sides.
    let generated = || {
        let name_v = name.clone().map(Value::String);
        let ddoc_v = ddoc.clone().map(Value::String);
        let kind_v = Value::String(kind.clone());
        let opt = |v| match v {
            Some(v) => Term::Json(v),
            None => Term::Atom("auto_name"),
        };
        // `{Def, lists:usort(Opts)}`: the options sorted by tag.
        let term = Term::Tuple(vec![
            Term::Json(&def),
            Term::List(vec![
                Term::Tuple(vec![Term::Atom("ddoc"), opt(ddoc_v.as_ref())]),
                Term::Tuple(vec![Term::Atom("def"), Term::Json(&def)]),
                Term::Tuple(vec![Term::Atom("name"), opt(name_v.as_ref())]),
                Term::Tuple(vec![
                    Term::Atom("partitioned"),
                    Term::Atom(match partitioned {
                        None => "db_default",
                        Some(true) => "true",
                        Some(false) => "false",
                    }),
                ]),
                Term::Tuple(vec![Term::Atom("type"), Term::Json(&kind_v)]),
                Term::Tuple(vec![Term::Atom("w"), Term::Int(w)]),
            ]),
        ]);
        erl::sha1_hex(&erl::term_to_binary(&term))
    };
    let ddoc_id = match &ddoc {
        Some(d) if d.starts_with("_design/") => d.clone(),
        Some(d) => format!("_design/{d}"),
        None => format!("_design/{}", generated()),
    };
    let name = name.clone().unwrap_or_else(generated);
    // `mango_idx_view:validate_new`.
    let Value::Object(def_m) = &def else {
        return Err(QueryError::bad(
            "invalid_index",
            format!("JSON indexes must be an object, not: {}", erl::w(&def)),
        ));
    };
    let mut def_m = def_m.clone();
    let Some(fields) = def_m.shift_remove("fields") else {
        return Err(QueryError::bad(
            "missing_required_key",
            "Missing required key: fields",
        ));
    };
    let fields = request::sort(&fields)?;
    let partial = match def_m.shift_remove("partial_filter_selector") {
        None => Value::Object(Map::new()),
        Some(p) => match Selector::parse(&p)? {
            Selector::Empty => Value::Object(Map::new()),
            s => s.to_json(),
        },
    };
    if let Some(key) = def_m.keys().next() {
        return Err(QueryError::bad(
            "invalid_key",
            format!("Invalid key {key} for this request."),
        ));
    }
    let fields_obj: Map<String, Value> = fields
        .iter()
        .map(|(f, d)| (f.clone(), Value::String(d.name().into())))
        .collect();
    let view = json!({
        "map": {"fields": fields_obj, "partial_filter_selector": partial},
        "reduce": "_count",
        "options": {"def": def},
    });
    // `mango_util:load_ddoc` and `check_lang`.
    let existing = replica.get(&ddoc_id)?.filter(|d| !d.deleted);
    let (rev, mut body) = match existing {
        Some(doc) => {
            match doc.body.get("language") {
                Some(Value::String(l)) if l == "query" => {}
                other => {
                    let shown = match other {
                        None => "false".to_owned(),
                        Some(v) => format!("{{{},{}}}", erl::w(&json!("language")), erl::w(v)),
                    };
                    return Err(QueryError::bad(
                        "invalid_ddoc_lang",
                        format!("Existing design doc has an invalid language: {shown}"),
                    ));
                }
            }
            (Some(doc.rev.to_string()), doc.body)
        }
        None => {
            let mut b = Map::new();
            b.insert("language".into(), json!("query"));
            (None, b)
        }
    };
    let before = body.clone();
    let views = body
        .entry("views")
        .or_insert_with(|| Value::Object(Map::new()));
    if !views.is_object() {
        *views = Value::Object(Map::new());
    }
    if let Value::Object(vs) = views {
        vs.insert(name.clone(), view);
    }
    let result = if rev.is_some() && body == before {
        "exists"
    } else {
        let mut doc = body;
        if let Some(rev) = rev {
            doc.insert("_rev".into(), Value::String(rev));
        }
        replica.put_blocking(&ddoc_id, &Value::Object(doc))?;
        "created"
    };
    Ok(json!({"result": result, "id": ddoc_id, "name": name}))
}

/// `DELETE /db/_index/{ddoc}/json/{name}`: removes the view, and the
/// design document with it when nothing but `"language": "query"` is
/// left. `ddoc` may omit `_design/`.
///
/// # Durability
/// As [`create`].
pub(crate) fn delete(replica: &Replica, ddoc: &str, name: &str) -> Result<Value, QueryError> {
    let ddoc_id = if ddoc.starts_with("_design/") {
        ddoc.to_owned()
    } else {
        format!("_design/{ddoc}")
    };
    let found = list(replica)?
        .into_iter()
        .any(|i| i.ddoc.as_deref() == Some(ddoc_id.as_str()) && i.name == name);
    let doc = replica.get(&ddoc_id)?.filter(|d| !d.deleted);
    let (true, Some(doc)) = (found, doc) else {
        return Err(QueryError::not_found("missing"));
    };
    let mut body = doc.body;
    if let Some(Value::Object(views)) = body.get_mut("views") {
        views.shift_remove(name);
        if views.is_empty() {
            body.shift_remove("views");
        }
    }
    let only_language = body.len() == 1 && body.get("language") == Some(&json!("query"));
    if only_language {
        replica.delete_blocking(&ddoc_id, Some(doc.rev))?;
    } else {
        body.insert("_rev".into(), Value::String(doc.rev.to_string()));
        replica.put_blocking(&ddoc_id, &Value::Object(body))?;
    }
    Ok(json!({"ok": true}))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::ReplicaConfig;

    #[test]
    fn creates_design_documents_as_couchdb_does() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        // Names checked against CouchDB 3.4.3 for the same requests.
        let out = create(&r, &json!({"index": {"fields": ["n"]}})).unwrap();
        assert_eq!(
            out,
            json!({"result": "created", "id": "_design/3d4fdc43057b07474cd610d0ad5761ead92400bf",
                   "name": "3d4fdc43057b07474cd610d0ad5761ead92400bf"})
        );
        let again = create(&r, &json!({"index": {"fields": ["n"]}})).unwrap();
        assert_eq!(again["result"], "exists");
        let named = create(
            &r,
            &json!({"index": {"fields": ["o.r"]}, "type": "json", "name": "or"}),
        )
        .unwrap();
        assert_eq!(
            named["id"],
            "_design/470acdef451afc1e7ae1cd0bd2546fa4af22158c"
        );
        create(
            &r,
            &json!({"index": {"fields": [{"t": "desc"}, {"n": "desc"}],
                    "partial_filter_selector": {"n": {"$gt": 1}}}, "ddoc": "myd", "name": "tn"}),
        )
        .unwrap();
        let ddoc = r.get("_design/myd").unwrap().unwrap().to_json();
        assert_eq!(
            ddoc["views"]["tn"],
            json!({"map": {"fields": {"t": "desc", "n": "desc"}, "partial_filter_selector": {"n": {"$gt": 1}}},
                   "reduce": "_count",
                   "options": {"def": {"fields": [{"t": "desc"}, {"n": "desc"}],
                                       "partial_filter_selector": {"n": {"$gt": 1}}}}})
        );
        assert_eq!(ddoc["language"], "query");
        let listed = list_json(&r).unwrap();
        assert_eq!(listed["total_rows"], 4);
        assert_eq!(listed["indexes"][0]["name"], "_all_docs");
        assert_eq!(
            listed["indexes"][3],
            json!({"ddoc": "_design/myd", "name": "tn", "type": "json", "partitioned": false,
                   "def": {"fields": [{"t": "desc"}, {"n": "desc"}], "partial_filter_selector": {"n": {"$gt": 1}}}})
        );
        assert_eq!(index_views(&r).unwrap().len(), 3);
        assert_eq!(delete(&r, "myd", "tn").unwrap(), json!({"ok": true}));
        assert!(r.get("_design/myd").unwrap().unwrap().deleted);
        assert_eq!(delete(&r, "myd", "tn").unwrap_err().status(), 404);
    }
}
