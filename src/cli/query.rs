//! `settee query`: turns flags into [`QueryOptions`] (keys are JSON), runs
//! the query through the library (which brings the view up to date first)
//! and prints CouchDB's response shape (`--json`) or a table.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::QueryArgs;
use crate::views::{QueryOptions, Views};
use serde_json::Value;
use std::io::Write;

fn json_arg(flag: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| {
        CliError::Usage(format!(
            "--{flag} must be JSON (e.g. '\"c-000001\"' or 1000): {e}"
        ))
    })
}

fn options(args: &QueryArgs) -> Result<QueryOptions, CliError> {
    let mut q = QueryOptions::default()
        .descending(args.descending)
        .skip(args.skip)
        .include_docs(args.include_docs);
    if let Some(k) = &args.key {
        q = q.key(json_arg("key", k)?);
    }
    if let Some(k) = &args.keys {
        match json_arg("keys", k)? {
            Value::Array(keys) => q = q.keys(keys),
            _ => return Err(CliError::Usage("--keys must be a JSON array".into())),
        }
    }
    if let Some(k) = &args.start {
        q = q.start_key(json_arg("start", k)?);
    }
    if let Some(k) = &args.end {
        q = q.end_key(json_arg("end", k)?);
    }
    if let Some(l) = args.limit {
        q = q.limit(l);
    }
    Ok(q)
}

pub(crate) fn run(args: QueryArgs) -> CliResult {
    let q = options(&args)?;
    let replica = args.replica.open()?;
    let views = Views::open(&replica).map_err(crate::Error::from)?;
    let result = views.query(&args.view, &q).map_err(crate::Error::from)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json(&mut out, &result.to_json())?;
        return Ok(Outcome::Ok);
    }
    let cell = |v: &Value| serde_json::to_string(v).unwrap_or_default();
    let key_w = result
        .rows
        .iter()
        .map(|r| cell(&r.key).chars().count())
        .chain([3])
        .max()
        .unwrap_or(3)
        .min(40);
    let id_w = result
        .rows
        .iter()
        .map(|r| r.id.chars().count())
        .chain([2])
        .max()
        .unwrap_or(2)
        .min(40);
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
