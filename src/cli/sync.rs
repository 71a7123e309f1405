//! `settee sync`: [`crate::SyncService::ensure_synced`] for each `--db`,
//! progress on stderr, each database's final state and figures on stdout;
//! with `--every`, the service's schedule until Ctrl-C.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::SyncArgs;
use crate::sync::{
    Refresh, ScheduleConfig, SyncConfig, SyncRun, SyncService, SyncState, SyncStatus,
};
use crate::PullConfig;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

pub(crate) async fn run(args: SyncArgs) -> CliResult {
    let server = server_url(&args)?;
    let mut pull = PullConfig::builder()
        .batch_size(args.batch_size)
        .batches_limit(args.batches_limit);
    if let Some(mode) = args.retry.mode() {
        pull = pull.retry_mode(mode);
    }
    let config = SyncConfig::default()
        .with_pull(pull.build()?)
        .with_max_concurrent_pulls(args.max_concurrent)
        .with_remote(args.connect.remote_config());
    let service = SyncService::open(&server, &args.root, config)?;

    let progress = (!args.json && !args.quiet).then(|| {
        let service = service.clone();
        let dbs = args.dbs.clone();
        tokio::spawn(show_progress(service, dbs))
    });
    // One Ctrl-C listener for the whole run: a listener made anew in each
    // loop turn misses a signal that arrives between two turns.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let refresh = if args.force {
        Refresh::Force
    } else {
        Refresh::IfNeeded
    };
    let syncs =
        futures::future::join_all(args.dbs.iter().map(|db| service.ensure_synced(db, refresh)));
    let statuses = tokio::select! {
        s = syncs => s,
        _ = &mut ctrl_c => {
            service.shutdown().await;
            eprintln!("settee: interrupted; the batches committed so far are kept, run the same command to resume");
            return Ok(Outcome::Interrupted);
        }
    };
    if let Some(p) = progress {
        p.abort();
    }
    let mut out = std::io::stdout().lock();
    for status in &statuses {
        print_status(&mut out, status, args.json)?;
    }
    out.flush()?;
    drop(out);

    let Some(every) = args.every else {
        return outcome(&statuses);
    };
    let mut schedule = service.schedule(ScheduleConfig::every(every));
    if !args.json {
        eprintln!("settee: syncing again every {every:?} (±10%) until Ctrl-C");
    }
    loop {
        tokio::select! {
            run = schedule.next_run() => {
                let Some(run) = run else { break };
                print_run(&run, args.json)?;
            }
            _ = &mut ctrl_c => {
                schedule.stop().await;
                if !args.json {
                    eprintln!("settee: stopped");
                }
                return Ok(Outcome::Ok);
            }
        }
    }
    Ok(Outcome::Ok)
}

/// The server URL with `--user`/`--password` applied.
fn server_url(args: &SyncArgs) -> Result<String, CliError> {
    let (user, password) = (&args.connect.user, &args.connect.password);
    if user.is_none() && password.is_none() {
        return Ok(args.server_url.clone());
    }
    let mut url = url::Url::parse(args.server_url.trim())
        .map_err(|e| CliError::Usage(format!("invalid server URL: {e}")))?;
    let bad = |_| CliError::Usage("the server URL cannot carry credentials".to_owned());
    if let Some(user) = user {
        url.set_username(user).map_err(bad)?;
    }
    if let Some(pw) = password {
        url.set_password(Some(pw)).map_err(bad)?;
    }
    Ok(url.to_string())
}

/// Prints a database's state on stderr whenever it changes.
async fn show_progress(service: SyncService, dbs: Vec<String>) {
    let mut shown: Vec<Option<(SyncState, Option<u64>)>> = vec![None; dbs.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        for (db, last) in dbs.iter().zip(shown.iter_mut()) {
            let s = service.status(db);
            let now = Some((s.state, s.docs_replicated));
            if *last != now && s.state != SyncState::NotStarted {
                match s.docs_replicated {
                    Some(n) if s.state == SyncState::Syncing => {
                        eprintln!("{db}: {} ({n} docs written)", s.state)
                    }
                    _ => eprintln!("{db}: {}", s.state),
                }
                *last = now;
            }
        }
    }
}

fn print_status(out: &mut impl Write, s: &SyncStatus, as_json: bool) -> Result<(), CliError> {
    let last = s.last.clone().unwrap_or_default();
    if as_json {
        return print_json(
            out,
            &json!({
                "db": s.db,
                "state": s.state,
                "docs_replicated": s.docs_replicated,
                "sync_time_ms": s.sync_time.map(|d| d.as_millis() as u64),
                "view_warm_time_ms": s.view_warm_time.map(|d| d.as_millis() as u64),
                "created": last.created,
                "updated": last.updated,
                "deleted": last.deleted,
                "skipped": last.skipped,
                "rebuilt": last.rebuilt,
                // The readable reason, as this line has always carried it;
                // `failure` has where it came from and CouchDB's status.
                "error": s.error.as_ref().map(|e| e.reason.as_str()),
                "failure": s.error,
            }),
        );
    }
    match s.state {
        SyncState::Ready => {
            write!(
                out,
                "{}: ready, {} docs written ({} created, {} updated, {} deleted, {} skipped) in {} ms",
                s.db,
                s.docs_replicated.unwrap_or(0),
                last.created,
                last.updated,
                last.deleted,
                last.skipped,
                s.sync_time.unwrap_or_default().as_millis(),
            )?;
            if let Some(reason) = &last.rebuilt {
                write!(out, ", rebuilt ({reason:?})")?;
            }
            writeln!(out)?;
        }
        _ => writeln!(
            out,
            "{}: {}{}",
            s.db,
            s.state,
            s.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )?,
    }
    Ok(())
}

fn print_run(run: &SyncRun, as_json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if as_json {
        print_json(
            &mut out,
            &serde_json::to_value(run).map_err(std::io::Error::from)?,
        )?;
    } else {
        writeln!(
            out,
            "run: {} dbs, {} created, {} updated, {} deleted, {} skipped, {} failed in {} ms",
            run.dbs.len(),
            run.created,
            run.updated,
            run.deleted,
            run.skipped,
            run.failed,
            run.duration.as_millis()
        )?;
        for s in run.dbs.iter().filter(|s| s.state == SyncState::Error) {
            writeln!(
                out,
                "  {}: error: {}",
                s.db,
                s.error.as_ref().map_or("", |e| e.reason.as_str())
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Exit code: 2 when a database ended in error, 3 when documents were
/// skipped, else 0 (`disabled` is an answer, not a failure).
fn outcome(statuses: &[SyncStatus]) -> CliResult {
    let failed = statuses
        .iter()
        .filter(|s| s.state == SyncState::Error)
        .count();
    if failed > 0 {
        return Err(CliError::Usage(format!(
            "{failed} of {} databases failed to sync",
            statuses.len()
        )));
    }
    let skipped = statuses
        .iter()
        .any(|s| s.last.as_ref().is_some_and(|r| r.skipped > 0));
    Ok(if skipped {
        Outcome::PartialFailure
    } else {
        Outcome::Ok
    })
}
