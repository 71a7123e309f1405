//! `settee put` and `settee delete`: one local write each, around
//! [`crate::Replica::put`] (or [`crate::Replica::put_overwrite`] with
//! `--overwrite`) and [`crate::Replica::delete`]; plus the hidden write loop
//! the crash tests kill.

use super::{CliError, CliResult, Outcome};
use crate::cli::args::{DeleteArgs, PutArgs, WriteLoopArgs};
use crate::{LocalWrite, Replica, ReplicaConfig, Rev, StoreError};
use std::io::{Read, Write};

pub(crate) async fn put(args: PutArgs) -> CliResult {
    let text = if args.json == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        args.json.clone()
    };
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("the document is not valid JSON: {e}")))?;
    let replica = Replica::open(&args.dir, ReplicaConfig::default())?;
    if args.overwrite {
        return report(replica.put_overwrite(&args.id, doc).await);
    }
    let named_rev = doc.get("_rev").is_some_and(|r| !r.is_null());
    match report(replica.put(&args.id, doc).await) {
        // Without a `_rev` the document existed: say how to write over it.
        Ok(Outcome::Conflict(what)) if !named_rev => Ok(Outcome::Conflict(format!(
            "{what}, or pass --overwrite to write over it"
        ))),
        other => other,
    }
}

pub(crate) async fn delete(args: DeleteArgs) -> CliResult {
    let rev = match &args.rev {
        Some(r) => Some(
            r.parse::<Rev>()
                .map_err(|e| CliError::Usage(format!("--rev: {e}")))?,
        ),
        None => None,
    };
    let replica = super::open_replica(&args.dir, None)?;
    report(replica.delete(&args.id, rev).await)
}

/// Prints `{"ok":true,"id":..,"rev":..}` like CouchDB; a conflict is exit 5.
fn report(result: Result<LocalWrite, StoreError>) -> CliResult {
    match result {
        Ok(w) => {
            let mut out = std::io::stdout().lock();
            super::print_json(
                &mut out,
                &serde_json::json!({"ok": true, "id": w.id, "rev": w.rev.to_string()}),
            )?;
            Ok(Outcome::Ok)
        }
        Err(e @ StoreError::Conflict { .. }) => Ok(Outcome::Conflict(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn write_loop(args: WriteLoopArgs) -> CliResult {
    let replica = Replica::open(&args.dir, ReplicaConfig::default())?;
    let mut out = std::io::stdout().lock();
    for i in 0..args.count {
        let id = format!("{}{i:05}", args.prefix);
        let w = replica
            .put_blocking(&id, &serde_json::json!({"n": i, "elo": 1200 + i}))
            .map_err(CliError::from)?;
        // Only now is the write durable: the line is the parent's proof.
        writeln!(out, "{} {}", w.id, w.rev)?;
        out.flush()?;
    }
    Ok(Outcome::Ok)
}
