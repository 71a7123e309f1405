//! `settee serve`: [`crate::serve::serve`] on a replica until Ctrl-C.

use super::{CliError, CliResult, Outcome};
use crate::cli::args::ServeArgs;
use crate::serve::ServeConfig;
use std::io::Write;

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
    if let (Some(user), Some(password)) = (args.user, args.password) {
        config = config.credentials(user, password);
    }
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
    Ok(Outcome::Ok)
}
