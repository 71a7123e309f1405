//! `settee serve`: [`crate::serve::serve`] on a replica until Ctrl-C.

use super::{CliError, CliResult, Outcome};
use crate::cli::args::ServeArgs;
use crate::outbox::{Outbox, OutboxConfig, OutboxHandle};
use crate::serve::ServeConfig;
use crate::{Endpoint, Remote, RemoteConfig, Replica};
use std::io::Write;
use std::time::Duration;

pub(crate) async fn run(args: ServeArgs) -> CliResult {
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
    let mut config = ServeConfig::new(name.clone()).bind((args.bind, args.port).into());
    for origin in args.cors_origins {
        config = config.cors_origin(origin);
    }
    if let (Some(user), Some(password)) = (args.user, args.password) {
        config = config.credentials(user, password);
    }
    let worker = match args.push {
        true => Some(push_worker(&replica, args.remote.as_deref()).await?),
        false => None,
    };
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    crate::serve::serve(
        replica,
        config,
        |addr| {
            // One line a script can wait for and read the port from.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "serving http://{addr}/{name}");
            let _ = out.flush();
        },
        ctrl_c,
    )
    .await?;
    if let Some(worker) = worker {
        // What is not sent by then stays queued for the next push.
        if let Err(e) = worker.close(Duration::from_secs(10)).await {
            eprintln!(
                "settee: the push worker did not close cleanly ({e}); queued writes stay queued"
            );
        }
    }
    Ok(Outcome::Ok)
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
