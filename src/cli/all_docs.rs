//! `settee all-docs`: turns flags into an [`AllDocsQuery`] (keys are
//! JSON), runs it through the library and prints CouchDB's response body
//! (`--json`) or a table.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::AllDocsArgs;
use crate::query::{AllDocsQuery, AllDocsRow, Query};
use serde_json::Value;
use std::io::Write;

fn json_arg(flag: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| {
        CliError::Usage(format!(
            "--{flag} must be JSON (e.g. '\"card-1\"' or '[\"a\", \"b\"]'): {e}"
        ))
    })
}

fn query(args: &AllDocsArgs) -> Result<AllDocsQuery, CliError> {
    let mut q = AllDocsQuery::default()
        .inclusive_end(args.inclusive_end)
        .descending(args.descending)
        .skip(args.skip)
        .include_docs(args.include_docs)
        .conflicts(args.conflicts)
        .attachments(args.attachments)
        .update_seq(args.update_seq);
    if let Some(k) = &args.keys {
        match json_arg("keys", k)? {
            Value::Array(keys) => q = q.keys(keys),
            _ => return Err(CliError::Usage("--keys must be a JSON array".into())),
        }
    }
    if let Some(k) = &args.key {
        q = q.key(json_arg("key", k)?);
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

pub(crate) fn run(args: AllDocsArgs) -> CliResult {
    let q = query(&args)?;
    let replica = args.replica.open()?;
    let answer = Query::open(&replica)?.all_docs(&q)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json(&mut out, &answer.to_json())?;
        return Ok(Outcome::Ok);
    }
    let cell = |v: &Value| serde_json::to_string(v).unwrap_or_default();
    let id_w = answer
        .rows
        .iter()
        .map(|r| cell(&r.key()).chars().count())
        .chain([2])
        .max()
        .unwrap_or(2)
        .min(40);
    writeln!(out, "{:<id_w$}  rev", "id")?;
    for row in &answer.rows {
        match row {
            AllDocsRow::Doc {
                id,
                rev,
                deleted,
                doc,
            } => {
                let gone = if *deleted { "  (deleted)" } else { "" };
                writeln!(
                    out,
                    "{:<id_w$}  {rev}{gone}",
                    cell(&Value::String(id.clone()))
                )?;
                if let Some(doc) = doc {
                    writeln!(out, "{:<id_w$}  doc: {}", "", cell(doc))?;
                }
            }
            AllDocsRow::NotFound { key } => {
                writeln!(out, "{:<id_w$}  error: not_found", cell(key))?;
            }
        }
    }
    let offset = answer
        .offset
        .map_or_else(|| "null".to_owned(), |o| o.to_string());
    write!(
        out,
        "({} of {} rows, offset {offset}",
        answer.rows.len(),
        answer.total_rows
    )?;
    if let Some(seq) = answer.update_seq {
        let seq = seq.map_or_else(|| "null".to_owned(), |s| s.to_string());
        write!(out, ", update_seq {seq}")?;
    }
    writeln!(out, ")")?;
    Ok(Outcome::Ok)
}
