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
    /// Check a replica's integrity (docs/design.md's invariants); exit 0
    /// when it holds, 4 with the list of violations otherwise.
    Check(CheckArgs),
    /// Sync databases of a server into replicas under a sync root (the
    /// sync gate, recreation detection and rebuilds of the sync service).
    Sync(SyncArgs),
    /// Write a document locally (queued for the next push).
    Put(PutArgs),
    /// Delete a document locally (queued for the next push).
    Delete(DeleteArgs),
    /// Push the queued local writes now and report.
    Push(PushArgs),
    /// List queued writes and dead letters; retry or discard a dead letter.
    Outbox(OutboxArgs),
    /// Query a view of a replica (a design document's, or the built-in `elo`, `getTags`) with CouchDB's options.
    Query(QueryArgs),
    /// List documents by id (CouchDB's `_all_docs`, with its options).
    AllDocs(AllDocsArgs),
    /// Run a Mango query (the JSON body of `POST /db/_find`) on a replica.
    Find(FindArgs),
    /// Rewrite a replica into a fresh database and swap it in (crash-safe),
    /// reclaiming the space old page versions take; or, with --usage, show
    /// where its bytes are.
    Compact(CompactArgs),
    /// Serve a replica as a local CouchDB endpoint (loopback by default)
    /// until Ctrl-C: reads, replication from it, local writes. Given a
    /// sync root (without --db), serves every database under it.
    Serve(ServeArgs),
    /// Test support: write COUNT new documents, printing `ID REV` after
    /// each one is durable (the crash tests kill it at random).
    #[command(name = "__write-loop", hide = true)]
    WriteLoop(WriteLoopArgs),
}

/// Where a reading command finds its replica: a replica directory, or with
/// `--db` the live replica of that database under a sync root (shared by
/// `dump`, `get`, `status`, `check`, `query` and `compact`).
#[derive(Args)]
pub struct ReplicaLocation {
    /// The replica directory (with --db: a sync root).
    pub dir: PathBuf,
    /// Use this database's replica under the sync root DIR.
    #[arg(long = "db", value_name = "NAME")]
    pub db: Option<String>,
}

/// `settee serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub replica: ReplicaLocation,
    /// The address to listen on; anything but loopback needs --user and
    /// --password.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// The port (0: any free one, printed when listening).
    #[arg(long, default_value_t = 5984)]
    pub port: u16,
    /// The database name clients use (default: the remote database's name,
    /// else the directory's).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Require Basic auth with this user name.
    #[arg(long, requires = "password")]
    pub user: Option<String>,
    /// Let browser pages of this origin call the endpoint (CORS; repeat
    /// for several). None by default.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Push the writes clients make (and any queued before) to the
    /// remote while serving, as `settee push` does.
    #[arg(long)]
    pub push: bool,
    /// With --push: the database URL (default: the remote the replica was
    /// pulled from); credentials in the URL or SETTEE_PASSWORD.
    #[arg(long, value_name = "URL", requires = "push")]
    pub remote: Option<String>,
    /// Require Basic auth with this password (or SETTEE_SERVE_PASSWORD).
    #[arg(
        long,
        env = "SETTEE_SERVE_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<String>,
}

/// `settee compact`.
#[derive(Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub replica: ReplicaLocation,
    /// Only report the size on disk and the keys and bytes of every tree.
    #[arg(long)]
    pub usage: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Test support: pause this long between the steps of the swap.
    #[arg(long, hide = true, value_name = "MS")]
    pub step_pause_ms: Option<u64>,
}

/// `settee put`.
#[derive(Args)]
pub struct PutArgs {
    /// The replica directory (created if missing).
    pub dir: PathBuf,
    /// The document id.
    pub id: String,
    /// The document as JSON, or `-` to read it from stdin. A `_rev` names
    /// the revision it edits; without one it creates the document, and a
    /// document that exists (not deleted) is a conflict (exit 5), as
    /// CouchDB answers 409.
    pub json: String,
    /// Write over the document's current winner, whatever it is, instead of
    /// editing a named `_rev` (any `_rev` in the JSON is ignored).
    #[arg(long)]
    pub overwrite: bool,
}

/// `settee delete`.
#[derive(Args)]
pub struct DeleteArgs {
    /// The replica directory.
    pub dir: PathBuf,
    /// The document id.
    pub id: String,
    /// The revision to delete (default: the current winner).
    #[arg(long)]
    pub rev: Option<String>,
}

