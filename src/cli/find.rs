//! `settee find`: a Mango query on a replica. The body is CouchDB's
//! `POST /db/_find` body; `--json` prints CouchDB's response body (or its
//! error body), otherwise a short listing: one line per document, then the
//! bookmark and any warning. `--explain` prints the `_explain` body.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::FindArgs;
use crate::query::{FindRequest, FindResponse, Query, QueryError};
use serde_json::Value;
use std::io::Write;

enum Answer {
    Explain(Value),
    Found(FindResponse),
}

pub(crate) fn run(args: FindArgs) -> CliResult {
    let body: Value = serde_json::from_str(&args.body)
        .map_err(|e| CliError::Usage(format!("the query must be a JSON object: {e}")))?;
    let replica = args.replica.open()?;
    let mut out = std::io::stdout().lock();
    let answer = (|| -> Result<Answer, QueryError> {
        let query = Query::open(&replica)?;
        let req = FindRequest::from_json(body)?;
        if args.explain {
            return query.explain(&req).map(Answer::Explain);
        }
        query.find(&req).map(Answer::Found)
    })();
    let found = match answer {
        Ok(Answer::Explain(plan)) => {
            print_json(&mut out, &plan)?;
            return Ok(Outcome::Ok);
        }
        Ok(Answer::Found(found)) if args.json => {
            print_json(&mut out, &found.to_json())?;
            return Ok(Outcome::Ok);
        }
        Ok(Answer::Found(found)) => found,
        Err(e) => {
            if args.json {
                print_json(&mut out, &e.to_json())?;
            }
            return Err(CliError::Query(e));
        }
    };
    // The listing: documents one per line, then what else came back.
    for doc in &found.docs {
        print_json(&mut out, doc)?;
    }
    writeln!(out, "({} documents)", found.docs.len())?;
    if let Some(b) = &found.bookmark {
        writeln!(out, "bookmark: {b}")?;
    }
    for line in found.warning.iter().flat_map(|w| w.lines()) {
        writeln!(out, "warning: {line}")?;
    }
    Ok(Outcome::Ok)
}
