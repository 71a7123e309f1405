//! Pulls a CouchDB database into a local replica, then reads it offline:
//! the typed status, a few whole documents, an attachment.
//!
//! ```text
//! cargo run --example pull_and_read -- http://admin:pass@127.0.0.1:5984/course ./replicas/course
//! ```

use settee::{pull, Endpoint, PullConfig, Remote, RemoteConfig, Replica, ReplicaConfig};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: pull_and_read DB_URL REPLICA_DIR");
        return ExitCode::from(2);
    };
    match run(&url, &dir).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pull_and_read: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let replica = Replica::open(dir, ReplicaConfig::default())?;
    let remote = Remote::new(Endpoint::parse(url)?, RemoteConfig::default())?;
    let config = PullConfig::builder()
        .batch_size(500)
        .batches_limit(4)
        .build()?;
    let result = pull(&replica, &remote, &config).await?;
    println!(
        "pulled: {} revisions written in {} batches, now at {}",
        result.docs_written, result.batches, result.last_seq
    );

    let status = settee::replicate::status(&replica)?;
    println!("{}", serde_json::to_string_pretty(&status)?);

    for doc in replica.documents(..).take(3) {
        let doc = doc?;
        println!(
            "{} {} {}",
            doc.id,
            doc.rev,
            serde_json::Value::Object(doc.body.clone())
        );
        for (name, stub) in doc.attachments() {
            if let Some(bytes) = replica.attachment_of(&doc.id, name)? {
                println!(
                    "  attachment {name}: {} bytes of {}",
                    bytes.len(),
                    stub.content_type
                );
            }
        }
    }
    Ok(())
}
