//! Mango selectors: parsed from JSON, normalized as CouchDB 3.4 normalizes
//! them (`mango_selector:normalize`: explicit operators, dotted field
//! paths pushed down through `$and`/`$or`/`$not`/`$nor`, negations pushed
//! to the leaves), and matched against documents with CouchDB's semantics.
//!
//! The rules that surprise (all as in `mango_selector.erl`):
//! - a condition on a missing field is false, except `$exists: false`
//!   (`$ne` and `$nin` need the field too);
//! - `$eq` on an array field compares the whole array; `$in` on an array
//!   field matches when any element equals any argument (and not the
//!   whole array);
//! - comparisons use view collation, except on the top-level `_id`, which
//!   compares in Erlang term order (strings by bytes);
//! - `$all` and the argument lists compare by Erlang's exact equality
//!   (`1` and `1.0` differ), `$mod` needs an integer, `$allMatch` a
//!   non-empty array;
//! - `$regex` runs PCRE in CouchDB; here the `regex` crate, byte-wise
//!   without Unicode classes first (PCRE's default without the `unicode`
//!   flag), which differs for look-around and back-references (refused
//!   here: `bad_arg`), for `$` (PCRE also matches before a final newline)
//!   and possessive quantifiers.
//!
//! This file knows nothing of indexes or the store.

use super::erl;
use crate::query::QueryError;
use crate::views::collate;
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Lte,
    Eq,
    Ne,
    Gte,
    Gt,
}

impl Cmp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cmp::Lt => "$lt",
            Cmp::Lte => "$lte",
            Cmp::Eq => "$eq",
            Cmp::Ne => "$ne",
            Cmp::Gte => "$gte",
            Cmp::Gt => "$gt",
        }
    }

    fn negate(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gte,
            Cmp::Lte => Cmp::Gt,
            Cmp::Eq => Cmp::Ne,
            Cmp::Ne => Cmp::Eq,
            Cmp::Gte => Cmp::Lt,
            Cmp::Gt => Cmp::Lte,
        }
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            Cmp::Lt => o == Ordering::Less,
            Cmp::Lte => o != Ordering::Greater,
            Cmp::Eq => o == Ordering::Equal,
            Cmp::Ne => o != Ordering::Equal,
            Cmp::Gte => o != Ordering::Less,
            Cmp::Gt => o == Ordering::Greater,
        }
    }
}

/// A compiled `$regex`.
#[derive(Debug, Clone)]
pub(crate) struct Regex {
    source: String,
    re: regex::bytes::Regex,
}

impl Regex {
    fn new(source: &str) -> Option<Regex> {
        // PCRE without the `unicode` flag works on bytes with ASCII
        // classes; a pattern that needs Unicode mode (`\p{L}`) gets it.
        let re = regex::bytes::RegexBuilder::new(source)
            .unicode(false)
            .build()
            .or_else(|_| regex::bytes::RegexBuilder::new(source).build())
            .ok()?;
        Some(Regex {
            source: source.to_owned(),
            re,
        })
    }
}

/// A field name split into its path: `a.b` is `["a", "b"]`, `a\.b` is
/// `["a.b"]`; a path with an empty part is CouchDB's `invalid_field_name`,
/// raised only when a document is matched against it (as CouchDB does).
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    path: Option<Vec<String>>,
}

impl Field {
    pub(crate) fn new(name: String) -> Field {
        let path = parse_field(&name);
        Field { name, path }
    }

    /// The parsed path, or CouchDB's error for a name with an empty part.
    pub(crate) fn path(&self) -> Result<&[String], QueryError> {
        self.path
            .as_deref()
            .ok_or_else(|| invalid_field_name(&self.name))
    }
}

pub(crate) fn invalid_field_name(name: &str) -> QueryError {
    QueryError::bad("invalid_field_name", format!("Invalid field name: {name}"))
}

