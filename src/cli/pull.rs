//! `settee pull`: a progress bar and a summary around [`crate::pull_with_progress`].

use super::{print_json, CliError, CliResult, Outcome};
use crate::cli::args::PullArgs;
use crate::{
    Credentials, Endpoint, PullConfig, PullResult, Remote, RemoteConfig, Replica, ReplicaConfig,
    RetryPolicy,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};

pub(crate) async fn run(args: PullArgs) -> CliResult {
    let mut endpoint = Endpoint::parse(&args.db_url)?;
    if args.user.is_some() || args.password.is_some() {
        let from_url = endpoint.credentials().cloned();
        let username = args
            .user
            .clone()
            .or_else(|| from_url.as_ref().map(|c| c.username.clone()))
            .unwrap_or_default();
        let password = args
            .password
            .clone()
            .or_else(|| from_url.map(|c| c.password))
            .unwrap_or_default();
        endpoint = endpoint.with_credentials(Some(Credentials { username, password }));
    }
    let config = PullConfig::new(args.batch_size, args.batches_limit)?;
    let remote = Remote::new(
        endpoint,
        RemoteConfig::default().with_retry(RetryPolicy::with_retries(args.retries)),
    )?;
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
    let pulling = crate::pull_with_progress(&replica, &remote, &config, |p| {
        bar.set_length(p.remote_doc_count.max(p.docs_written));
        bar.set_position(p.docs_written);
    });
    let result = tokio::select! {
        r = pulling => r,
        _ = tokio::signal::ctrl_c() => {
            bar.abandon_with_message("interrupted");
            eprintln!("settee: interrupted; the batches committed so far are kept, run the same command to resume");
            return Ok(Outcome::Interrupted);
        }
    };
    bar.finish_and_clear();
    let result = result?;
    let mut out = std::io::stdout().lock();
    if args.json {
        print_json(
            &mut out,
            &serde_json::to_value(&result).map_err(std::io::Error::from)?,
        )?;
    } else {
        summarize(&mut out, &remote, &args, &result)?;
    }
    Ok(if result.doc_write_failures > 0 {
        Outcome::PartialFailure
    } else {
        Outcome::Ok
    })
}

fn summarize(
    out: &mut impl Write,
    remote: &Remote,
    args: &PullArgs,
    r: &PullResult,
) -> Result<(), CliError> {
    let secs = r.timings.total_ms as f64 / 1000.0;
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
