//! `settee dump`: the replica as JSON lines, for comparing with a server.

use super::{open_replica, print_json, CliResult, Outcome};
use crate::cli::args::DumpArgs;
use std::io::{BufWriter, Write};
use std::ops::Bound;

pub(crate) fn run(args: DumpArgs) -> CliResult {
    let replica = open_replica(&args.dir, args.db.as_deref())?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for info in replica.docs(Bound::Unbounded, Bound::Unbounded) {
        let info = info?;
        if let Some(doc) = replica.get(&info.id)? {
            print_json(&mut out, &doc.to_json_with_conflicts())?;
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}
