//! `settee outbox`: the queued writes and the dead letters of a replica;
//! `--retry ID` puts a dead letter back in the queue, `--discard ID` drops it.

use super::{open_replica, print_json, CliResult, Outcome};
use crate::cli::args::OutboxArgs;
use serde_json::json;
use std::io::Write;

/// Queued entries listed in full before the listing is cut short.
const LIST_LIMIT: usize = 1000;

pub(crate) async fn run(args: OutboxArgs) -> CliResult {
    let replica = open_replica(&args.dir, None)?;
    let mut out = std::io::stdout().lock();
    if let Some(key) = args.retry {
        let found = replica.outbox().retry_dead_letter(key)?;
        return done(found, key, "queued again");
    }
    if let Some(key) = args.discard {
        let found = replica.outbox().discard_dead_letter(key)?;
        return done(found, key, "discarded");
    }
    let pending = replica.outbox().len()?;
    let entries = replica.outbox().entries(None, LIST_LIMIT)?;
    let dead = replica.outbox().dead_letters()?;
    let checkpoint = replica.outbox().push_checkpoint()?;
    if args.json {
        let value = json!({
            "pending": pending,
            "entries": entries,
            "dead_letters": dead,
            "push_checkpoint": checkpoint,
        });
        print_json(&mut out, &value)?;
        return Ok(Outcome::Ok);
    }
    writeln!(out, "pending        {pending}")?;
    for e in &entries {
        writeln!(out, "  {:>8}  {}  {}", e.key, e.id, e.rev)?;
    }
    if pending > entries.len() as u64 {
        writeln!(out, "  ... {} more", pending - entries.len() as u64)?;
    }
    writeln!(out, "dead letters   {}", dead.len())?;
    for d in &dead {
        let revs: Vec<String> = d.revs.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "  {:>8}  {}  {}  {}{}: {}",
            d.key,
            d.id,
            revs.join(","),
            d.status.map(|s| format!("HTTP {s} ")).unwrap_or_default(),
            d.error,
            d.reason
        )?;
    }
    if let Some(cp) = checkpoint {
        writeln!(
            out,
            "last push      {} revisions to {} (through entry {})",
            cp.revs_pushed, cp.remote, cp.last_key
        )?;
    }
    Ok(Outcome::Ok)
}

fn done(found: bool, key: u64, what: &str) -> CliResult {
    if found {
        println!("dead letter {key} {what}");
        Ok(Outcome::Ok)
    } else {
        Ok(Outcome::Missing(format!("no dead letter {key}")))
    }
}