/// `mango_util:parse_field`: split at dots not preceded by a backslash,
/// then drop every backslash.
pub(crate) fn parse_field(name: &str) -> Option<Vec<String>> {
    if !name.contains('\\') {
        let parts: Vec<String> = name.split('.').map(str::to_owned).collect();
        return (!parts.iter().any(String::is_empty)).then_some(parts);
    }
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut prev_backslash = false;
    for c in name.chars() {
        if c == '.' && !prev_backslash {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
        prev_backslash = c == '\\';
    }
    parts.push(cur);
    let parts: Vec<String> = parts.into_iter().map(|p| p.replace('\\', "")).collect();
    // The slow path checks emptiness before removing backslashes.
    (!parts.iter().any(String::is_empty)).then_some(parts)
}

/// A selector, as CouchDB's normalizer leaves it.
#[derive(Debug, Clone)]
pub(crate) enum Selector {
    /// `{}`: matches everything.
    Empty,
    And(Vec<Selector>),
    Or(Vec<Selector>),
    Nor(Vec<Selector>),
    Not(Box<Selector>),
    /// `{field: cond}`; the field is `""` for a condition on the value
    /// itself (inside `$elemMatch` and friends).
    Field(Field, Box<Selector>),
    Cmp(Cmp, Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Type(String),
    Mod(i64, i64),
    Regex(Regex),
    All(Vec<Value>),
    ElemMatch(Box<Selector>),
    AllMatch(Box<Selector>),
    KeyMapMatch(Box<Selector>),
    Size(u64),
    BeginsWith(String),
    /// `$text`, which needs a text index: settee has none, and CouchDB
    /// without one matches every document (`mango_selector:match`).
    Default(Value),
}

fn bad_arg(op: &str, arg: &Value) -> QueryError {
    QueryError::bad(
        "bad_arg",
        format!("Bad argument for operator {op}: {}", erl::w(arg)),
    )
}

fn bad_field(sel: &Selector) -> QueryError {
    QueryError::bad(
        "bad_field",
        format!(
            "Invalid field normalization on selector: {}",
            erl::w(&sel.to_json())
        ),
    )
}

impl Selector {
    /// Parses and normalizes a selector (`mango_selector:normalize`). A
    /// selector that is not an object is `invalid_selector_json`.
    pub(crate) fn parse(v: &Value) -> Result<Selector, QueryError> {
        let Value::Object(m) = v else {
            return Err(QueryError::bad(
                "invalid_selector_json",
                format!("Selector must be a JSON object, not: {}", erl::w(v)),
            ));
        };
        if m.is_empty() {
            return Ok(Selector::Empty);
        }
        let s = norm_ops(v)?;
        let s = norm_fields(s, "")?;
        let s = norm_negations(s)?;
        let top_fields: Vec<&str> = match &s {
            Selector::Field(f, _) => vec![f.name.as_str()],
            _ => Vec::new(),
        };
        if top_fields.contains(&"") {
            return Err(QueryError::bad(
                "invalid_selector",
                "One or more conditions is missing a field name.",
            ));
        }
        Ok(s)
    }

    /// The normalized selector as JSON (what `_explain` shows).
    pub(crate) fn to_json(&self) -> Value {
        let one = |k: &str, v: Value| {
            let mut m = Map::with_capacity(1);
            m.insert(k.to_owned(), v);
            Value::Object(m)
        };
        let list = |v: &[Selector]| Value::Array(v.iter().map(Selector::to_json).collect());
        match self {
            Selector::Empty => Value::Object(Map::new()),
            Selector::And(v) => one("$and", list(v)),
            Selector::Or(v) => one("$or", list(v)),
            Selector::Nor(v) => one("$nor", list(v)),
            Selector::Not(s) => one("$not", s.to_json()),
            Selector::Field(f, c) => one(&f.name, c.to_json()),
            Selector::Cmp(c, v) => one(c.name(), v.clone()),
            Selector::In(v) => one("$in", Value::Array(v.clone())),
            Selector::Nin(v) => one("$nin", Value::Array(v.clone())),
            Selector::Exists(b) => one("$exists", Value::Bool(*b)),
            Selector::Type(t) => one("$type", Value::String(t.clone())),
            Selector::Mod(d, r) => one("$mod", serde_json::json!([d, r])),
            Selector::Regex(r) => one("$regex", Value::String(r.source.clone())),
            Selector::All(v) => one("$all", Value::Array(v.clone())),
            Selector::ElemMatch(s) => one("$elemMatch", s.to_json()),
            Selector::AllMatch(s) => one("$allMatch", s.to_json()),
            Selector::KeyMapMatch(s) => one("$keyMapMatch", s.to_json()),
            Selector::Size(n) => one("$size", Value::from(*n)),
            Selector::BeginsWith(p) => one("$beginsWith", Value::String(p.clone())),
            Selector::Default(v) => one("$default", one("$text", v.clone())),
        }
    }

    /// Whether the document (the whole JSON object, `_id` and `_rev`
    /// included) matches. `Err` only for a field name with an empty part,
    /// met while matching, as CouchDB reports it.
    pub(crate) fn matches(&self, doc: &Value) -> Result<bool, QueryError> {
        match self {
            Selector::Empty => Ok(true),
            _ => self.eval(doc, false),
        }
    }

    /// `mango_selector:match/3`; `raw` compares in Erlang term order (under
    /// the top-level `_id`).
    fn eval(&self, v: &Value, raw: bool) -> Result<bool, QueryError> {
        let cmp = |a: &Value, b: &Value| {
            if raw {
                erlang_cmp(a, b)
            } else {
                collate(a, b)
            }
        };
        Ok(match self {
            // Reached only nested ({"$and": [{}]} is `$eq {}`).
            Selector::Empty => true,
            Selector::And(args) => {
                for a in args {
                    if !a.eval(v, raw)? {
                        return Ok(false);
                    }
                }
                true
            }
            Selector::Or(args) => {
                if args.is_empty() {
                    return Ok(true);
                }
                for a in args {
                    if a.eval(v, raw)? {
                        return Ok(true);
                    }
                }
                false
            }
            // Normalization turns `$nor` into `$and` of negations; kept
            // for completeness.
            Selector::Nor(args) => {
                for a in args {
                    if a.eval(v, raw)? {
                        return Ok(false);
                    }
                }
                true
            }
            Selector::Not(s) => !s.eval(v, raw)?,
            Selector::All(args) => match v {
                Value::Array(values) if !args.is_empty() => {
                    let has = args.iter().all(|a| values.iter().any(|x| erlang_eq(a, x)));
                    // `A == Values`: Erlang's `==`, where `1 == 1.0`.
                    let is = matches!(args.as_slice(), [Value::Array(a)] if a.len() == values.len()
                        && a.iter().zip(values).all(|(p, q)| erlang_cmp(p, q) == Ordering::Equal));
                    has || is
                }
                _ => false,
            },
            Selector::Field(f, cond) if f.name.is_empty() => cond.eval(v, raw)?,
            Selector::ElemMatch(s) => match v {
                Value::Array(values) => {
                    for x in values {
                        // A failing element (a bad path) is no match, as
                        // CouchDB's catch-all.
                        if s.eval(x, raw).unwrap_or(false) {
                            return Ok(true);
                        }
                    }
                    false
                }
                _ => false,
            },
            Selector::AllMatch(s) => match v {
                Value::Array(values) if !values.is_empty() => {
                    values.iter().all(|x| s.eval(x, raw).unwrap_or(false))
                }
                _ => false,
            },
            Selector::KeyMapMatch(s) => match v {
                Value::Object(m) => m
                    .keys()
                    .any(|k| s.eval(&Value::String(k.clone()), raw).unwrap_or(false)),
                _ => false,
            },
            Selector::Cmp(op, arg) => op.holds(cmp(v, arg)),
            Selector::In(args) => match v {
                Value::Array(values) => args
                    .iter()
                    .any(|a| values.iter().any(|x| cmp(x, a) == Ordering::Equal)),
                _ => args.iter().any(|a| cmp(v, a) == Ordering::Equal),
            },
            Selector::Nin(args) => match v {
                Value::Array(values) => !args
                    .iter()
                    .any(|a| values.iter().any(|x| cmp(x, a) == Ordering::Equal)),
                _ => args.iter().all(|a| cmp(v, a) != Ordering::Equal),
            },
            // The field exists (a missing one never gets here).
            Selector::Exists(should) => *should,
            Selector::Type(t) => t == type_name(v),
            Selector::Mod(d, r) => match v {
                Value::Number(n) if !n.is_f64() => {
                    let x = n
                        .as_i64()
                        .map(i128::from)
                        .or_else(|| n.as_u64().map(i128::from));
                    // Erlang's `rem` truncates like Rust's `%`; a zero
                    // divisor raises there, and CouchDB's match fails.
                    match x {
                        Some(x) if *d != 0 => x % i128::from(*d) == i128::from(*r),
                        _ => false,
                    }
                }
                _ => false,
            },
            Selector::BeginsWith(p) => matches!(v, Value::String(s) if s.starts_with(p.as_str())),
            Selector::Regex(re) => matches!(v, Value::String(s) if re.re.is_match(s.as_bytes())),
            Selector::Size(n) => matches!(v, Value::Array(a) if a.len() as u64 == *n),
            Selector::Default(_) => true,
            Selector::Field(f, cond) => {
                let path = f.path()?;
                match get_field(v, path) {
                    Some(sub) => cond.eval(sub, raw || f.name == "_id")?,
                    None => matches!(**cond, Selector::Exists(false)),
                }
            }
        })
    }

    /// `mango_selector:fields`: the field names of the top-level
    /// conditions (through `$and`/`$or`/`$nor`).
    pub(crate) fn fields(&self) -> Vec<String> {
        match self {
            Selector::And(a) | Selector::Or(a) | Selector::Nor(a) => {
                a.iter().flat_map(Selector::fields).collect()
            }
            Selector::Field(f, _) => vec![f.name.clone()],
            _ => Vec::new(),
        }
    }

    /// `mango_selector:has_required_fields`: every one of `required` is
    /// constrained so that a matching document must have it.
    pub(crate) fn has_required_fields(&self, required: &[String]) -> bool {
        if matches!(self, Selector::Empty) {
            return false;
        }
        required_int(std::slice::from_ref(self), required.to_vec()).is_empty()
    }

    /// `mango_selector:is_constant_field`: an `$eq` on `field` at the top
    /// level or in a top-level `$and`.
    pub(crate) fn is_constant_field(&self, field: &str) -> bool {
        match self {
            Selector::Empty => false,
            Selector::And(args) => args.iter().any(|a| a.is_constant_field(field)),
            Selector::Field(f, c) if f.name == field => matches!(**c, Selector::Cmp(Cmp::Eq, _)),
            _ => false,
        }
    }

    /// Whether the selector is a `$text` search (needs a text index).
    pub(crate) fn is_text_search(&self) -> bool {
        match self {
            Selector::Default(_) => true,
            Selector::And(a) | Selector::Or(a) | Selector::Nor(a) => {
                a.iter().any(Selector::is_text_search)
            }
            Selector::Field(_, c) | Selector::Not(c) => c.is_text_search(),
            _ => false,
        }
    }
}

fn required_int(sels: &[Selector], mut remainder: Vec<String>) -> Vec<String> {
    if remainder.is_empty() {
        return remainder;
    }
    let Some((first, rest)) = sels.split_first() else {
        return remainder;
    };
    match first {
        Selector::And(args) if rest.is_empty() => required_int(args, remainder),
        Selector::Or(args) => {
            let mut acc: Vec<String> = args
                .iter()
                .flat_map(|a| required_int(std::slice::from_ref(a), remainder.clone()))
                .collect();
            acc.sort();
            acc.dedup();
            required_int(rest, acc)
        }
        Selector::And(args) => {
            let r = required_int(args, remainder);
            required_int(rest, r)
        }
        Selector::Field(f, c) => {
            if !matches!(**c, Selector::Exists(false)) {
                if let Some(i) = remainder.iter().position(|r| *r == f.name) {
                    remainder.remove(i);
                }
            }
            required_int(rest, remainder)
        }
        // Erlang has no clause for the others at this level (a crash);
        // they constrain nothing.
        _ => required_int(rest, remainder),
    }
}

/// `mango_doc:get_field`: objects by key, arrays by a decimal index.
pub(crate) fn get_field<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for name in path {
        v = match v {
            Value::Object(m) => m.get(name)?,
            Value::Array(a) => {
                let digits = name.strip_prefix('+').unwrap_or(name);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let i: usize = digits.parse().ok()?;
                a.get(i)?
            }
            _ => return None,
        };
    }
    Some(v)
}

/// `mango_json:type`.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Erlang's exact equality (`=:=`) of two decoded JSON values: an integer
/// never equals a float, object members compare in order.
pub(crate) fn erlang_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() != y.is_f64() {
                return false;
            }
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(p), Some(q), _, _) => p == q,
                (_, _, Some(p), Some(q)) => p == q,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| erlang_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((pk, pv), (qk, qv))| pk == qk && erlang_eq(pv, qv))
        }
        _ => a == b,
    }
}

