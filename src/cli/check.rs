//! `settee check`: prints [`crate::Replica::check`]'s report; the exit code
//! says whether the replica is consistent. No checking logic lives here.

use super::{open_replica, print_json, CliError, CliResult, Outcome};
use crate::cli::args::CheckArgs;
use std::io::Write;

pub(crate) fn run(args: CheckArgs) -> CliResult {
    let replica = open_replica(&args.dir, args.db.as_deref())?;
    let report = replica.check()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json(
            &mut out,
            &serde_json::to_value(&report).map_err(std::io::Error::from)?,
        )?;
    } else {
        summarize(&mut out, &args, &report)?;
    }
    Ok(if report.is_ok() {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

fn summarize(
    out: &mut impl Write,
    args: &CheckArgs,
    r: &crate::CheckReport,
) -> Result<(), CliError> {
    let verdict = if r.is_ok() { "consistent" } else { "DAMAGED" };
    writeln!(out, "{}: {verdict}", args.dir.display())?;
    writeln!(
        out,
        "  checked {} documents, {} bodies, {} attachments, {} checkpoints",
        r.docs, r.bodies, r.attachments, r.checkpoints
    )?;
    for v in &r.violations {
        writeln!(out, "  {:<11} {}: {}", v.invariant, v.key, v.detail)?;
    }
    Ok(())
}
