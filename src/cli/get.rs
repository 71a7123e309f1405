//! `settee get`: one document (with CouchDB's read options, through
//! [`Query::get`]), several leaves (`--open-revs`), or one attachment's
//! bytes.
//!
//! A deleted document prints its tombstone, as `GET /db/{id}?deleted=true`
//! shows it; anything not in the replica exits 1.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::GetArgs;
use crate::query::{GetOptions, OpenRevs, Query, QueryError};
use crate::Rev;
use std::io::Write;

fn parse_rev(text: &str) -> Result<Rev, CliError> {
    text.parse()
        .map_err(|e: crate::revtree::InvalidRev| CliError::Usage(e.to_string()))
}

fn parse_revs(flag: &str, text: &str) -> Result<Vec<Rev>, CliError> {
    let usage = || CliError::Usage(format!("--{flag} must be a JSON array of revisions"));
    let list: Vec<String> = serde_json::from_str(text).map_err(|_| usage())?;
    list.iter().map(|r| parse_rev(r)).collect()
}

fn options(args: &GetArgs) -> Result<GetOptions, CliError> {
    let mut o = GetOptions::default()
        .deleted(true)
        .conflicts(args.conflicts)
        .deleted_conflicts(args.conflicts || args.deleted_conflicts)
        .attachments(args.attachments)
        .revs(args.revs)
        .revs_info(args.revs_info)
        .latest(args.latest)
        .local_seq(args.local_seq);
    if let Some(rev) = &args.rev {
        o = o.rev(parse_rev(rev)?);
    }
    if let Some(since) = &args.atts_since {
        o = o.atts_since(parse_revs("atts-since", since)?);
    }
    match args.open_revs.as_deref() {
        None => {}
        Some("all") => o = o.open_revs(OpenRevs::All),
        Some(list) => {
            let revs = parse_revs("open-revs", list)?;
            if !revs.is_empty() {
                o = o.open_revs(OpenRevs::Revs(revs));
            }
        }
    }
    Ok(o)
}

pub(crate) fn run(args: GetArgs) -> CliResult {
    if args.attachment.is_some() {
        return attachment(args);
    }
    let o = options(&args)?;
    let replica = args.replica.open()?;
    let doc = match Query::open(&replica)?.get(&args.id, &o) {
        Ok(doc) => doc,
        Err(QueryError::NotFound { .. }) => {
            return Ok(Outcome::Missing(match (&args.rev, args.latest) {
                (Some(rev), false) => format!(
                    "no revision {rev} of document {:?} in this replica (only leaves keep bodies)",
                    args.id
                ),
                _ => format!("no document {:?} in this replica", args.id),
            }))
        }
        Err(e) => return Err(e.into()),
    };
    print_json(&mut std::io::stdout().lock(), &doc)?;
    Ok(Outcome::Ok)
}

/// `--attachment NAME`: the bytes of one attachment of the winner (or of
/// `--rev`), streamed to stdout or `--output`.
fn attachment(args: GetArgs) -> CliResult {
    let replica = args.replica.open()?;
    let doc = match &args.rev {
        Some(rev) => replica.get_rev(&args.id, &parse_rev(rev)?)?,
        None => replica.get(&args.id)?,
    };
    let Some(doc) = doc else {
        let what = match &args.rev {
            Some(rev) => format!(
                "no revision {rev} of document {:?} in this replica (only leaves keep bodies)",
                args.id
            ),
            None => format!("no document {:?} in this replica", args.id),
        };
        return Ok(Outcome::Missing(what));
    };
    let name = args.attachment.as_deref().unwrap_or_default();
    let Some((_, stub)) = doc.attachments().find(|(n, _)| *n == name) else {
        return Ok(Outcome::Missing(format!(
            "document {:?} at {} has no attachment {name:?}",
            args.id, doc.rev
        )));
    };
    // Streamed: a large attachment is copied from its file, not read whole.
    let Some(mut bytes) = replica.attachment_reader(&stub.digest)? else {
        return Ok(Outcome::Missing(format!(
            "the bytes of attachment {name:?} ({}) are not in this replica",
            stub.digest
        )));
    };
    match &args.output {
        Some(path) => {
            let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
            std::io::copy(&mut bytes, &mut file)?;
            file.into_inner()
                .map_err(std::io::IntoInnerError::into_error)?
                .sync_all()?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut bytes, &mut out)?;
            out.flush()?;
        }
    }
    Ok(Outcome::Ok)
}
