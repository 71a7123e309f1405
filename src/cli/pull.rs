//! `settee pull`: a progress bar and a summary around [`crate::pull`] with its progress option.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::{FilterArgs, PullArgs};
use crate::replicate::PullState;
use crate::{Endpoint, PullConfig, PullResult, Remote, Replica, ReplicaConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};

pub(crate) async fn run(args: PullArgs) -> CliResult {
    let endpoint = Endpoint::parse(&args.db_url)?
        .merge_credentials(args.connect.user.clone(), args.connect.password.clone());
    let mut builder = PullConfig::builder()
        .batch_size(args.batch_size)
        .batches_limit(args.batches_limit)
        .feed(args.feed.into());
    if let Some(mode) = args.retry.mode() {
        builder = builder.retry_mode(mode);
    }
    if args.live {
        builder = builder.live(args.heartbeat);
    }
    let config = with_filter(builder, &args.filter)?.build()?;
    let remote = Remote::new(endpoint, args.connect.remote_config())?;
    let nodes = args
        .nodes
        .iter()
        .map(|url| {
            let endpoint = Endpoint::parse(url)?
                .merge_credentials(args.connect.user.clone(), args.connect.password.clone());
            Ok(Remote::new(endpoint, args.connect.remote_config())?)
        })
        .collect::<Result<Vec<_>, crate::Error>>()?;
    let fresh = Fresh::before_open(&args.dir);
    let replica = Replica::open(
        &args.dir,
        ReplicaConfig::default().with_cache_capacity(args.cache_mb * 1024 * 1024),
    )?;

    let show_bar = !args.json && !args.quiet && std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        None,
        if show_bar {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} docs  {per_sec}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("pulling {}", remote.endpoint()));
    // Ctrl-C stops the pull at a batch boundary; the pull returns once
    // none of its tasks holds the replica any more.
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let result = crate::pull(&replica, &remote, &config)
        .on_progress(|p| {
            bar.set_length(p.remote_doc_count.max(p.docs_written));
            bar.set_position(p.docs_written);
            match &p.state {
                PullState::Paused {
                    error,
                    attempt,
                    retry_in,
                } => {
                    let msg = format!(
                        "paused after attempt {attempt}: {error}; retrying in {:.1} s",
                        retry_in.as_secs_f64()
                    );
                    if show_bar {
                        bar.set_message(msg);
                    } else if !args.quiet {
                        eprintln!("settee: {msg}");
                    }
                }
                _ => bar.set_message(format!("pulling {}", remote.endpoint())),
            }
        })
        .until(ctrl_c)
        .failover(&nodes)
        .await;
    let result = match result {
        Ok(r) if r.interrupted && !args.live => {
            bar.abandon_with_message("interrupted");
            fresh.remove_if_empty(replica);
            eprintln!("settee: interrupted; the batches committed so far are kept, run the same command to resume");
            return Ok(Outcome::Interrupted);
        }
        Ok(r) => r,
        Err(e) => {
            bar.abandon();
            fresh.remove_if_empty(replica);
            return Err(e.into());
        }
    };
    bar.finish_and_clear();
    let compacted = auto_compact(replica, &args).await;
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json(
            &mut out,
            &serde_json::to_value(&result).map_err(std::io::Error::from)?,
        )?;
    } else {
        summarize(&mut out, &remote, &args, &result)?;
        if let Some(c) = &compacted {
            writeln!(
                out,
                "  compacted        {:.1} MB -> {:.1} MB on disk (--compact-above {})",
                c.bytes_before as f64 / 1048576.0,
                c.bytes_after as f64 / 1048576.0,
                args.compact_above
            )?;
        }
    }
    Ok(if result.doc_write_failures > 0 {
        Outcome::PartialFailure
    } else {
        Outcome::Ok
    })
}

