//! `settee bench`: cold pulls into throw-away replicas, timed, with the
//! process's CPU time per document written and its peak resident memory. For comparisons with other clients on
//! the same server and corpus, see `scripts/bench-pull.sh`.

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::BenchArgs;
use crate::{Endpoint, PullConfig, Remote, RemoteConfig, Replica, ReplicaConfig};
use serde_json::json;
use std::io::Write;

pub(crate) async fn run(args: BenchArgs) -> CliResult {
    let config = PullConfig::builder()
        .batch_size(args.batch_size)
        .batches_limit(args.batches_limit)
        .feed(args.feed.into())
        .build()?;
    let remote = Remote::new(Endpoint::parse(&args.db_url)?, RemoteConfig::default())?;
    let server = remote.server_info().await?;
    let info = remote.db_info().await?;
    let scratch = args.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "cold pulls of {} ({} {}, {} docs), batch_size {}, batches_limit {}",
            remote.endpoint(),
            server.vendor,
            server.version.as_deref().unwrap_or("?"),
            info.doc_count,
            config.batch_size,
            config.batches_limit
        )?;
        writeln!(
            out,
            "{:>4} {:>10} {:>12} {:>10} {:>12} {:>12}",
            "run", "wall ms", "docs written", "docs/s", "CPU µs/doc", "peak RSS MB"
        )?;
    }
    let mut rates = Vec::new();
    for run in 1..=args.runs.max(1) {
        let dir = scratch.join(format!("settee-bench-{}", uuid::Uuid::new_v4()));
        let replica = Replica::open(
            &dir,
            ReplicaConfig::default().with_cache_capacity(args.cache_mb * 1024 * 1024),
        )?;
        let cpu_before = cpu_seconds();
        let result = crate::pull(&replica, &remote, &config).await;
        let cpu = cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        drop(replica);
        let _ = std::fs::remove_dir_all(&dir);
        let result = result?;
        let secs = result.timings.total.as_secs_f64().max(0.001);
        let rate = result.docs_written as f64 / secs;
        rates.push(rate);
        let cpu_us_per_doc = cpu
            .filter(|_| result.docs_written > 0)
            .map(|s| (s * 1e7 / result.docs_written as f64).round() / 10.0);
        let rss_mb = peak_rss_kb().map(|kb| kb as f64 / 1024.0);
        if args.json {
            print_json(
                &mut out,
                &json!({"run": run, "wall_ms": result.timings.total.as_millis() as u64, "docs_read": result.docs_read,
                        "docs_written": result.docs_written, "doc_write_failures": result.doc_write_failures,
                        "docs_per_s": rate.round(), "cpu_us_per_doc": cpu_us_per_doc,
                        "peak_rss_mb": rss_mb, "timings": result.timings}),
            )?;
        } else {
            let rss = rss_mb.map_or("-".to_owned(), |mb| format!("{mb:.1}"));
            let cpu = cpu_us_per_doc.map_or("-".to_owned(), |c| format!("{c:.1}"));
            writeln!(
                out,
                "{run:>4} {:>10} {:>12} {:>10.0} {cpu:>12} {rss:>12}",
                result.timings.total.as_millis(),
                result.docs_written,
                rate
            )?;
        }
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    if args.json {
        print_json(
            &mut out,
            &json!({"median_docs_per_s": median.round(), "peak_rss_mb": peak_rss_kb().map(|kb| kb / 1024)}),
        )?;
    } else {
        writeln!(
            out,
            "median {median:.0} docs/s; peak RSS is the process's high-water mark over all runs"
        )?;
    }
    out.flush().map_err(CliError::from)?;
    Ok(Outcome::Ok)
}

/// CPU seconds (user + system) this process has used so far, on Linux: the
/// pull's own work and sled's background threads, as `/usr/bin/time`
/// counts a `settee pull`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after "(comm) ": state is the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these in clock ticks of 1/100 s (USER_HZ) on every
    // architecture settee builds for.
    Some(ticks as f64 / 100.0)
}

/// The process's peak resident set size (`VmHWM`), on Linux.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
