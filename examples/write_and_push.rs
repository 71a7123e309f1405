//! Writes a document locally (durable before `put` returns, offline or
//! not), then pushes it to the remote with the outbox worker and waits for
//! the queue to drain.
//!
//! ```text
//! cargo run --example write_and_push -- http://admin:pass@127.0.0.1:5984/course ./replicas/course
//! ```

use serde_json::json;
use settee::outbox::{Outbox, OutboxConfig};
use settee::{Endpoint, Remote, RemoteConfig, Replica, ReplicaConfig};
use std::process::ExitCode;
use std::time::Duration;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: write_and_push DB_URL REPLICA_DIR");
        return ExitCode::from(2);
    };
    match run(&url, &dir).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(pending) => {
            eprintln!("write_and_push: {pending} writes still queued");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("write_and_push: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, dir: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let replica = Replica::open(dir, ReplicaConfig::default())?;
    let note = format!("example-{}", std::process::id());
    let write = replica
        .put(&note, json!({"docType": "NOTE", "text": "written offline"}))
        .await?;
    println!(
        "stored {} {} at local seq {}",
        write.id, write.rev, write.seq
    );

    let remote = Remote::new(Endpoint::parse(url)?, RemoteConfig::default())?;
    let outbox = Outbox::spawn(replica, remote, OutboxConfig::default());
    let status = outbox.close(Duration::from_secs(30)).await?;
    println!(
        "pushed {} revisions, {} pending, {} dead letters",
        status.revs_pushed,
        status.pending,
        status.dead_letters.len()
    );
    Ok(status.pending)
}