/// The builder with the filter settings of `args`.
fn with_filter(
    mut builder: crate::replicate::PullConfigBuilder,
    args: &FilterArgs,
) -> Result<crate::replicate::PullConfigBuilder, CliError> {
    use crate::replicate::{Filter, Revisions, Tombstones};
    let filter = if !args.doc_ids.is_empty() {
        Filter::DocIds(args.doc_ids.clone())
    } else if let Some(selector) = &args.selector {
        let selector = serde_json::from_str(selector)
            .map_err(|e| CliError::Usage(format!("--selector is not JSON ({e}): {selector}")))?;
        Filter::Selector(selector)
    } else if let Some(name) = &args.filter {
        let params = args
            .filter_params
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
                None => Err(CliError::Usage(format!(
                    "--filter-param takes KEY=VALUE, not {kv:?}"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Filter::Design {
            name: name.clone(),
            params,
        }
    } else {
        Filter::All
    };
    builder = builder.filter(filter);
    if args.winning_revs_only {
        builder = builder.revisions(Revisions::WinnersOnly);
    }
    if args.skip_tombstones {
        builder = builder.tombstones(Tombstones::SkipUnheld);
    }
    Ok(builder)
}

/// The automatic trigger: after a completed pull, compacts the replica when
/// it is larger than `--compact-above` times its baseline
/// ([`Replica::should_compact`]). A failure is a warning: the pull itself
/// succeeded, and a compaction is crash-safe at every step.
async fn auto_compact(
    replica: Replica,
    args: &PullArgs,
) -> Option<crate::maintenance::CompactReport> {
    if args.compact_above <= 0.0 {
        return None;
    }
    let factor = args.compact_above;
    let dir = replica.path().to_path_buf();
    let cache = replica.config().cache_capacity;
    let outcome = tokio::task::spawn_blocking(move || {
        if !replica.should_compact(factor)? {
            return Ok(None);
        }
        // The pull has returned, so this is the last handle: dropping it
        // lets the compaction take the replica.
        drop(replica);
        let options = crate::maintenance::CompactOptions {
            cache_capacity: Some(cache),
            ..Default::default()
        };
        crate::maintenance::compact(&dir, &options).map(Some)
    })
    .await;
    match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => {
            tracing::warn!(%e, "automatic compaction failed; the pull is complete");
            if !args.quiet && !args.json {
                eprintln!("settee: automatic compaction failed: {e}");
            }
            None
        }
        Err(e) => {
            tracing::warn!(%e, "automatic compaction task failed");
            None
        }
    }
}

fn summarize(
    out: &mut impl Write,
    remote: &Remote,
    args: &PullArgs,
    r: &PullResult,
) -> Result<(), CliError> {
    let secs = r.timings.total.as_secs_f64();
    let rate = if secs > 0.0 {
        r.docs_written as f64 / secs
    } else {
        0.0
    };
    writeln!(
        out,
        "pulled {} into {}",
        remote.endpoint(),
        args.dir.display()
    )?;
    if let Some(filter) = &r.filtered {
        writeln!(out, "  filtered         {filter}")?;
    }
    if r.interrupted {
        writeln!(out, "  live             stopped")?;
    }
    writeln!(out, "  changes read     {}", r.changes_read)?;
    writeln!(out, "  docs read        {}", r.docs_read)?;
    writeln!(out, "  docs written     {}", r.docs_written)?;
    writeln!(out, "  attachments      {} fetched", r.attachments_fetched)?;
    writeln!(out, "  failures         {}", r.doc_write_failures)?;
    writeln!(out, "  since → last_seq {} → {}", r.start_seq, r.last_seq)?;
    writeln!(
        out,
        "  time             {secs:.2} s ({rate:.0} docs/s, {} batches)",
        r.batches
    )?;
    for f in &r.failures {
        writeln!(
            out,
            "  failed           {} {}: {} ({})",
            f.id,
            f.rev.as_deref().unwrap_or("-"),
            f.error,
            f.reason
        )?;
    }
    Ok(())
}

/// What a first pull created, so that one that fails before committing
/// anything leaves nothing behind.
enum Fresh {
    /// The directory did not exist: remove it.
    Dir(std::path::PathBuf),
    /// It existed, empty: empty it again.
    Contents(std::path::PathBuf),
    /// It held something already: leave it be.
    No,
}

impl Fresh {
    fn before_open(dir: &std::path::Path) -> Fresh {
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                if entries.count() == 0 {
                    Fresh::Contents(dir.to_path_buf())
                } else {
                    Fresh::No
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Fresh::Dir(dir.to_path_buf()),
            Err(_) => Fresh::No,
        }
    }

    /// Closes the replica and removes what this run created, when no batch
    /// was committed (nothing a later pull could resume from).
    fn remove_if_empty(self, replica: Replica) {
        let empty = replica.update_seq().ok() == Some(0)
            && replica.pending_retries().is_ok_and(|r| r.is_empty());
        drop(replica);
        if !empty {
            return;
        }
        let removed = match &self {
            Fresh::Dir(dir) => std::fs::remove_dir_all(dir),
            Fresh::Contents(dir) => std::fs::read_dir(dir).and_then(|entries| {
                for entry in entries {
                    let path = entry?.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(&path)?;
                    } else {
                        std::fs::remove_file(&path)?;
                    }
                }
                Ok(())
            }),
            Fresh::No => return,
        };
        if let Err(e) = removed {
            tracing::warn!(%e, "could not remove the replica directory of a failed first pull");
        }
    }
}
