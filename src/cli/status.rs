//! `settee status`: counts, remote and last pull of a replica.

use super::{open_replica, print_json, CliResult, Outcome};
use crate::cli::args::StatusArgs;
use serde_json::{json, Value};

pub(crate) fn run(args: StatusArgs) -> CliResult {
    let replica = open_replica(&args.dir, args.db.as_deref())?;
    let last_pull = replica.last_pull()?;
    let status = json!({
        "path": replica.path().display().to_string(),
        "doc_count": replica.doc_count()?,
        "doc_del_count": replica.deleted_count()?,
        "update_seq": replica.update_seq()?,
        "remote": replica.remote()?,
        "last_pull": last_pull,
        "size_on_disk": replica.size_on_disk()?,
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json(&mut out, &status)?;
        return Ok(Outcome::Ok);
    }
    use std::io::Write;
    let field = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    writeln!(out, "replica        {}", replica.path().display())?;
    writeln!(
        out,
        "documents      {} live, {} deleted",
        status["doc_count"], status["doc_del_count"]
    )?;
    writeln!(out, "local seq      {}", status["update_seq"])?;
    writeln!(
        out,
        "size on disk   {:.1} MiB",
        status["size_on_disk"].as_f64().unwrap_or(0.0) / 1048576.0
    )?;
    match status["remote"].get("url") {
        Some(url) => writeln!(out, "remote         {}", url.as_str().unwrap_or_default())?,
        None => writeln!(out, "remote         (never pulled)")?,
    }
    if let Some(p) = &last_pull {
        writeln!(
            out,
            "last pull      {}",
            describe_time(field(p, "started_at_ms").as_u64().unwrap_or(0))
        )?;
        writeln!(
            out,
            "               {} read, {} written, {} failures, {} ms, last_seq {}",
            field(p, "docs_read"),
            field(p, "docs_written"),
            field(p, "doc_write_failures"),
            field(&field(p, "timings"), "total_ms"),
            field(p, "last_seq")
        )?;
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
