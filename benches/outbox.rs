//! Throughput of local writes into the outbox, and of the push end to end.
//! `cargo bench --bench outbox`.
//!
//! - Into the outbox: new documents and updates of one document through
//!   `Replica::put_blocking` / `update_blocking` (each one transaction and
//!   one flush: what a caller waits for).
//! - End to end: documents written locally, then pushed by the outbox
//!   worker to a real server, timed from the first write until the queue
//!   is empty. The server is `SETTEE_BENCH_URL` (a server root with admin
//!   credentials, e.g. `http://admin:pw@127.0.0.1:5984`), or else a PouchDB
//!   Server this bench starts from `scripts/pouchdb-server` (needs node and
//!   `npm ci` there); without either, that part is skipped with a message.
//!
//! Sizes: `SETTEE_BENCH_DOCS` (default 2000).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use settee::outbox::{Outbox, OutboxConfig};
use settee::{Endpoint, Remote, RemoteConfig, Replica, ReplicaConfig};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn docs() -> usize {
    std::env::var("SETTEE_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn report(what: &str, n: usize, took: Duration) {
    println!(
        "{what:<52} {n:>6} in {:>7.2} s  {:>8.0} /s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

fn into_outbox(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    let t = Instant::now();
    for i in 0..n {
        replica
            .put_blocking(
                &format!("card-{i:06}"),
                &json!({"elo": 1200, "tags": ["a", "b"]}),
            )
            .unwrap();
    }
    report("outbox: new documents (put, durable each)", n, t.elapsed());
    let t = Instant::now();
    for i in 0..n / 2 {
        replica
            .update_blocking("card-000000", |_| {
                Some(json!({"elo": 1200 + i}).as_object().unwrap().clone())
            })
            .unwrap();
    }
    report(
        "outbox: updates of one document (update)",
        n / 2,
        t.elapsed(),
    );
    assert_eq!(replica.outbox().len().unwrap() as usize, n + n / 2);
}

/// A PouchDB Server started for the bench; stopped when dropped (serve.js
/// exits when its stdin closes).
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn start_server() -> Option<Server> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let serve = root.join("scripts/pouchdb-server/serve.js");
    if !root.join("scripts/pouchdb-server/node_modules").is_dir() {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let mut child = Command::new("node")
        .arg(serve)
        .args(["--port", &port.to_string(), "--in-memory", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    let ready = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("READY"));
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    ready.then_some(server)
}

async fn end_to_end(base: &str, n: usize) {
    let http = reqwest::Client::new();
    for (label, write_first) in [
        ("queued, then pushed", true),
        ("written while pushing", false),
    ] {
        let db = format!("settee-bench-outbox-{}", uuid::Uuid::new_v4().simple());
        let url = format!("{base}/{db}");
        let endpoint = Endpoint::parse(&url).unwrap();
        let mut req = http.put(endpoint.db_url());
        if let Some(c) = endpoint.credentials() {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let status = req.send().await.unwrap().status();
        assert!(status.is_success(), "create {db}: {status}");
        let remote = Remote::new(endpoint, RemoteConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let t = Instant::now();
        let write = |replica: Replica| {
            tokio::task::spawn_blocking(move || {
                for i in 0..n {
                    replica
                        .put_blocking(&format!("card-{i:06}"), &json!({"elo": 1200 + i}))
                        .unwrap();
                }
            })
        };
        let mut push_started = t;
        let outbox = if write_first {
            write(replica.clone()).await.unwrap();
            push_started = Instant::now();
            Outbox::spawn(replica.clone(), remote, OutboxConfig::default())
        } else {
            let outbox = Outbox::spawn(replica.clone(), remote, OutboxConfig::default());
            write(replica.clone()).await.unwrap();
            outbox
        };
        let status = outbox.close(Duration::from_secs(600)).await.unwrap();
        assert_eq!(status.pending, 0, "{status:?}");
        report(&format!("end to end: {label}"), n, t.elapsed());
        if write_first {
            report("  of which the push alone", n, push_started.elapsed());
        }
        println!(
            "{:<52} {:>6} _bulk_docs requests",
            "", status.bulk_docs_requests
        );
        let mut req = http.delete(Endpoint::parse(&url).unwrap().db_url());
        if let Some(c) = Endpoint::parse(&url).unwrap().credentials() {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let _ = req.send().await;
    }
}

fn main() {
    // `cargo test --benches` runs bench targets with no `--bench` flag:
    // nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = docs();
    into_outbox(n);
    let (server, base) = match std::env::var("SETTEE_BENCH_URL") {
        Ok(url) => (None, url),
        Err(_) => match start_server() {
            Some(s) => {
                let url = s.url.clone();
                (Some(s), url)
            }
            None => {
                println!("end to end: skipped (set SETTEE_BENCH_URL, or run `npm ci` in scripts/pouchdb-server)");
                return;
            }
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(end_to_end(base.trim_end_matches('/'), n));
    drop(server);
}
