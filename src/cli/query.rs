//! `settee query`: turns flags into [`QueryOptions`] (keys are JSON), runs
//! the query through the library (which brings the view up to date first)
//! and prints CouchDB's response body (`--json`) or a table.
//!
//! A view name is `DDOC/VIEW` or `_design/DDOC/_view/VIEW` (a design
//! document's view, run in its JavaScript), or a bare name: a built-in
//! view (`elo`, `getTags`).

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::QueryArgs;
use crate::query::{Query, ViewResponse};
use crate::views::{course, QueryOptions, Views};
use serde_json::{Map, Value};
use std::io::Write;

fn json_arg(flag: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| {
        CliError::Usage(format!(
            "--{flag} must be JSON (e.g. '\"c-000001\"' or 1000): {e}"
        ))
    })
}

fn options(args: &QueryArgs) -> Result<QueryOptions, CliError> {
    let mut p = Map::new();
    let mut put = |k: &str, v: Value| {
        p.insert(k.to_owned(), v);
    };
    if let Some(k) = &args.key {
        put("key", json_arg("key", k)?);
    }
    if let Some(k) = &args.keys {
        put("keys", json_arg("keys", k)?);
    }
    if let Some(k) = &args.start {
        put("startkey", json_arg("start", k)?);
    }
    if let Some(k) = &args.end {
        put("endkey", json_arg("end", k)?);
    }
    if let Some(l) = args.limit {
        put("limit", Value::from(l));
    }
    if let Some(b) = args.inclusive_end {
        put("inclusive_end", Value::Bool(b));
    }
    if let Some(b) = args.reduce {
        put("reduce", Value::Bool(b));
    }
    if let Some(n) = args.group_level {
        put("group_level", Value::from(n));
    }
    if let Some(u) = &args.update {
        put("update", Value::String(u.clone()));
    }
    for (flag, on) in [
        ("descending", args.descending),
        ("include_docs", args.include_docs),
        ("conflicts", args.conflicts),
        ("group", args.group),
        ("update_seq", args.update_seq),
    ] {
        if on {
            put(flag, Value::Bool(true));
        }
    }
    put("skip", Value::from(args.skip));
    QueryOptions::from_params(&p).map_err(|e| CliError::Usage(e.to_string()))
}

/// `(ddoc, view)` of a design-document view name, `None` for a bare name.
fn split(name: &str) -> Option<(&str, &str)> {
    if let Some(rest) = name.strip_prefix("_design/") {
        let (ddoc, view) = rest.split_once("/_view/")?;
        return Some((ddoc, view));
    }
    name.split_once('/')
}

fn run_query(args: &QueryArgs, q: &QueryOptions) -> Result<ViewResponse, CliError> {
    let replica = args.replica.open()?;
    let query = Query::open(&replica).map_err(crate::Error::from)?;
    match split(&args.view) {
        Some((ddoc, view)) => Ok(query.view(ddoc, view, q).map_err(crate::Error::from)?),
        None => {
            let views = Views::open(&replica, course::views()).map_err(crate::Error::from)?;
            let result = views.query(&args.view, q).map_err(crate::Error::from)?;
            Ok(ViewResponse::Map(result))
        }
    }
}

/// A table column's width: its widest cell, at least `min`, at most 40.
fn width(cells: impl Iterator<Item = String>, min: usize) -> usize {
    cells
        .map(|c| c.chars().count())
        .fold(min, usize::max)
        .min(40)
}

pub(crate) fn run(args: QueryArgs) -> CliResult {
    let q = options(&args)?;
    let response = run_query(&args, &q)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json(&mut out, &response.to_json())?;
        return Ok(Outcome::Ok);
    }
    let cell = |v: &Value| serde_json::to_string(v).unwrap_or_default();
    let result = match response {
        ViewResponse::Map(result) => result,
        ViewResponse::Reduce { rows, .. } => {
            let key_w = width(rows.iter().map(|r| cell(&r.key)), 3);
            writeln!(out, "{:<key_w$}  value", "key")?;
            for row in &rows {
                writeln!(out, "{:<key_w$}  {}", cell(&row.key), cell(&row.value))?;
            }
            writeln!(out, "({} groups)", rows.len())?;
            return Ok(Outcome::Ok);
        }
    };
    let key_w = width(result.rows.iter().map(|r| cell(&r.key)), 3);
    let id_w = width(result.rows.iter().map(|r| r.id.clone()), 2);
    writeln!(out, "{:<key_w$}  {:<id_w$}  value", "key", "id")?;
    for row in &result.rows {
        writeln!(
            out,
            "{:<key_w$}  {:<id_w$}  {}",
            cell(&row.key),
            row.id,
            cell(&row.value)
        )?;
        if let Some(doc) = &row.doc {
            writeln!(out, "{:<key_w$}  {:<id_w$}  doc: {}", "", "", cell(doc))?;
        }
    }
    writeln!(
        out,
        "({} of {} rows, offset {})",
        result.rows.len(),
        result.total_rows,
        result.offset
    )?;
    Ok(Outcome::Ok)
}
