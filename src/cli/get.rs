//! `settee get`: one document, one revision or one attachment.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::GetArgs;
use crate::Rev;
use std::io::Write;

pub(crate) fn run(args: GetArgs) -> CliResult {
    let replica = args.replica.open()?;
    let doc = match &args.rev {
        Some(rev) => {
            let rev: Rev = rev
                .parse()
                .map_err(|e: crate::InvalidRev| CliError::Usage(e.to_string()))?;
            replica.get_rev(&args.id, &rev)?
        }
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
    let Some(name) = &args.attachment else {
        let json = if args.conflicts {
            doc.to_json_with_conflicts()
        } else {
            doc.to_json()
        };
        print_json(&mut std::io::stdout().lock(), &json)?;
        return Ok(Outcome::Ok);
    };
    let Some((_, stub)) = doc.attachments().find(|(n, _)| n == name) else {
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
