//! `settee status`: counts, remote and last pull of a replica
//! ([`crate::ReplicaStatus`]).

use super::{print_json, CliResult, Outcome};
use crate::cli::args::StatusArgs;

pub(crate) fn run(args: StatusArgs) -> CliResult {
    let replica = args.replica.open()?;
    let status = crate::replicate::status(&replica)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json(&mut out, &status)?;
        return Ok(Outcome::Ok);
    }
    use std::io::Write;
    writeln!(out, "replica        {}", status.path.display())?;
    writeln!(
        out,
        "documents      {} live, {} deleted",
        status.doc_count, status.doc_del_count
    )?;
    writeln!(out, "local seq      {}", status.update_seq)?;
    writeln!(
        out,
        "size on disk   {:.1} MiB",
        status.size_on_disk as f64 / 1048576.0
    )?;
    match &status.remote {
        Some(remote) => writeln!(out, "remote         {}", remote.url)?,
        None => writeln!(out, "remote         (never pulled)")?,
    }
    if let Some(p) = &status.last_pull {
        writeln!(out, "last pull      {}", describe_time(p.started_at_ms))?;
        writeln!(
            out,
            "               {} read, {} written, {} failures, {} ms, last_seq {}",
            p.docs_read,
            p.docs_written,
            p.doc_write_failures,
            p.timings.total.as_millis(),
            p.last_seq.0
        )?;
        if let Some(filter) = &p.filtered {
            writeln!(out, "filtered       {filter}")?;
        }
    }
    Ok(Outcome::Ok)
}

fn describe_time(ms: u64) -> String {
    let now = crate::replicate::now_ms();
    let ago = now.saturating_sub(ms) / 1000;
    match ago {
        0..=59 => format!("{ago} s ago"),
        60..=3599 => format!("{} min ago", ago / 60),
        3600..=86399 => format!("{} h ago", ago / 3600),
        _ => format!("{} days ago", ago / 86400),
    }
}
