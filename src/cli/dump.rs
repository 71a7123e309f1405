//! `settee dump`: the replica as JSON lines, for comparing with a server.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::DumpArgs;
use std::io::{BufWriter, Write};

pub(crate) fn run(args: DumpArgs) -> CliResult {
    let replica = args.replica.open()?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    // A document that cannot be read is named on stderr; the others are
    // still printed, and the exit code says the dump is incomplete.
    let mut unreadable = 0u64;
    for info in replica.docs(..) {
        let info = info?;
        match replica.get(&info.id) {
            Ok(Some(doc)) => print_json(&mut out, &doc.to_json_with_conflicts())?,
            Ok(None) => {}
            Err(e) => {
                unreadable += 1;
                eprintln!("settee: {:?}: {e}", info.id);
            }
        }
    }
    out.flush()?;
    if unreadable > 0 {
        return Err(CliError::Usage(format!(
            "{unreadable} document(s) could not be read; `settee check` lists what is damaged"
        )));
    }
    Ok(Outcome::Ok)
}