fn erlang_rank(v: &Value) -> u8 {
    // number < atom < tuple < list < binary; atoms alphabetically.
    match v {
        Value::Number(_) => 0,
        Value::Bool(false) => 1,
        Value::Null => 2,
        Value::Bool(true) => 3,
        Value::Object(_) => 4,
        Value::Array(_) => 5,
        Value::String(_) => 6,
    }
}

/// Erlang's term order (`<`, `>`; `1 == 1.0`) of decoded JSON values:
/// `mango_json:cmp_raw`, used for `_id`.
pub(crate) fn erlang_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(p), Some(q)) => p.cmp(&q),
            _ => x
                .as_f64()
                .unwrap_or(0.0)
                .partial_cmp(&y.as_f64().unwrap_or(0.0))
                .unwrap_or(Ordering::Equal),
        },
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = erlang_cmp(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            // {[{K, V}, …]}: a list of 2-tuples.
            for ((pk, pv), (qk, qv)) in x.iter().zip(y) {
                let o = pk
                    .as_bytes()
                    .cmp(qk.as_bytes())
                    .then_with(|| erlang_cmp(pv, qv));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => erlang_rank(a).cmp(&erlang_rank(b)),
    }
}

/// A condition before `norm_fields`: field names still nested.
fn norm_ops(v: &Value) -> Result<Selector, QueryError> {
    let Value::Object(m) = v else {
        return Ok(Selector::Cmp(Cmp::Eq, v.clone()));
    };
    if m.len() > 1 {
        return Ok(Selector::And(
            m.iter()
                .map(|(k, v)| {
                    let mut one = Map::with_capacity(1);
                    one.insert(k.clone(), v.clone());
                    norm_ops(&Value::Object(one))
                })
                .collect::<Result<_, _>>()?,
        ));
    }
    let Some((op, arg)) = m.iter().next() else {
        // `{}` as a condition is a value to compare with.
        return Ok(Selector::Cmp(Cmp::Eq, v.clone()));
    };
    let list = |arg: &Value| -> Result<Vec<Selector>, QueryError> {
        match arg {
            Value::Array(a) => a.iter().map(norm_ops).collect(),
            _ => Err(bad_arg(op, arg)),
        }
    };
    let sub = |arg: &Value| -> Result<Box<Selector>, QueryError> {
        match arg {
            Value::Object(_) => Ok(Box::new(norm_ops(arg)?)),
            _ => Err(bad_arg(op, arg)),
        }
    };
    let values = |arg: &Value| -> Result<Vec<Value>, QueryError> {
        match arg {
            Value::Array(a) => Ok(a.clone()),
            _ => Err(bad_arg(op, arg)),
        }
    };
    Ok(match op.as_str() {
        "$and" => Selector::And(list(arg)?),
        "$or" => Selector::Or(list(arg)?),
        "$nor" => Selector::Nor(list(arg)?),
        "$not" => Selector::Not(sub(arg)?),
        "$in" => Selector::In(values(arg)?),
        "$nin" => Selector::Nin(values(arg)?),
        "$all" => Selector::All(values(arg)?),
        "$exists" => match arg {
            Value::Bool(b) => Selector::Exists(*b),
            _ => return Err(bad_arg(op, arg)),
        },
        "$type" => match arg {
            Value::String(t) => Selector::Type(t.clone()),
            _ => return Err(bad_arg(op, arg)),
        },
        "$mod" => match arg.as_array().map(Vec::as_slice) {
            Some([d, r]) if is_int(d) && is_int(r) => match (d.as_i64(), r.as_i64()) {
                (Some(d), Some(r)) => Selector::Mod(d, r),
                // An integer beyond 64 bits divides nothing settee stores
                // exactly; refused rather than misread.
                _ => return Err(bad_arg(op, arg)),
            },
            _ => return Err(bad_arg(op, arg)),
        },
        "$regex" => match arg {
            Value::String(s) => match Regex::new(s) {
                Some(re) => Selector::Regex(re),
                None => return Err(bad_arg(op, arg)),
            },
            _ => return Err(bad_arg(op, arg)),
        },
        "$elemMatch" => Selector::ElemMatch(sub(arg)?),
        "$allMatch" => Selector::AllMatch(sub(arg)?),
        "$keyMapMatch" => Selector::KeyMapMatch(sub(arg)?),
        "$size" => match arg.as_u64() {
            Some(n) if is_int(arg) => Selector::Size(n),
            _ => return Err(bad_arg(op, arg)),
        },
        "$text" => match arg {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Selector::Default(arg.clone()),
            _ => return Err(bad_arg(op, arg)),
        },
        "$beginsWith" => match arg {
            Value::String(s) => Selector::BeginsWith(s.clone()),
            _ => return Err(bad_arg(op, arg)),
        },
        "$lt" => Selector::Cmp(Cmp::Lt, arg.clone()),
        "$lte" => Selector::Cmp(Cmp::Lte, arg.clone()),
        "$eq" => Selector::Cmp(Cmp::Eq, arg.clone()),
        "$ne" => Selector::Cmp(Cmp::Ne, arg.clone()),
        "$gte" => Selector::Cmp(Cmp::Gte, arg.clone()),
        "$gt" => Selector::Cmp(Cmp::Gt, arg.clone()),
        "$where" | "$geoWithin" | "$geoIntersects" | "$near" | "$nearSphere" => {
            return Err(QueryError::bad(
                "not_supported",
                format!("Unsupported operator: {op}"),
            ))
        }
        o if o.starts_with('$') => {
            return Err(QueryError::bad(
                "invalid_operator",
                format!("Invalid operator: {op}"),
            ))
        }
        _ => Selector::Field(Field::new(op.clone()), Box::new(norm_ops(arg)?)),
    })
}