/// `settee push`.
#[derive(Args)]
pub struct PushArgs {
    /// The replica directory.
    pub dir: PathBuf,
    /// The database URL (default: the remote the replica was pulled from).
    #[arg(long)]
    pub remote: Option<String>,
    /// How to reach and authenticate to the server.
    #[command(flatten)]
    pub connect: RemoteArgs,
    /// Give up waiting after this many seconds (what is left stays queued).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Documents per `_bulk_docs` request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `settee outbox`.
#[derive(Args)]
pub struct OutboxArgs {
    /// The replica directory.
    pub dir: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    /// Put this dead letter back in the queue.
    #[arg(long, value_name = "ID", conflicts_with = "discard")]
    pub retry: Option<u64>,
    /// Drop this dead letter for good.
    #[arg(long, value_name = "ID")]
    pub discard: Option<u64>,
}

/// `settee __write-loop` (hidden).
#[derive(Args)]
pub struct WriteLoopArgs {
    /// The replica directory.
    pub dir: PathBuf,
    /// Documents to write.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Id prefix.
    #[arg(long, default_value = "doc-")]
    pub prefix: String,
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
    /// How to read the changes feed: `streamed` (one request, the
    /// default) or `paged` (one request per batch, for servers or proxies
    /// that cut long answers).
    #[arg(long, value_enum, default_value_t = FeedArg::Streamed)]
    pub feed: FeedArg,
    /// How to reach and authenticate to the server.
    #[command(flatten)]
    pub connect: RemoteArgs,
    /// Whether to keep going across outages.
    #[command(flatten)]
    pub retry: RetryModeArgs,
    /// Which documents, revisions and deletions to take.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The same database on another node of the cluster, tried when the
    /// one in use fails (repeat for several; same credentials).
    #[arg(long = "node", value_name = "URL")]
    pub nodes: Vec<String>,
    /// Keep going after the end of the feed, taking changes as they happen
    /// (long polls), until Ctrl-C; outages are waited out.
    #[arg(long)]
    pub live: bool,
    /// With --live: how often the server shows it is alive (1s to 10m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, requires = "live")]
    pub heartbeat: std::time::Duration,
    /// Page cache of the replica store, MiB (1 to 65536).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub cache_mb: u64,
    /// Print the result as JSON (no progress bar).
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// After a completed pull, compact the replica (`settee compact`) when
    /// its size on disk is above FACTOR times its size after the last
    /// compaction or first pull; 0 turns it off.
    #[arg(long, value_name = "FACTOR", default_value_t = crate::maintenance::DEFAULT_COMPACT_ABOVE)]
    pub compact_above: f64,
}

/// `settee dump`.
#[derive(Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub replica: ReplicaLocation,
}

/// `settee get`.
#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub replica: ReplicaLocation,
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
    /// Include `_deleted_conflicts` (without `_conflicts`).
    #[arg(long)]
    pub deleted_conflicts: bool,
    /// Attachments inline (base64 `data`) instead of stubs.
    #[arg(long, conflicts_with = "attachment")]
    pub attachments: bool,
    /// Inline only attachments changed since these revisions (a JSON array).
    #[arg(long, value_name = "JSON_ARRAY", conflicts_with = "attachment")]
    pub atts_since: Option<String>,
    /// Include `_revisions`, the revision's history.
    #[arg(long)]
    pub revs: bool,
    /// Include `_revs_info` (non-leaf revisions are `missing`: a replica
    /// keeps leaf bodies only, like a compacted CouchDB).
    #[arg(long)]
    pub revs_info: bool,
    /// Print several leaves as CouchDB's `open_revs` array: `all`, or a
    /// JSON array of revisions.
    #[arg(long, value_name = "all|JSON_ARRAY", conflicts_with_all = ["rev", "attachment"])]
    pub open_revs: Option<String>,
    /// With --open-revs: the leaves that descend from the revisions given;
    /// with --rev: the winner (as CouchDB 3.4 answers `rev` with `latest`).
    #[arg(long)]
    pub latest: bool,
    /// Include `_local_seq`, the replica's sequence of the last change.
    #[arg(long)]
    pub local_seq: bool,
}

