//! `settee check`: prints [`crate::Replica::check`]'s report, then that of
//! [`crate::views::check`] (the indexes of the built-in views and of the
//! design documents' views, when the replica has any); the exit code says whether both are consistent. No checking
//! logic lives here.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::CheckArgs;
use std::io::Write;

pub(crate) fn run(args: CheckArgs) -> CliResult {
    let replica = args.replica.open()?;
    let report = replica.check()?;
    // The built-in views and every design document's views: each index
    // is checked against its own map function.
    let mut registered = crate::views::course::views();
    registered.extend(
        crate::query::Query::open(&replica)
            .and_then(|q| q.index_views())
            .map_err(crate::Error::from)?,
    );
    let views = crate::views::check(&replica, &registered).map_err(crate::Error::from)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        // The store's report, its `violations` joined by the views' (same
        // shape), and a `views` summary.
        let mut json = serde_json::to_value(&report).map_err(std::io::Error::from)?;
        let view_json = serde_json::to_value(&views).map_err(std::io::Error::from)?;
        if let (Some(all), Some(more)) = (
            json.get_mut("violations").and_then(|v| v.as_array_mut()),
            view_json.get("violations").and_then(|v| v.as_array()),
        ) {
            all.extend(more.iter().cloned());
        }
        json["views"] = view_json["views"].clone();
        print_json(&mut out, &json)?;
    } else {
        summarize(&mut out, &args, &report, &views)?;
    }
    Ok(if report.is_ok() && views.is_ok() {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

fn summarize(
    out: &mut impl Write,
    args: &CheckArgs,
    r: &crate::maintenance::CheckReport,
    views: &crate::views::ViewCheckReport,
) -> Result<(), CliError> {
    let verdict = if r.is_ok() && views.is_ok() {
        "consistent"
    } else {
        "DAMAGED"
    };
    writeln!(out, "{}: {verdict}", args.replica.dir.display())?;
    writeln!(
        out,
        "  checked {} documents, {} bodies, {} attachments, {} checkpoints",
        r.docs, r.bodies, r.attachments, r.checkpoints
    )?;
    for v in &views.views {
        // A build from nothing part way covers ids up to a point.
        let at = match &v.building {
            Some(b) => format!("built up to id {:?} of sequence {}", b.after, b.upto),
            None => format!("at sequence {}", v.seq),
        };
        writeln!(
            out,
            "  view {}: {} rows {at}, {} documents checked{}, {} changed since or not reached",
            v.name,
            v.rows,
            v.docs_checked,
            if v.mapped { " against the map" } else { "" },
            v.docs_behind
        )?;
    }
    for v in &r.violations {
        writeln!(out, "  {:<11} {}: {}", v.invariant, v.key, v.detail)?;
    }
    for v in &views.violations {
        writeln!(out, "  {:<11} {}: {}", v.invariant, v.key, v.detail)?;
    }
    Ok(())
}