fn is_int(v: &Value) -> bool {
    matches!(v, Value::Number(n) if !n.is_f64())
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// `norm_fields`: push field names down to the operators.
fn norm_fields(s: Selector, path: &str) -> Result<Selector, QueryError> {
    let at = |cond: Selector| Selector::Field(Field::new(path.to_owned()), Box::new(cond));
    let all = |v: Vec<Selector>| -> Result<Vec<Selector>, QueryError> {
        v.into_iter().map(|a| norm_fields(a, path)).collect()
    };
    Ok(match s {
        Selector::And(v) => Selector::And(all(v)?),
        Selector::Or(v) => Selector::Or(all(v)?),
        Selector::Nor(v) => Selector::Nor(all(v)?),
        Selector::Not(a) => Selector::Not(Box::new(norm_fields(*a, path)?)),
        Selector::ElemMatch(a) => at(Selector::ElemMatch(Box::new(norm_fields(*a, "")?))),
        Selector::AllMatch(a) => at(Selector::AllMatch(Box::new(norm_fields(*a, "")?))),
        Selector::KeyMapMatch(a) => at(Selector::KeyMapMatch(Box::new(norm_fields(*a, "")?))),
        Selector::Default(_) if path.is_empty() => s,
        Selector::Default(_) => return Err(bad_field(&s)),
        Selector::Field(f, cond) => norm_fields(*cond, &join(path, &f.name))?,
        Selector::Empty => at(Selector::Empty),
        other => at(other),
    })
}

fn norm_negations(s: Selector) -> Result<Selector, QueryError> {
    let all = |v: Vec<Selector>, f: fn(Selector) -> Result<Selector, QueryError>| {
        v.into_iter().map(f).collect::<Result<Vec<_>, _>>()
    };
    Ok(match s {
        Selector::Not(a) => negate(*a)?,
        Selector::Nor(v) => Selector::And(all(v, negate)?),
        Selector::And(v) => Selector::And(all(v, norm_negations)?),
        Selector::Or(v) => Selector::Or(all(v, norm_negations)?),
        Selector::ElemMatch(a) => Selector::ElemMatch(Box::new(norm_negations(*a)?)),
        Selector::AllMatch(a) => Selector::AllMatch(Box::new(norm_negations(*a)?)),
        Selector::KeyMapMatch(a) => Selector::KeyMapMatch(Box::new(norm_negations(*a)?)),
        // A field's condition is left as is: CouchDB does not descend.
        other => other,
    })
}

fn negate(s: Selector) -> Result<Selector, QueryError> {
    let all = |v: Vec<Selector>, f: fn(Selector) -> Result<Selector, QueryError>| {
        v.into_iter().map(f).collect::<Result<Vec<_>, _>>()
    };
    Ok(match s {
        Selector::Not(a) => norm_negations(*a)?,
        Selector::Nor(v) => Selector::Or(all(v, norm_negations)?),
        Selector::And(v) => Selector::Or(all(v, negate)?),
        Selector::Or(v) => Selector::And(all(v, negate)?),
        Selector::Default(_) => return Err(bad_arg("$not", &s.to_json())),
        Selector::Cmp(c, v) => Selector::Cmp(c.negate(), v),
        Selector::In(v) => Selector::Nin(v),
        Selector::Nin(v) => Selector::In(v),
        Selector::Exists(b) => Selector::Exists(!b),
        Selector::Field(f, c) => Selector::Field(f, Box::new(negate(*c)?)),
        // `{}` as a negated selector: CouchDB has no clause for it.
        Selector::Empty => return Err(bad_field(&Selector::Not(Box::new(Selector::Empty)))),
        other => Selector::Not(Box::new(other)),
    })
}

#[cfg(test)]
mod tests;
