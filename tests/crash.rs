//! Crash tests that prove something (issue 17, section 4). Each operation
//! is first run uninterrupted on the same data to measure how long it
//! takes; then it is killed with SIGKILL at random fractions of that time
//! (one at random in each of equal slices of [5%, 90%], in random order).
//! A kill counts as landing mid-operation when the process had not
//! finished (still running, no completion printed) and had visibly started
//! (some but not all of its work is found after the kill); each test prints
//! "N of M kills landed mid-operation" and asserts at least 90%.
//!
//! After every kill: `settee check --json` reports no violations, the
//! replica reopens, nothing acknowledged is lost, and the operation run
//! again completes with the right result (compared with the server where
//! there is one).
//!
//! `SETTEE_CRASH_LOOPS` sets the kills per operation (default 6 for CI; a
//! soak: `SETTEE_CRASH_LOOPS=50 cargo test --test tests crash::`). The tests
//! take turns (a duration measured while another crash test loads the
//! machine would not hold for the kills).

use crate::support::proxy::Rule;
use crate::support::*;
use serde_json::{json, Value};
use settee::{Replica, ReplicaConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Bound;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn crash_loops() -> usize {
    std::env::var("SETTEE_CRASH_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// `SETTEE_CRASH_SIZE` multiplies the data each operation works on
/// (default 1; larger makes every operation, and every round, longer).
fn sized(n: usize) -> usize {
    let factor: f64 = std::env::var("SETTEE_CRASH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * factor).round() as usize).max(1)
}

/// One crash test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The earliest and latest kill, as fractions of the measured duration.
const EARLIEST: f64 = 0.05;
const LATEST: f64 = 0.9;

/// A pseudo-random number in [0, 1) (no rand dependency in tests).
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `n` kill times as fractions of the measured duration: one at random in
/// each of `n` equal slices of [EARLIEST, LATEST], shuffled, so that any
/// number of kills spreads over the whole operation.
fn kill_fractions(n: usize) -> Vec<f64> {
    let width = (LATEST - EARLIEST) / n.max(1) as f64;
    let mut fractions: Vec<f64> = (0..n)
        .map(|i| EARLIEST + width * (i as f64 + random_unit()))
        .collect();
    for i in (1..n).rev() {
        let j = ((random_unit() * (i + 1) as f64) as usize).min(i);
        fractions.swap(i, j);
    }
    fractions
}

/// What a run of a `settee` process left.
struct Ran {
    /// It exited on its own (before the kill, when there was one).
    exited: bool,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// From the spawn to the exit, or to the kill.
    took: Duration,
}

impl Ran {
    /// Whether the operation had finished: the process exited, or printed
    /// its result (which every command here prints last).
    fn finished(&self) -> bool {
        self.exited || !self.stdout.trim().is_empty()
    }

    /// The complete lines it printed on stdout (a line cut by the kill is
    /// not one).
    fn lines(&self) -> Vec<&str> {
        let complete = match self.stdout.rfind('\n') {
            Some(end) => &self.stdout[..end],
            None => "",
        };
        complete.lines().filter(|l| !l.is_empty()).collect()
    }
}

fn settee_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_settee"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        // It would override the password of the test server's URL.
        .env_remove("SETTEE_PASSWORD");
    cmd
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `cmd` to its end, or SIGKILLs it `kill_at` after its spawn.
async fn run(mut cmd: Command, kill_at: Option<Duration>) -> Ran {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn settee");
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let exited = loop {
        if child.try_wait().expect("try_wait").is_some() {
            break true;
        }
        if kill_at.is_some_and(|at| start.elapsed() >= at) {
            break false;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "settee ran for 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let took = start.elapsed();
    if !exited {
        child.kill().expect("SIGKILL"); // no destructors, no flush
    }
    let status = child.wait().expect("wait");
    Ran {
        exited,
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        took,
    }
}

/// Runs `cmd` uninterrupted, asserting it succeeds: the duration the kills
/// are placed in.
async fn measure(op: &str, cmd: Command) -> Ran {
    let ran = run(cmd, None).await;
    assert!(
        ran.status.success(),
        "{op}: the uninterrupted run failed: {:?}\n{}",
        ran.status,
        ran.stderr
    );
    eprintln!("crash: {op}: the uninterrupted run took {:?}", ran.took);
    ran
}

/// Counts the kills that landed mid-operation.
struct Tally {
    op: &'static str,
    measured: Duration,
    mid: usize,
    kills: Vec<String>,
    /// When the last kill was recorded (for the time a round takes).
    last: Instant,
}

impl Tally {
    fn new(op: &'static str, measured: Duration) -> Self {
        Tally {
            op,
            measured,
            mid: 0,
            kills: Vec::new(),
            last: Instant::now(),
        }
    }

    fn record(&mut self, fraction: f64, mid: bool, what: String) {
        self.mid += usize::from(mid);
        let line = format!(
            "kill at {:.0}% ({:?}): {} ({what})",
            fraction * 100.0,
            self.measured.mul_f64(fraction),
            if mid {
                "mid-operation"
            } else {
                "NOT mid-operation"
            }
        );
        eprintln!(
            "crash: {}: {line}, {:.1} s since the last",
            self.op,
            self.last.elapsed().as_secs_f64()
        );
        self.last = Instant::now();
        self.kills.push(line);
    }

    /// Prints the count and asserts at least 90% landed mid-operation.
    fn assert_mostly_mid(&self) {
        let n = self.kills.len();
        eprintln!(
            "crash: {}: {} of {n} kills landed mid-operation (operation measured at {:?})",
            self.op, self.mid, self.measured
        );
        assert!(
            self.mid * 10 >= n * 9,
            "{}: only {} of {n} kills landed mid-operation:\n{}",
            self.op,
            self.mid,
            self.kills.join("\n")
        );
    }
}

/// `settee check --json` (extra arguments: `--db NAME`) exits 0 and
/// reports no violations; returns the report.
fn check_clean(dir: &Path, extra: &[&str], what: &str) -> Value {
    let mut args = vec!["check", dir.to_str().expect("utf-8 path"), "--json"];
    args.extend_from_slice(extra);
    let out = settee(&args);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: check --json: {e}: {out:?}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: settee check: {report:#}"
    );
    assert_eq!(report["violations"], json!([]), "{what}");
    report
}

/// Copies a directory tree (a closed replica, or a sync root).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `ID REV` lines of `settee __write-loop`: the writes it acknowledged.
fn acknowledged(ran: &Ran) -> Vec<(String, String)> {
    ran.lines()
        .into_iter()
        .map(|line| {
            let (id, rev) = line.split_once(' ').expect("ID REV");
            (id.to_owned(), rev.to_owned())
        })
        .collect()
}

/// Every id the outbox still owes the remote (queue and dead letters).
fn owed_ids(replica: &Replica) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut after = None;
    loop {
        let page = replica.outbox_entries(after, 1000).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key);
        ids.extend(page.into_iter().map(|e| e.id));
    }
    ids.extend(replica.dead_letters().unwrap().into_iter().map(|d| d.id));
    ids
}

/// Id -> winning revision of every document of the replica.
fn local_revs(replica: &Replica) -> BTreeMap<String, String> {
    replica
        .docs(Bound::Unbounded, Bound::Unbounded)
        .map(|d| {
            let d = d.unwrap();
            (d.id, d.rev.to_string())
        })
        .collect()
}

/// Id -> winning revision of the server's documents whose id starts with
/// `prefix`.
async fn server_revs(db: &TestDb, prefix: &str) -> BTreeMap<String, String> {
    let all = db
        .get_json(&format!(
            "_all_docs?startkey={}&endkey={}",
            enc(&format!("\"{prefix}\"")),
            enc(&format!("\"{prefix}\u{fff0}\""))
        ))
        .await;
    all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["value"]["rev"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The store's own invariants: counters, sequence index and bodies agree.
fn check_store_invariants(replica: &Replica) {
    let docs: Vec<_> = replica
        .docs(Bound::Unbounded, Bound::Unbounded)
        .map(|d| d.expect("readable record"))
        .collect();
    let live = docs.iter().filter(|d| !d.deleted).count() as u64;
    assert_eq!(replica.doc_count().unwrap(), live, "doc_count counter");
    assert_eq!(
        replica.deleted_count().unwrap(),
        docs.len() as u64 - live,
        "doc_del_count counter"
    );
    for d in &docs {
        let doc = replica.get(&d.id).unwrap().expect("winner has a body");
        assert_eq!(doc.rev, d.rev);
        for leaf in replica.leaves(&d.id).unwrap() {
            let body = replica.get_rev(&d.id, &leaf.rev).unwrap();
            let body = body.unwrap_or_else(|| panic!("leaf {} of {} has a body", leaf.rev, d.id));
            for (name, stub) in body.attachments() {
                assert!(
                    replica.has_attachment(&stub.digest).unwrap(),
                    "{}/{name} at {}: its bytes are stored",
                    d.id,
                    leaf.rev
                );
            }
        }
    }
    let changes: Vec<_> = replica
        .changes(0)
        .map(|c| c.expect("readable change"))
        .collect();
    assert_eq!(changes.len(), docs.len(), "one sequence entry per document");
    let ids: BTreeSet<_> = changes.iter().map(|c| c.doc.id.clone()).collect();
    assert_eq!(ids.len(), docs.len());
    for c in &changes {
        assert_eq!(
            c.seq, c.doc.seq,
            "sequence entry of {} points at its latest change",
            c.doc.id
        );
    }
    if let Some(last) = changes.last() {
        assert_eq!(replica.update_seq().unwrap(), last.seq);
    }
}

// ---- pull ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pull_leaves_a_consistent_replica_that_resumes() {
    let _turn = SERIAL.lock().await;
    let started = Instant::now();
    let db = TestDb::seeded("crash", &["--cards", "300", "--realistic", "--extras"]).await;
    let want = db.server_dump().await;
    // Slow the server down so that the pull takes long enough to be killed
    // in the middle: every batch reads one `_changes` page (the cold-load
    // fast path takes most documents from it) and may fetch the rest with
    // `_bulk_get`.
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![
        Rule::delay("/_changes", 40),
        Rule::delay("_bulk_get", 40),
    ]);
    let url = db.url_via(&proxy.url());
    let rep_id = {
        let remote = remote_for(&url, settee::RetryPolicy::none());
        settee::replication_id(&remote.server_info().await.unwrap(), remote.endpoint())
    };
    let pull_cmd = |rep: &Path| {
        settee_cmd(&[
            "pull",
            &url,
            path_str(rep),
            "--batch-size",
            "10",
            "--batches-limit",
            "2",
            "--compact-above",
            "0",
            "--json",
        ])
    };
    let tmp = tempfile::tempdir().unwrap();
    let measured = measure("pull", pull_cmd(&tmp.path().join("measured"))).await;
    assert_same_dump(&cli_dump(&tmp.path().join("measured")), &want);
    let mut tally = Tally::new("pull", measured.took);
    for (round, fraction) in kill_fractions(crash_loops()).into_iter().enumerate() {
        let rep = tmp.path().join(format!("rep-{round}"));
        let ran = run(pull_cmd(&rep), Some(measured.took.mul_f64(fraction))).await;
        let what = format!("round {round}");
        if rep.join("db").exists() {
            check_clean(&rep, &[], &what);
        }
        let replica =
            Replica::open(&rep, ReplicaConfig::default()).expect("a killed replica reopens");
        check_store_invariants(&replica);
        let pulled = replica.docs(Bound::Unbounded, Bound::Unbounded).count();
        let checkpoint = replica.checkpoint(&rep_id).unwrap().map(|cp| cp.last_seq.0);
        let covered = match &checkpoint {
            Some(seq) => db.check_checkpoint_not_ahead(&replica, seq).await,
            None => 0,
        };
        tally.record(
            fraction,
            !ran.finished() && pulled > 0 && pulled < want.len(),
            format!(
                "{pulled} of {} documents, checkpoint covering {covered} rows",
                want.len()
            ),
        );
        // Resume straight from the server, from the checkpoint the killed
        // pull left, and end with the server's data.
        let result = pull(&replica, &db.remote(), 50, 3).await;
        if let Some(seq) = &checkpoint {
            assert_eq!(
                &result.start_seq.0, seq,
                "{what}: the resumed pull starts at the checkpoint"
            );
        }
        assert_eq!(result.doc_write_failures, 0);
        check_store_invariants(&replica);
        let report = replica.check().unwrap();
        assert!(report.is_ok(), "{what}: {:?}", report.violations);
        assert_same_dump(&replica_dump(&replica), &want);
    }
    tally.assert_mostly_mid();
    eprintln!("crash: pull: the test took {:?}", started.elapsed());
}
// ---- local write burst -----------------------------------------------------

/// Writes in a burst: `settee __write-loop` writes one new document after
/// another in one process and prints `ID REV` once each is durable (the
/// CLI's `settee put` writes one document per process). 2,500 of them take
/// long enough that the process's start is under 5% of the burst.
const BURST_WRITES: usize = 2500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_write_burst_loses_no_acknowledged_write() {
    let _turn = SERIAL.lock().await;
    let started = Instant::now();
    let db = TestDb::new("crash-burst").await;
    let writes = sized(BURST_WRITES);
    let burst = |dir: &Path, prefix: &str, count: usize| {
        settee_cmd(&[
            "__write-loop",
            path_str(dir),
            "--count",
            &count.to_string(),
            "--prefix",
            prefix,
        ])
    };
    let tmp = tempfile::tempdir().unwrap();
    let measured = measure(
        "write burst",
        burst(&tmp.path().join("measured"), "m-", writes),
    )
    .await;
    assert_eq!(acknowledged(&measured).len(), writes);
    let mut tally = Tally::new("write burst", measured.took);
    for (round, fraction) in kill_fractions(crash_loops()).into_iter().enumerate() {
        let dir = tmp.path().join(format!("r-{round}"));
        let prefix = format!("w{round}-");
        let ran = run(
            burst(&dir, &prefix, writes),
            Some(measured.took.mul_f64(fraction)),
        )
        .await;
        // Every line printed before the kill was a promise.
        let told = acknowledged(&ran);
        // It prints as it goes: it had finished once it printed the last.
        let finished = ran.exited || told.len() == writes;
        tally.record(
            fraction,
            !finished && !told.is_empty(),
            format!("{} of {writes} writes acknowledged", told.len()),
        );
        let what = format!("round {round}");
        if dir.join("db").exists() {
            check_clean(&dir, &[], &what);
        }
        let replica = Replica::open(&dir, ReplicaConfig::default()).expect("reopens");
        check_store_invariants(&replica);
        for (id, rev) in &told {
            let doc = replica.get(id).unwrap();
            let doc = doc.unwrap_or_else(|| panic!("{what}: acknowledged {id} is lost"));
            assert_eq!(&doc.rev.to_string(), rev, "{what}: {id}");
        }
        // Each write, and only a write, is queued for the push.
        let owed = owed_ids(&replica);
        let local = local_revs(&replica);
        assert_eq!(
            owed,
            local.keys().cloned().collect::<BTreeSet<_>>(),
            "{what}: one outbox entry per write"
        );
        assert_eq!(replica.outbox_len().unwrap(), local.len() as u64);
        drop(replica);

        // Writing goes on, and a push delivers every write exactly once.
        let more = run(burst(&dir, &format!("w{round}-more-"), 10), None).await;
        assert!(more.status.success(), "{what}: {}", more.stderr);
        let out = settee(&["push", path_str(&dir), "--remote", &db.url(), "--json"]);
        assert!(
            out.status.success(),
            "{what}: push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(pushed["pending"], 0, "{what}: {pushed}");
        let replica = Replica::open(&dir, ReplicaConfig::default()).unwrap();
        assert_eq!(replica.outbox_len().unwrap(), 0);
        let local = local_revs(&replica);
        assert_eq!(local.len(), told.len().max(local.len()));
        assert_eq!(
            server_revs(&db, &prefix).await,
            local,
            "{what}: the server holds every local write, once"
        );
        for (id, rev) in &told {
            assert!(rev.starts_with("1-"), "{what}: {id} written once: {rev}");
        }
    }
    tally.assert_mostly_mid();
    eprintln!("crash: write burst: the test took {:?}", started.elapsed());
}

// ---- push ------------------------------------------------------------------

/// Queued writes a push round sends, 10 per `_bulk_docs`.
const PUSH_WRITES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_push_loses_no_queued_write() {
    let _turn = SERIAL.lock().await;
    let started = Instant::now();
    // One replica with PUSH_WRITES queued writes, copied for every run.
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    let writes = sized(PUSH_WRITES);
    let count = writes.to_string();
    let wrote = run(
        settee_cmd(&[
            "__write-loop",
            path_str(&template),
            "--count",
            &count,
            "--prefix",
            "q-",
        ]),
        None,
    )
    .await;
    assert!(wrote.status.success(), "{}", wrote.stderr);
    let queued: BTreeMap<String, String> = acknowledged(&wrote).into_iter().collect();
    assert_eq!(queued.len(), writes);
    // Slow the server's `_bulk_docs` down: the push takes long enough to
    // be killed between two of its batches, or in one.
    let proxy = crate::support::proxy::FaultProxy::start(server::server_addr())
        .await
        .expect("start the fault proxy");
    proxy.set_rules(vec![Rule::delay("_bulk_docs", 40)]);
    let push = |dir: &Path, db: &TestDb| {
        settee_cmd(&[
            "push",
            path_str(dir),
            "--remote",
            &db.url_via(&proxy.url()),
            "--batch-size",
            "10",
            "--json",
        ])
    };
    let measured = {
        let db = TestDb::new("crash-push").await;
        let dir = tmp.path().join("measured");
        copy_dir(&template, &dir);
        let ran = measure("push", push(&dir, &db)).await;
        assert_eq!(server_revs(&db, "q-").await, queued);
        ran
    };
    let mut tally = Tally::new("push", measured.took);
    for (round, fraction) in kill_fractions(crash_loops()).into_iter().enumerate() {
        // A database of its own: each run starts with nothing pushed.
        let db = TestDb::new("crash-push").await;
        let dir = tmp.path().join(format!("r-{round}"));
        copy_dir(&template, &dir);
        let ran = run(push(&dir, &db), Some(measured.took.mul_f64(fraction))).await;
        let on_server = server_revs(&db, "q-").await;
        tally.record(
            fraction,
            !ran.finished() && !on_server.is_empty() && on_server.len() < writes,
            format!("{} of {writes} writes on the server", on_server.len()),
        );
        let what = format!("round {round}");
        check_clean(&dir, &[], &what);
        let replica = Replica::open(&dir, ReplicaConfig::default()).expect("reopens");
        check_store_invariants(&replica);
        assert_eq!(local_revs(&replica), queued, "{what}: the replica's writes");
        // Each write is still queued or on the server, never lost; what
        // reached the server is the local revision.
        let owed = owed_ids(&replica);
        for (id, rev) in &queued {
            assert!(
                owed.contains(id) || on_server.get(id) == Some(rev),
                "{what}: {id} is neither queued nor on the server"
            );
        }
        for (id, rev) in &on_server {
            assert_eq!(queued.get(id), Some(rev), "{what}: {id} on the server");
        }
        drop(replica);
        // The push run again sends the rest; the server ends with every
        // write, once.
        proxy.clear_rules();
        let again = run(push(&dir, &db), None).await;
        proxy.set_rules(vec![Rule::delay("_bulk_docs", 40)]);
        assert!(again.status.success(), "{what}: {}", again.stderr);
        let report: Value = serde_json::from_str(&again.stdout).unwrap();
        assert_eq!(report["pending"], 0, "{what}: {report}");
        assert_eq!(report["dead_lettered"], 0, "{what}: {report}");
        assert_eq!(server_revs(&db, "q-").await, queued, "{what}");
        let replica = Replica::open(&dir, ReplicaConfig::default()).unwrap();
        assert_eq!(replica.outbox_len().unwrap(), 0, "{what}");
    }
    tally.assert_mostly_mid();
    eprintln!("crash: push: the test took {:?}", started.elapsed());
}
