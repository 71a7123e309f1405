//! `settee compact`: rewrite a replica into a fresh database
//! ([`crate::maintenance::compact`]) and print what it took, or with `--usage` where the
//! replica's bytes are ([`crate::Replica::disk_usage`]). No storage logic
//! lives here.

use super::{print_json, CliResult, Outcome};
use crate::cli::args::CompactArgs;
use std::io::Write;

const MB: f64 = 1024.0 * 1024.0;

pub(crate) fn run(args: CompactArgs) -> CliResult {
    let dir = args.replica.path()?;
    let mut out = std::io::stdout().lock();
    if args.usage {
        let replica = crate::Replica::open_existing(&dir, crate::ReplicaConfig::default())?;
        let usage = replica.disk_usage()?;
        if args.json {
            print_json(&mut out, &usage)?;
        } else {
            writeln!(
                out,
                "{}: {:.1} MB on disk ({:.1} MB as sled counts it), {:.1} MB of keys and values",
                dir.display(),
                usage.dir_bytes as f64 / MB,
                usage.sled_bytes as f64 / MB,
                usage.live_bytes as f64 / MB
            )?;
            if let Some(base) = usage.baseline_bytes {
                writeln!(out, "  baseline {:.1} MB", base as f64 / MB)?;
            }
            writeln!(
                out,
                "  {:<16} {:>9.1} MB, {:.1} MB of it named by records",
                "bodies.log",
                usage.body_log_bytes as f64 / MB,
                usage.body_log_live_bytes as f64 / MB
            )?;
            for t in &usage.trees {
                writeln!(
                    out,
                    "  {:<16} {:>9} keys {:>10.1} MB",
                    t.name,
                    t.keys,
                    t.bytes as f64 / MB
                )?;
            }
        }
        return Ok(Outcome::Ok);
    }
    let options = crate::maintenance::CompactOptions {
        step_pause: args.step_pause_ms.map(std::time::Duration::from_millis),
        ..Default::default()
    };
    let report = crate::maintenance::compact(&dir, &options)?;
    if args.json {
        print_json(&mut out, &report)?;
    } else {
        writeln!(
            out,
            "compacted {}: {:.1} MB -> {:.1} MB ({} entries, {:.1} MB of keys and values, {:.1} s)",
            dir.display(),
            report.bytes_before as f64 / MB,
            report.bytes_after as f64 / MB,
            report.entries,
            report.live_bytes as f64 / MB,
            report.took.as_secs_f64()
        )?;
    }
    Ok(Outcome::Ok)
}
