//! `settee push`: starts a push worker on the replica, drains it with a
//! deadline and reports. Credentials come from the URL, `--user` or
//! `SETTEE_PASSWORD`, and are never stored.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::PushArgs;
use crate::outbox::{Outbox, OutboxConfig, OutboxStatus};
use crate::replica::RemoteBinding;
use crate::{Endpoint, Remote, Replica, ReplicaConfig};
use std::io::Write;
use std::time::Duration;

pub(crate) async fn run(args: PushArgs) -> CliResult {
    let replica = Replica::open_existing(&args.dir, ReplicaConfig::default())?;
    let bound = replica.remote()?;
    let url = match (&args.remote, &bound) {
        (Some(url), _) => url.clone(),
        (None, Some(b)) => b.url.clone(),
        (None, None) => {
            return Err(CliError::Usage(
                "this replica is bound to no remote: give --remote URL".to_owned(),
            ))
        }
    };
    let endpoint = Endpoint::parse(&url)?
        .merge_credentials(args.connect.user.clone(), args.connect.password.clone());
    let remote = Remote::new(endpoint, args.connect.remote_config())?;
    check_binding(&replica, &remote, bound).await?;

    let config = OutboxConfig::default().with_batch_size(args.batch_size);
    let outbox = Outbox::spawn(replica, remote, config);
    let status = tokio::select! {
        s = outbox.close(Duration::from_secs(args.timeout)) => s?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("settee: interrupted; queued writes stay queued");
            return Ok(Outcome::Interrupted);
        }
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json(&mut out, &status_json(&status))?;
    } else {
        summarize(&mut out, &status)?;
    }
    if let Some(error) = &status.paused {
        return Err(CliError::Usage(format!("push paused: {error}")));
    }
    Ok(if status.pending > 0 || status.dead_lettered > 0 {
        Outcome::PartialFailure
    } else {
        Outcome::Ok
    })
}

/// A replica pushes to the database it mirrors; an unbound one is bound to
/// the remote it first pushes to (no credentials stored).
pub(super) async fn check_binding(
    replica: &Replica,
    remote: &Remote,
    bound: Option<RemoteBinding>,
) -> Result<(), CliError> {
    let url = remote.endpoint().to_string();
    match bound {
        Some(b) if b.url == url => Ok(()),
        Some(b) => {
            let server = remote.server_info().await?;
            if b.db_name == remote.endpoint().db_name()
                && b.server_uuid.is_some()
                && b.server_uuid == server.uuid
            {
                Ok(())
            } else {
                Err(CliError::Settee(crate::Error::WrongRemote {
                    path: replica.path().display().to_string(),
                    bound: b.url,
                    requested: url,
                }))
            }
        }
        None => {
            let server = remote.server_info().await?;
            let binding =
                RemoteBinding::new(url, remote.endpoint().db_name().to_owned(), server.uuid);
            replica.set_remote(&binding).await?;
            Ok(())
        }
    }
}

fn status_json(s: &OutboxStatus) -> serde_json::Value {
    serde_json::json!({
        "remote": s.remote,
        "pending": s.pending,
        "revs_pushed": s.revs_pushed,
        "bulk_docs_requests": s.bulk_docs_requests,
        "dead_lettered": s.dead_lettered,
        "dead_letters": s.dead_letters,
        "last_error": s.last_error,
        "paused": s.paused,
    })
}

fn summarize(out: &mut impl Write, s: &OutboxStatus) -> Result<(), CliError> {
    writeln!(out, "pushed to {}", s.remote)?;
    writeln!(out, "  revisions pushed   {}", s.revs_pushed)?;
    writeln!(out, "  _bulk_docs sent    {}", s.bulk_docs_requests)?;
    writeln!(out, "  still queued       {}", s.pending)?;
    writeln!(out, "  dead letters       {}", s.dead_letters.len())?;
    if let Some(e) = &s.last_error {
        writeln!(out, "  last error         {e}")?;
    }
    Ok(())
}