/// `settee all-docs`.
#[derive(Args)]
pub struct AllDocsArgs {
    #[command(flatten)]
    pub replica: ReplicaLocation,
    /// Only these ids, in this order (a JSON array; missing ones are
    /// `not_found` rows, deleted ones are listed as deleted).
    #[arg(long, value_name = "JSON_ARRAY")]
    pub keys: Option<String>,
    /// Only this id (JSON, e.g. '"card-1"').
    #[arg(long, value_name = "JSON")]
    pub key: Option<String>,
    /// First id of the range (JSON, e.g. '"TAG-"').
    #[arg(long, value_name = "JSON")]
    pub start: Option<String>,
    /// Last id of the range (JSON, e.g. '"TAG-\ufff0"').
    #[arg(long, value_name = "JSON")]
    pub end: Option<String>,
    /// Whether the last id itself is in the range.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub inclusive_end: bool,
    /// Highest id first (then --start is the high end).
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
    /// With --include-docs: `_conflicts` in each document.
    #[arg(long)]
    pub conflicts: bool,
    /// With --include-docs: attachments inline.
    #[arg(long)]
    pub attachments: bool,
    /// Add the replica's local sequence (`update_seq`).
    #[arg(long)]
    pub update_seq: bool,
    /// Print exactly CouchDB's response body instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `settee find`.
#[derive(Args)]
pub struct FindArgs {
    #[command(flatten)]
    pub replica: ReplicaLocation,
    /// The body of `POST /db/_find`, e.g. '{"selector": {"docType": "CARD"}, "limit": 10}'.
    pub body: String,
    /// Print exactly CouchDB's response body (errors too, as `{"error", "reason"}`).
    #[arg(long)]
    pub json: bool,
    /// Print the plan (`POST /db/_explain`) instead of running the query.
    #[arg(long)]
    pub explain: bool,
}

/// `settee status`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub replica: ReplicaLocation,
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
    /// How to read the changes feed: `streamed` (one request, the
    /// default) or `paged` (one request per batch, for servers or proxies
    /// that cut long answers).
    #[arg(long, value_enum, default_value_t = FeedArg::Streamed)]
    pub feed: FeedArg,
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

/// `settee check`.
#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub replica: ReplicaLocation,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `settee sync`.
#[derive(Args)]
pub struct SyncArgs {
    /// The server URL, e.g. http://user:pass@127.0.0.1:5984 (no database).
    pub server_url: String,
    /// The sync root: one replica directory per database below it.
    pub root: PathBuf,
    /// A database to sync (repeat for several).
    #[arg(long = "db", value_name = "NAME", required = true)]
    pub dbs: Vec<String>,
    /// Skip the sync gate (the remote's CourseConfig.localSync.enabled).
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object per database (and per scheduled run), no progress.
    #[arg(long)]
    pub json: bool,
    /// Keep running, syncing again at this interval (e.g. 6h, 30m, 90s)
    /// with 10% jitter, until Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<std::time::Duration>,
    /// Change rows per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Batches fetched at once.
    #[arg(long, default_value_t = 5)]
    pub batches_limit: usize,
    /// Databases pulling at the same time.
    #[arg(long, default_value_t = 4)]
    pub max_concurrent: usize,
    /// How to reach and authenticate to the server.
    #[command(flatten)]
    pub connect: RemoteArgs,
    /// Whether each database's pull keeps going across outages.
    #[command(flatten)]
    pub retry: RetryModeArgs,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// How `pull`, `push` and `sync` reach and authenticate to the server:
/// one set of flags for the three (`cli/connect.rs` turns it into a
/// `RemoteConfig`). The defaults are `RemoteConfig`'s.
#[derive(Args)]
pub struct RemoteArgs {
    /// User name (overrides the one in the URL).
    #[arg(long)]
    pub user: Option<String>,
    /// Password (overrides the URL's); better passed via SETTEE_PASSWORD.
    #[arg(long, env = "SETTEE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Log in with a CouchDB cookie session (`POST /_session` with the user
    /// name and password, renewed on expiry) instead of sending them with
    /// every request.
    #[arg(long, conflicts_with = "token")]
    pub session: bool,
    /// A bearer token (JWT) sent instead of the user name and password;
    /// better passed via SETTEE_TOKEN.
    #[arg(long, env = "SETTEE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Retries of a failed request (5xx, 408, 429, timeouts, broken
    /// connections), with backoff from 0.25 s. (A push's `_bulk_docs` is
    /// retried by the push worker until --timeout instead.)
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Longest wait for a connection, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// Longest wait for a whole JSON answer, seconds (attachment bodies,
    /// streamed, are bounded by --read-timeout instead).
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Longest wait between two reads of an answer, seconds; 0: none.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub read_timeout: u64,
    /// Largest JSON answer read, MiB (a `_bulk_get`, a `_changes` page); a
    /// pull asks for less where it can.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_response_mib: u64,
    /// Largest attachment pulled, MiB (streamed to disk); 0: no limit.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub max_attachment_mib: u64,
}

/// A filtered pull (see `settee::replicate::Filter`): the server sends only
/// what passes; the replica's checkpoint is kept apart per filter.
#[derive(Args)]
pub struct FilterArgs {
    /// Only this document (repeat for several): CouchDB's `_doc_ids` filter.
    #[arg(long = "doc-id", value_name = "ID", conflicts_with_all = ["selector", "filter"])]
    pub doc_ids: Vec<String>,
    /// Only documents whose winning revision matches this Mango selector
    /// (JSON): CouchDB's `_selector` filter.
    #[arg(long, value_name = "JSON", conflicts_with = "filter")]
    pub selector: Option<String>,
    /// Only documents a design document's filter function passes:
    /// `DDOC/NAME` for `_design/DDOC`'s `filters.NAME`.
    #[arg(long, value_name = "DDOC/NAME")]
    pub filter: Option<String>,
    /// A query parameter for the filter function (repeat for several).
    #[arg(long = "filter-param", value_name = "KEY=VALUE", requires = "filter")]
    pub filter_params: Vec<String>,
    /// Only each document's winning revision: no conflict branches.
    #[arg(long)]
    pub winning_revs_only: bool,
    /// Skip deletions of documents the replica never held (a cold start
    /// takes the server's live documents only).
    #[arg(long)]
    pub skip_tombstones: bool,
}

/// Retry mode, for the commands that pull.
#[derive(Args)]
pub struct RetryModeArgs {
    /// Retry mode: when a request's retries run out, pause and start over
    /// from the last checkpoint instead of failing (like PouchDB's
    /// `retry: true`); Ctrl-C ends it.
    #[arg(long)]
    pub retry: bool,
    /// In retry mode, give up after this many failed attempts (default:
    /// never).
    #[arg(long, requires = "retry")]
    pub retry_attempts: Option<u32>,
}

/// `90s`, `30m`, `6h`, `1d`, `500ms`: a positive duration.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit: write e.g. 90s, 30m, 6h or 1d"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" | "min" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m, h or d")),
    };
    if ms == 0 {
        return Err("the interval must be more than zero".to_owned());
    }
    Ok(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("6h"),
            Ok(std::time::Duration::from_secs(21600))
        );
        assert_eq!(
            parse_duration("90s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert!(parse_duration("6").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5y").is_err());
    }
}

