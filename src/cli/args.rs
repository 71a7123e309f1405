//! The command line as clap sees it: raw flags, validated only for shape.
//! Turning them into library settings happens in the subcommand modules.
//! No `Debug`: URLs and `--password` carry credentials, and nothing here
//! should ever be printable by accident.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// settee: pull a CouchDB database into a local replica and read it offline.
#[derive(Parser)]
#[command(name = "settee", version, about, long_about = None)]
pub struct Cli {
    /// Log filter for diagnostics on stderr (e.g. `info`, `settee=debug`);
    /// RUST_LOG is used when this is not given.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Pull a remote database into a replica directory (incremental, resumable).
    Pull(PullArgs),
    /// Print every document of a replica as one JSON line, sorted by id,
    /// as CouchDB shows it with `?conflicts=true&deleted_conflicts=true`.
    Dump(DumpArgs),
    /// Print one document (or write an attachment's bytes).
    Get(GetArgs),
    /// Show what a replica holds and how its last pull went.
    Status(StatusArgs),
    /// Time cold pulls of a database into throw-away replicas.
    Bench(BenchArgs),
    /// Query a view (`elo`, `getTags`) of a replica, with CouchDB's options.
    Query(QueryArgs),
}

/// `settee pull`.
#[derive(Args)]
pub struct PullArgs {
    /// The database URL, e.g. http://user:pass@127.0.0.1:5984/course.
    pub db_url: String,
    /// The replica directory (created if missing).
    pub dir: PathBuf,
    /// Change rows per batch (one `_changes` page, one `_bulk_get`).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Batches fetched at once.
    #[arg(long, default_value_t = 5)]
    pub batches_limit: usize,
    /// Retries of a failed request (5xx, timeouts, broken connections).
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// User name (overrides the one in the URL).
    #[arg(long)]
    pub user: Option<String>,
    /// Password (overrides the URL's); better passed via SETTEE_PASSWORD.
    #[arg(long, env = "SETTEE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Page cache of the replica store, MiB (1 to 65536).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub cache_mb: u64,
    /// Print the result as JSON (no progress bar).
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `settee dump`.
#[derive(Args)]
pub struct DumpArgs {
    /// The replica directory.
    pub dir: PathBuf,
}

/// `settee get`.
#[derive(Args)]
pub struct GetArgs {
    /// The replica directory.
    pub dir: PathBuf,
    /// The document id.
    pub id: String,
    /// A specific leaf revision instead of the winner.
    #[arg(long)]
    pub rev: Option<String>,
    /// Write this attachment's bytes instead of the document.
    #[arg(long, value_name = "NAME")]
    pub attachment: Option<String>,
    /// With --attachment: write to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Include `_conflicts` and `_deleted_conflicts`.
    #[arg(long)]
    pub conflicts: bool,
}

/// `settee status`.
#[derive(Args)]
pub struct StatusArgs {
    /// The replica directory.
    pub dir: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `settee bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The database URL.
    pub db_url: String,
    /// Cold pulls to run, each into a new temporary replica.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Change rows per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Batches fetched at once.
    #[arg(long, default_value_t = 5)]
    pub batches_limit: usize,
    /// Page cache of the replica store, MiB (1 to 65536).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub cache_mb: u64,
    /// Where the temporary replicas go (default: the system temp directory).
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Print one JSON object per run and a summary object.
    #[arg(long)]
    pub json: bool,
}

/// `settee query`.
#[derive(Args)]
pub struct QueryArgs {
    /// The replica directory.
    pub dir: PathBuf,
    /// The view: `elo` or `getTags`.
    pub view: String,
    /// Only rows with this key (JSON, e.g. '"c-000001"' or 1000).
    #[arg(long, value_name = "JSON")]
    pub key: Option<String>,
    /// Only rows with these keys, in this order (a JSON array).
    #[arg(long, value_name = "JSON_ARRAY")]
    pub keys: Option<String>,
    /// First key of the range (JSON).
    #[arg(long, value_name = "JSON")]
    pub start: Option<String>,
    /// Last key of the range (JSON, inclusive).
    #[arg(long, value_name = "JSON")]
    pub end: Option<String>,
    /// Walk the view backwards (then --start is the high end).
    #[arg(long)]
    pub descending: bool,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip this many rows first.
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Add each row's document.
    #[arg(long)]
    pub include_docs: bool,
    /// Print CouchDB's response shape as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
