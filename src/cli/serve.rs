//! `settee serve`: [`crate::serve::serve`] on a replica until Ctrl-C.

use super::{CliError, CliResult, Outcome};
use crate::cli::args::ServeArgs;
use crate::outbox::{Outbox, OutboxConfig, OutboxHandle};
use crate::serve::ServeConfig;
use crate::sync::SyncRoot;
use crate::{Endpoint, Remote, RemoteConfig, Replica, ReplicaConfig};
use std::io::Write;
use std::time::Duration;

pub(crate) async fn run(args: ServeArgs) -> CliResult {
    let databases = match root_databases(&args)? {
        Some(databases) => databases,
        None => {
            let replica = args.replica.open()?;
            let name = match &args.name {
                Some(name) => name.clone(),
                None => match replica.remote()? {
                    Some(bound) => bound.db_name,
                    None => args
                        .replica
                        .db
                        .clone()
                        .or_else(|| {
                            args.replica
                                .dir
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                        })
                        .ok_or_else(|| CliError::Usage("give the database a --name".to_owned()))?,
                },
            };
            vec![(name, replica)]
        }
    };
    let mut config = ServeConfig::builder().bind((args.bind, args.port).into());
    for origin in args.cors_origins {
        config = config.cors_origin(origin);
    }
    if let (Some(user), Some(password)) = (args.user, args.password) {
        config = config.credentials(user, password);
    }
    let config = config.build()?;
    let mut workers = Vec::new();
    if args.push {
        for (_, replica) in &databases {
            workers.push(push_worker(replica, args.remote.as_deref()).await?);
        }
    }
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let names: Vec<String> = databases.iter().map(|(n, _)| n.clone()).collect();
    crate::serve::serve_databases(
        databases,
        config,
        |addr| {
            // A line per database a script can wait for and read the
            // port from.
            let mut out = std::io::stdout().lock();
            for name in &names {
                let _ = writeln!(out, "serving http://{addr}/{name}");
            }
            let _ = out.flush();
        },
        ctrl_c,
    )
    .await?;
    for worker in workers {
        // What is not sent by then stays queued for the next push.
        if let Err(e) = worker.close(Duration::from_secs(10)).await {
            eprintln!(
                "settee: the push worker did not close cleanly ({e}); queued writes stay queued"
            );
        }
    }
    Ok(Outcome::Ok)
}

/// Every database of the sync root DIR (its live replica, under the
/// database's name) when DIR is a sync root and no `--db` picks one;
/// `None` for a replica directory.
fn root_databases(args: &ServeArgs) -> Result<Option<Vec<(String, Replica)>>, CliError> {
    if args.replica.db.is_some() {
        return Ok(None);
    }
    let root = SyncRoot::new(&args.replica.dir);
    let names = match root.databases() {
        Ok(names) if !names.is_empty() => names,
        _ => return Ok(None),
    };
    if args.name.is_some() || args.remote.is_some() {
        return Err(CliError::Usage(
            "a sync root serves each database under its own name, pushing to its own remote: \
             --name and --remote pick one database's (use --db NAME)"
                .to_owned(),
        ));
    }
    let mut databases = Vec::new();
    for name in names {
        // A database whose first sync never finished has no live replica.
        if let Some(dir) = root.current(&name).map_err(crate::Error::from)? {
            let replica = Replica::open_existing(dir, ReplicaConfig::default())?;
            databases.push((name, replica));
        }
    }
    Ok(Some(databases))
}

/// The outbox's push worker on `replica`, to `url` or the remote it was
/// pulled from (credentials from the URL or `SETTEE_PASSWORD`).
async fn push_worker(replica: &Replica, url: Option<&str>) -> Result<OutboxHandle, CliError> {
    let bound = replica.remote()?;
    let url = match (url, &bound) {
        (Some(url), _) => url.to_owned(),
        (None, Some(b)) => b.url.clone(),
        (None, None) => {
            return Err(CliError::Usage(
                "this replica is bound to no remote: give --remote URL".to_owned(),
            ))
        }
    };
    let endpoint =
        Endpoint::parse(&url)?.merge_credentials(None, std::env::var("SETTEE_PASSWORD").ok());
    let remote = Remote::new(endpoint, RemoteConfig::default())?;
    super::push::check_binding(replica, &remote, bound).await?;
    Ok(Outbox::spawn(
        replica.clone(),
        remote,
        OutboxConfig::default(),
    ))
}