/// `settee query`.
#[derive(Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub replica: ReplicaLocation,
    /// The view: a design document's, as `DDOC/VIEW` or
    /// `_design/DDOC/_view/VIEW` (e.g. `elo/elo`), or a built-in (`elo`,
    /// `getTags`).
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
    /// With --include-docs: add each document's `_conflicts`.
    #[arg(long)]
    pub conflicts: bool,
    /// Whether rows equal to --end are included.
    #[arg(long, value_name = "BOOL")]
    pub inclusive_end: Option<bool>,
    /// Reduce (default: when the view has a reduce function).
    #[arg(long, value_name = "BOOL")]
    pub reduce: Option<bool>,
    /// Group reduced rows by key.
    #[arg(long)]
    pub group: bool,
    /// Group reduced rows by the first N elements of array keys.
    #[arg(long, value_name = "N")]
    pub group_level: Option<usize>,
    /// Answer from the index as it is (`false`), or then update it (`lazy`).
    #[arg(long, value_name = "true|false|lazy")]
    pub update: Option<String>,
    /// Add the local sequence the index covers.
    #[arg(long)]
    pub update_seq: bool,
    /// Print CouchDB's response body as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--feed`: how a pull reads the changes feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FeedArg {
    /// One streamed request.
    Streamed,
    /// One request per batch.
    Paged,
}

impl From<FeedArg> for crate::replicate::Feed {
    fn from(arg: FeedArg) -> Self {
        match arg {
            FeedArg::Streamed => crate::replicate::Feed::Streamed,
            FeedArg::Paged => crate::replicate::Feed::Paged,
        }
    }
}
