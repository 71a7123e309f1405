//! The `settee` command: parse flags, call the library, map the outcome to
//! an exit code. No protocol or storage logic lives here.
//!
//! Exit codes, one meaning each across commands: 0 success; 1 the document,
//! revision or attachment asked for is not in the replica; 2 an error
//! (message on stderr); 3 work left over: a pull finished but some documents
//! could not be stored, or a push left writes queued or dead-lettered; 4
//! `settee check` found the replica inconsistent; 5 `put`/`delete` hit a
//! conflict (a stale `_rev`); 130 interrupted (a pull resumes where it
//! stopped when run again).

mod all_docs;
mod args;
mod bench;
mod check;
mod compact;
mod connect;
mod dump;
mod find;
mod get;
mod outbox;
mod pull;
mod push;
mod put;
mod query;
mod serve;
mod status;
mod sync;

pub use args::{Cli, Command};

use clap::Parser;
use std::io::{self, Write};
use std::process::ExitCode;

/// What a subcommand ended with.
pub(crate) enum Outcome {
    Ok,
    Missing(String),
    PartialFailure,
    Interrupted,
    CheckFailed,
    Conflict(String),
}

/// Runs the command line of this process.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("settee: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Pull(args) => pull::run(args).await,
            Command::Dump(args) => dump::run(args),
            Command::Get(args) => get::run(args),
            Command::Status(args) => status::run(args),
            Command::Bench(args) => bench::run(args).await,
            Command::Check(args) => check::run(args),
            Command::Sync(args) => sync::run(args).await,
            Command::Put(args) => put::put(args).await,
            Command::Delete(args) => put::delete(args).await,
            Command::Push(args) => push::run(args).await,
            Command::Outbox(args) => outbox::run(args).await,
            Command::WriteLoop(args) => put::write_loop(args).await,
            Command::Query(args) => query::run(args),
            Command::AllDocs(args) => all_docs::run(args),
            Command::Find(args) => find::run(args),
            Command::Compact(args) => compact::run(args),
            Command::Serve(args) => serve::run(args).await,
        }
    });
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Missing(what)) => {
            eprintln!("settee: {what}");
            ExitCode::from(1)
        }
        Ok(Outcome::PartialFailure) => ExitCode::from(3),
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Ok(Outcome::CheckFailed) => ExitCode::from(4),
        Ok(Outcome::Conflict(what)) => {
            eprintln!("settee: {what}");
            ExitCode::from(5)
        }
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("settee: {e}");
            ExitCode::from(2)
        }
    }
}

/// Errors of the command line: the library's, plus output failures.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Settee(#[from] crate::Error),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Io(io::Error),
    #[error("broken pipe")]
    BrokenPipe,
    #[error("{} ({}): {}", .0.error(), .0.status(), .0.reason())]
    Query(#[from] crate::query::QueryError),
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Io(e)
        }
    }
}

impl From<crate::StoreError> for CliError {
    fn from(e: crate::StoreError) -> Self {
        CliError::Settee(e.into())
    }
}

impl From<crate::RemoteError> for CliError {
    fn from(e: crate::RemoteError) -> Self {
        CliError::Settee(e.into())
    }
}

pub(crate) type CliResult = Result<Outcome, CliError>;

fn init_tracing(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("warn")),
    }
    .unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .try_init();
}

/// Writes one JSON value as a line.
pub(crate) fn print_json(
    out: &mut impl Write,
    value: &impl serde::Serialize,
) -> Result<(), CliError> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// The replica directory `dir`, or with `db` the live replica of that
/// database under the sync root `dir`.
fn replica_path(dir: &std::path::Path, db: Option<&str>) -> Result<std::path::PathBuf, CliError> {
    match db {
        None => Ok(dir.to_path_buf()),
        Some(db) => crate::sync::SyncRoot::new(dir)
            .current(db)
            .map_err(crate::Error::from)?
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "no replica of database {db:?} under the sync root {}; run `settee sync` first",
                    dir.display()
                ))
            }),
    }
}

/// Opens the replica directory `dir`, or with `db` the live replica of
/// that database under the sync root `dir`.
fn open_replica(dir: &std::path::Path, db: Option<&str>) -> Result<crate::Replica, CliError> {
    Ok(crate::Replica::open_existing(
        replica_path(dir, db)?,
        crate::ReplicaConfig::default(),
    )?)
}

impl args::ReplicaLocation {
    /// The replica's directory (see [`replica_path`]).
    fn path(&self) -> Result<std::path::PathBuf, CliError> {
        replica_path(&self.dir, self.db.as_deref())
    }

    /// Opens the replica it names (see [`open_replica`]).
    fn open(&self) -> Result<crate::Replica, CliError> {
        open_replica(&self.dir, self.db.as_deref())
    }
}
