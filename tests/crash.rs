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
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
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
const LATEST: f64 = 0.8;

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
    /// From the spawn to the first and the last time the probe saw the
    /// work going on.
    seen: Option<(Duration, Duration)>,
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

/// Reads a pipe to its end into a string shared with the caller.
fn drain(
    mut pipe: impl Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut bytes = Vec::new();
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
            *sink.lock().unwrap() = String::from_utf8_lossy(&bytes).into_owned();
        }
    });
    (text, reader)
}

/// When to SIGKILL a run.
#[derive(Clone, Copy)]
enum Kill {
    /// This long after the spawn.
    After(Duration),
    /// This long after the probe first saw the work going on.
    AfterSeen(Duration),
}

/// Runs `cmd` to its end, or SIGKILLs it `kill_at` after its spawn.
async fn run(cmd: Command, kill_at: Option<Duration>) -> Ran {
    run_probed(cmd, kill_at.map(Kill::After), &|_| false).await
}

/// [`run`], noting the first and last time `probe` (given the stderr so
/// far) sees the work going on.
async fn run_probed(
    mut cmd: Command,
    kill_at: Option<Kill>,
    probe: &(dyn Fn(&str) -> bool + Sync),
) -> Ran {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn settee");
    let (stdout, out_reader) = drain(child.stdout.take().expect("stdout"));
    let (stderr, err_reader) = drain(child.stderr.take().expect("stderr"));
    let mut seen: Option<(Duration, Duration)> = None;
    let exited = loop {
        if probe(&stderr.lock().unwrap()) {
            let now = start.elapsed();
            seen = Some((seen.map_or(now, |s| s.0), now));
        }
        if child.try_wait().expect("try_wait").is_some() {
            break true;
        }
        let due = match kill_at {
            Some(Kill::After(at)) => Some(at),
            Some(Kill::AfterSeen(at)) => seen.map(|(first, _)| first + at),
            None => None,
        };
        if due.is_some_and(|at| start.elapsed() >= at) {
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
    out_reader.join().expect("stdout reader");
    err_reader.join().expect("stderr reader");
    let take = |s: Arc<Mutex<String>>| std::mem::take(&mut *s.lock().unwrap());
    Ran {
        exited,
        status,
        stdout: take(stdout),
        stderr: take(stderr),
        took,
        seen,
    }
}

/// An uninterrupted run: where the kills go.
struct Measured {
    /// When the work began and ended, from the spawn.
    begins: Duration,
    ends: Duration,
    ran: Ran,
}

impl Measured {
    fn work(&self) -> Duration {
        self.ends - self.begins
    }

    /// When to kill: `fraction` of the way through the work.
    fn at(&self, fraction: f64) -> Duration {
        self.begins + self.work().mul_f64(fraction)
    }
}

/// Runs `cmd` uninterrupted, asserting it succeeds: the duration the kills
/// are placed in, from the spawn to the exit.
async fn measure(op: &str, cmd: Command) -> Measured {
    measure_probed(op, cmd, &|_| false).await
}

/// [`measure`], where the work is from the first to the last time `probe`
/// saw it going on (when it did): before, the process starts and opens the
/// replica, which leaves nothing to see; after, it closes and exits.
async fn measure_probed(op: &str, cmd: Command, probe: &(dyn Fn(&str) -> bool + Sync)) -> Measured {
    let ran = run_probed(cmd, None, probe).await;
    assert!(
        ran.status.success(),
        "{op}: the uninterrupted run failed: {:?}\n{}",
        ran.status,
        ran.stderr
    );
    let (begins, ends) = ran.seen.unwrap_or((Duration::ZERO, ran.took));
    eprintln!(
        "crash: {op}: the uninterrupted run took {:?}, its work from {begins:?} to {ends:?}",
        ran.took
    );
    Measured { begins, ends, ran }
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
            "kill at {:.0}% ({:?} into the work): {} ({what})",
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
        let page = replica.outbox().entries(after, 1000).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key);
        ids.extend(page.into_iter().map(|e| e.id));
    }
    ids.extend(
        replica
            .outbox()
            .dead_letters()
            .unwrap()
            .into_iter()
            .map(|d| d.id),
    );
    ids
}

/// Id -> winning revision of every document of the replica.
fn local_revs(replica: &Replica) -> BTreeMap<String, String> {
    replica
        .docs(..)
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
        .docs(..)
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
        settee::replicate::replication_id(&remote.server_info().await.unwrap(), remote.endpoint())
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
    // The work: from the pull's first `_changes` request (the proxy sees
    // it; before, the process starts and opens the replica) to the exit.
    let pulling = |_: &str| proxy.count("/_changes") > 0;
    proxy.clear_requests();
    let mut measured =
        measure_probed("pull", pull_cmd(&tmp.path().join("measured")), &pulling).await;
    measured.ends = measured.ran.took;
    assert_same_dump(&cli_dump(&tmp.path().join("measured")), &want);
    let mut tally = Tally::new("pull", measured.work());
    for (round, fraction) in kill_fractions(crash_loops()).into_iter().enumerate() {
        let rep = tmp.path().join(format!("rep-{round}"));
        proxy.clear_requests();
        let kill = Kill::AfterSeen(measured.work().mul_f64(fraction));
        let ran = run_probed(pull_cmd(&rep), Some(kill), &pulling).await;
        let started = ran.seen.is_some();
        let what = format!("round {round}");
        if rep.join("db").exists() {
            check_clean(&rep, &[], &what);
        }
        let replica =
            Replica::open(&rep, ReplicaConfig::default()).expect("a killed replica reopens");
        check_store_invariants(&replica);
        let pulled = replica.docs(..).count();
        let checkpoint = settee::replicate::checkpoint(&replica, &rep_id)
            .unwrap()
            .map(|cp| cp.last_seq.0);
        let covered = match &checkpoint {
            Some(seq) => db.check_checkpoint_not_ahead(&replica, seq).await,
            None => 0,
        };
        tally.record(
            fraction,
            !ran.finished() && started && pulled < want.len(),
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
/// CLI's `settee put` writes one document per process). 2,000 of them take
/// long enough that the process's start is under 5% of the burst.
const BURST_WRITES: usize = 2000;

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
    // The pace of durable writes follows the disk, which other processes
    // share: the burst is measured again right before each kill.
    let measure_burst = |n: usize| {
        let dir = tmp.path().join(format!("measured-{n}"));
        let cmd = burst(&dir, "m-", writes);
        async move {
            let ran = measure("write burst", cmd).await;
            assert_eq!(acknowledged(&ran.ran).len(), writes);
            ran
        }
    };
    let measured = measure_burst(0).await;
    let mut tally = Tally::new("write burst", measured.work());
    for (round, fraction) in kill_fractions(crash_loops()).into_iter().enumerate() {
        let dir = tmp.path().join(format!("r-{round}"));
        let prefix = format!("w{round}-");
        let measured = measure_burst(round + 1).await;
        tally.measured = measured.work();
        let ran = run(burst(&dir, &prefix, writes), Some(measured.at(fraction))).await;
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
        assert_eq!(replica.outbox().len().unwrap(), local.len() as u64);
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
        assert_eq!(replica.outbox().len().unwrap(), 0);
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
    // The work: from the first `_bulk_docs` request (the proxy sees it;
    // before, the process starts and opens the replica) to the last (after,
    // it records the answer and exits).
    let requests = writes.div_ceil(10);
    let sending = |_: &str| (1..requests).contains(&proxy.count("_bulk_docs"));
    let measured = {
        let db = TestDb::new("crash-push").await;
        let dir = tmp.path().join("measured");
        copy_dir(&template, &dir);
        proxy.clear_requests();
        let mut ran = measure_probed("push", push(&dir, &db), &sending).await;
        ran.ends = ran.ran.seen.expect("the push was seen sending").1;
        assert_eq!(server_revs(&db, "q-").await, queued);
        ran
    };
    let mut tally = Tally::new("push", measured.work());
    for (round, fraction) in kill_fractions(crash_loops()).into_iter().enumerate() {
        // A database of its own: each run starts with nothing pushed.
        let db = TestDb::new("crash-push").await;
        let dir = tmp.path().join(format!("r-{round}"));
        copy_dir(&template, &dir);
        proxy.clear_requests();
        let kill = Kill::AfterSeen(measured.work().mul_f64(fraction));
        let ran = run_probed(push(&dir, &db), Some(kill), &sending).await;
        let on_server = server_revs(&db, "q-").await;
        let what = format!("round {round}");
        check_clean(&dir, &[], &what);
        let still_queued = {
            let replica = Replica::open(&dir, ReplicaConfig::default()).expect("reopens");
            replica.outbox().len().unwrap()
        };
        // Started: it sent a batch. Not done: writes were missing from the
        // server or their answers not yet recorded.
        tally.record(
            fraction,
            !ran.finished()
                && proxy.count("_bulk_docs") > 0
                && (on_server.len() < writes || still_queued > 0),
            format!(
                "{} of {writes} writes on the server, {still_queued} still queued",
                on_server.len()
            ),
        );
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
        assert_eq!(replica.outbox().len().unwrap(), 0, "{what}");
    }
    tally.assert_mostly_mid();
    eprintln!("crash: push: the test took {:?}", started.elapsed());
}

// ---- compaction ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_compaction_keeps_the_replica_as_it_was() {
    use crate::compact::{checkpoint_of, pull_json, stage, update_cards};
    let _turn = SERIAL.lock().await;
    let started = Instant::now();
    let cards = sized(200).to_string();
    let db = TestDb::seeded(
        "crash-compact",
        &["--cards", &cards, "--realistic", "--extras"],
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    pull_json(&db.url(), &dir, &["--compact-above", "0"]);
    update_cards(&db, 0, 50, 1).await;
    let first = pull_json(&db.url(), &dir, &["--compact-above", "0"]);
    let rep_id = first["replication_id"].as_str().unwrap().to_owned();
    let want = cli_dump(&dir);
    let checkpoint = checkpoint_of(&dir, &rep_id);
    // The swap pauses 150 ms after each of its steps (copy flushed, copy
    // closed, commit, old files aside), so that the compaction takes long
    // enough and kills land in every stage, before and after the commit
    // point.
    let compact = || {
        settee_cmd(&[
            "compact",
            path_str(&dir),
            "--step-pause-ms",
            "250",
            "--json",
        ])
    };
    // Before its first file (`compact.tmp`) the process starts and opens
    // the replica; after its last (`compact.old`) it closes and exits.
    let busy = |_: &str| stage(&dir) != "before or after";
    let measured = measure_probed("compaction", compact(), &busy).await;
    assert!(
        measured.ran.seen.is_some(),
        "the compaction was seen at work"
    );
    assert_same_dump(&cli_dump(&dir), &want);
    let mut tally = Tally::new("compaction", measured.work());
    let mut stages = Vec::new();
    for (round, fraction) in kill_fractions(crash_loops()).into_iter().enumerate() {
        let ran = run(compact(), Some(measured.at(fraction))).await;
        // Where the kill left it, before anything opens the replica.
        let at = stage(&dir);
        stages.push(at);
        tally.record(
            fraction,
            !ran.finished() && at != "before or after",
            format!("killed while {at}"),
        );
        let what = format!("round {round}, killed while {at}");
        // `check` opens the replica, which finishes or discards the swap.
        check_clean(&dir, &[], &what);
        for left in [
            "compact.tmp",
            "compact.ready",
            "compact.swap",
            "compact.old",
        ] {
            assert!(!dir.join(left).exists(), "{what}: {left} left behind");
        }
        {
            let replica = Replica::open(&dir, ReplicaConfig::default()).expect("reopens");
            check_store_invariants(&replica);
        }
        // The content is what it was before; so is the checkpoint.
        assert_same_dump(&cli_dump(&dir), &want);
        assert_eq!(checkpoint_of(&dir, &rep_id), checkpoint, "{what}");
        // And the compaction run again completes, changing nothing.
        let again = run(compact(), None).await;
        assert!(again.status.success(), "{what}: {}", again.stderr);
        let report: Value = serde_json::from_str(&again.stdout).unwrap();
        assert!(report["entries"].as_u64().unwrap() > 0, "{report}");
        check_clean(&dir, &[], &what);
        assert_same_dump(&cli_dump(&dir), &want);
        assert_eq!(checkpoint_of(&dir, &rep_id), checkpoint, "{what}");
    }
    tally.assert_mostly_mid();
    eprintln!("crash: compaction: kills landed while {stages:?}");
    if crash_loops() >= 4 {
        assert!(
            stages.contains(&"copying"),
            "no kill landed before the commit point: {stages:?}"
        );
        assert!(
            stages.iter().any(|s| *s == "committed" || *s == "swapping"),
            "no kill landed after the commit point: {stages:?}"
        );
    }
    // And the replica still pulls incrementally from its checkpoint.
    update_cards(&db, 60, 3, 2).await;
    let next = pull_json(&db.url(), &dir, &["--compact-above", "0"]);
    assert_eq!(next["docs_written"], json!(3), "{next}");
    assert_same_dump(&cli_dump(&dir), &db.server_dump().await);
    eprintln!("crash: compaction: the test took {:?}", started.elapsed());
}

// ---- view indexing ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_view_indexing_is_never_ahead_and_catches_up() {
    killed_indexing(false).await;
}

/// The same kills while a design document's view is indexed in
/// JavaScript (`settee query DIR elo/elo`): its sandboxes on two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_javascript_view_indexing_is_never_ahead_and_catches_up() {
    killed_indexing(true).await;
}

/// Kills `settee query` while it indexes the built-in `elo` view, or with
/// `js` the app's `_design/elo` view run in JavaScript: in even rounds a
/// build from nothing (it reads in id order), in odd rounds an update by
/// sequence of a built index after every card was written again.
async fn killed_indexing(js: bool) {
    use crate::views::{compare_without, index_rows, rows_where, server_query};
    use settee::query::Query;
    use settee::views::{self, course, QueryOptions, Views};
    let (view_arg, name, op) = if js {
        (
            "elo/elo",
            "_design/elo/_view/elo",
            "JavaScript view indexing",
        )
    } else {
        ("elo", "elo", "view indexing")
    };
    // The index-engine view of `name` on a replica: the built-in, or the
    // design document's JavaScript.
    let view_of = |replica: &Replica| {
        if js {
            Query::open(replica)
                .unwrap()
                .index_views()
                .unwrap()
                .into_iter()
                .find(|v| v.name() == name)
                .expect("the _design/elo view")
        } else {
            views::course::elo()
        }
    };
    let views_of = |replica: &Replica| {
        if js {
            Views::open(replica, [view_of(replica)]).unwrap()
        } else {
            Views::open(replica, course::views()).unwrap()
        }
    };
    let _turn = SERIAL.lock().await;
    let started = Instant::now();
    let cards = sized(1000).to_string();
    let db = TestDb::seeded("crash-views", &["--cards", &cards, "--tags", "10"]).await;
    // One pulled replica, never indexed, copied for every run.
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    let update_seq = {
        let replica = Replica::open(&template, ReplicaConfig::default()).unwrap();
        pull(&replica, &db.remote(), 500, 2).await;
        replica.update_seq().unwrap()
    };
    // A second template: the same replica with the view built, then every
    // card written again locally with the same body. Its kills land in an
    // update by sequence; the first template's in a build from nothing,
    // which reads in id order.
    let updated = tmp.path().join("updated");
    copy_dir(&template, &updated);
    let updated_seq = {
        let replica = Replica::open(&updated, ReplicaConfig::default()).unwrap();
        views_of(&replica)
            .query(name, &QueryOptions::default().limit(1))
            .unwrap();
        let cards: Vec<_> = replica
            .documents(..)
            .map(Result::unwrap)
            .filter(|d| d.body.get("docType") == Some(&json!("CARD")))
            .collect();
        for card in cards {
            let mut body = card.body;
            body.insert("_rev".into(), json!(card.rev.to_string()));
            replica
                .put_blocking(&card.id, &Value::Object(body))
                .unwrap();
        }
        replica.update_seq().unwrap()
    };
    assert!(updated_seq > update_seq);
    // Even rounds kill a build from nothing, odd ones an update.
    let template_of = |round: usize| {
        if round % 2 == 1 {
            (&updated, updated_seq)
        } else {
            (&template, update_seq)
        }
    };
    let server_elo = server_query(&db, "elo", &QueryOptions::default()).await;
    // `settee query` indexes the view before answering (one row, so that
    // indexing is nearly all it does); tiny chunks make it commit many
    // times, two threads read and map ahead of the chunks being committed.
    let query = |dir: &Path, limit: &str| {
        let mut cmd = settee_cmd(&["query", path_str(dir), view_arg, "--json", "--limit", limit]);
        cmd.env("RUST_LOG", "settee::views=debug")
            .env("SETTEE_VIEW_CHUNK_DOCS", "3")
            .env("SETTEE_VIEW_THREADS", "2")
            .env("SETTEE_VIEW_PARALLEL_BACKLOG", "1");
        cmd
    };
    // True when another chunk has been committed since the last look: the
    // work is from the first committed chunk to the last.
    let indexing = || {
        let seen = std::sync::atomic::AtomicUsize::new(0);
        move |stderr: &str| {
            let n = stderr.matches("view chunk committed").count();
            n > seen.swap(n, std::sync::atomic::Ordering::Relaxed)
        }
    };
    // The work: from the first chunk committed (the debug log says so) to
    // the last. Its pace follows the machine's load, so it is measured
    // again, on a copy of the same replica, right before each kill.
    let measure_indexing = |n: usize, template: &Path| {
        let dir = tmp.path().join(format!("measured-{n}"));
        copy_dir(template, &dir);
        let cmd = query(&dir, "1");
        async move { measure_probed(op, cmd, &indexing()).await }
    };
    let measured = measure_indexing(0, &template).await;
    let mut tally = Tally::new(op, measured.work());
    let mut last = None;
    for (round, fraction) in kill_fractions(crash_loops()).into_iter().enumerate() {
        let (template, update_seq) = template_of(round);
        let dir = tmp.path().join(format!("r-{round}"));
        copy_dir(template, &dir);
        let measured = measure_indexing(round + 1, template).await;
        tally.measured = measured.work();
        // Opening a replica takes from a tenth of a second to most of one
        // on a loaded machine: the kill is timed from this run's first
        // committed chunk.
        let kill = Kill::AfterSeen(measured.work().mul_f64(fraction));
        let ran = run_probed(query(&dir, "1"), Some(kill), &indexing()).await;
        let what = format!("round {round}");
        // `settee check` checks the killed index's rows against the map.
        let report = check_clean(&dir, &[], &what);
        let replica = Replica::open(&dir, ReplicaConfig::default()).expect("reopens");
        check_store_invariants(&replica);
        let views = views_of(&replica);
        let state = views.state(name).unwrap();
        let (seq, rows) = state.as_ref().map_or((0, 0), |s| (s.seq, s.rows));
        tally.record(
            fraction,
            !ran.finished() && rows > 0 && seq < update_seq,
            format!("index at seq {seq} of {update_seq}, {rows} rows"),
        );
        // A build from nothing reads documents in id order: part way, it
        // covers the documents up to an id, of the changes up to a sequence.
        let mut building = None;
        if state.is_some() {
            let elo = report["views"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == name))
                .unwrap_or_else(|| panic!("{what}: no {name} in {report:#}"));
            assert_eq!(elo["mapped"], true, "{what}");
            assert!(elo["docs_checked"].as_u64().unwrap() > 0, "{report:#}");
            if let Some(b) = elo.get("building") {
                building = Some((
                    b["after"].as_str().unwrap().to_owned(),
                    b["upto"].as_u64().unwrap(),
                ));
            }
        }
        // Never ahead, never behind what it claims: exactly the rows of
        // the changes it covers.
        assert!(seq <= update_seq);
        let want = match &building {
            Some((after, upto)) => rows_where(&replica, &view_of(&replica), |s, id| {
                s <= *upto && id <= after.as_str()
            }),
            // An update: the documents changed after `seq` still have the
            // rows of their earlier revision, which were written with the
            // same body, so every row is there exactly once.
            None if round % 2 == 1 => rows_where(&replica, &view_of(&replica), |_, _| true),
            None => rows_where(&replica, &view_of(&replica), |s, _| s <= seq),
        };
        assert_eq!(index_rows(&views, name), want, "{what} at seq {seq}");
        assert_eq!(rows as usize, want.len(), "{what}");
        drop(views);
        drop(replica);
        // The query run again catches up and answers as the server does.
        let again = run(query(&dir, "100000"), None).await;
        assert!(again.status.success(), "{what}: {}", again.stderr);
        let answer: Value = serde_json::from_str(&again.stdout).unwrap();
        assert_eq!(answer["rows"], server_elo["rows"], "{what}");
        assert_eq!(answer["total_rows"], server_elo["total_rows"], "{what}");
        if round % 2 == 0 {
            last = Some(dir);
        }
    }
    tally.assert_mostly_mid();
    if let Some(dir) = last {
        let replica = Replica::open(&dir, ReplicaConfig::default()).unwrap();
        let views = views_of(&replica);
        let report = views.warm().unwrap();
        assert_eq!(report.view(name).unwrap().docs_indexed, 0, "caught up");
        if !js {
            let docs = replica.changes(0).count() as u64;
            assert_eq!(report.view("getTags").unwrap().docs_indexed, docs);
            compare_without(&db, &views, "elo", &[]).await;
            compare_without(&db, &views, "getTags", &[]).await;
        }
    }
    eprintln!("crash: {op}: the test took {:?}", started.elapsed());
}

// ---- carry-over at a swap --------------------------------------------------

/// Local writes queued on the live replica of a sync root when its remote
/// database is recreated: the rebuild carries them to the new replica.
const CARRIED_WRITES: usize = 800;

/// Deletes and recreates the database on the server, seeded anew with
/// another epoch: the sync service's next run rebuilds its replica.
async fn recreate_with_new_epoch(db: &TestDb) {
    let (status, body) = db.request(reqwest::Method::DELETE, "", None).await;
    assert!(status == 200 || status == 202, "delete: {body}");
    db.seed(&["--cards", "30", "--seed", "6", "--epoch", "2"]);
}

/// The generation directories of `db` under a sync root, sorted.
fn generations(root: &Path, db: &str) -> Vec<String> {
    let mut gens: Vec<String> = std::fs::read_dir(settee::sync::SyncRoot::new(root).db_dir(db))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("gen-"))
                .collect()
        })
        .unwrap_or_default();
    gens.sort();
    gens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_rebuild_carries_every_local_write_once() {
    let _turn = SERIAL.lock().await;
    let started = Instant::now();
    let db = TestDb::seeded(
        "crash-carry",
        &["--cards", "30", "--seed", "6", "--epoch", "1"],
    )
    .await;
    let base = server().authed_base();
    let sync = |root: &Path| {
        settee_cmd(&[
            "sync",
            &base,
            path_str(root),
            "--db",
            &db.name,
            "--force",
            "--json",
        ])
    };
    // A sync root whose live replica holds queued local writes: new
    // documents written in a burst, and edits of three pulled cards.
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    let first = run(sync(&template), None).await;
    assert!(first.status.success(), "{}", first.stderr);
    let live = settee::sync::SyncRoot::new(&template)
        .current(&db.name)
        .unwrap()
        .expect("a live replica");
    let old_gen = live.file_name().unwrap().to_str().unwrap().to_owned();
    let writes = sized(CARRIED_WRITES);
    let wrote = run(
        settee_cmd(&[
            "__write-loop",
            path_str(&live),
            "--count",
            &writes.to_string(),
            "--prefix",
            "carry-",
        ]),
        None,
    )
    .await;
    assert!(wrote.status.success(), "{}", wrote.stderr);
    let edited = ["c-000001", "c-000002", "c-000003"];
    for id in edited {
        let out = settee(&[
            "put",
            path_str(&live),
            id,
            r#"{"elo": 4242}"#,
            "--overwrite",
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    // What the live replica owes the server: id -> body.
    let owed: BTreeMap<String, Value> = {
        let replica = Replica::open(&live, ReplicaConfig::default()).unwrap();
        let ids = owed_ids(&replica);
        assert_eq!(ids.len(), writes + edited.len());
        ids.into_iter()
            .map(|id| {
                let body = Value::Object(replica.get(&id).unwrap().unwrap().body);
                (id, body)
            })
            .collect()
    };
    // The work: from the first sight of the rebuild's new generation to
    // the swap (pull the recreated database, warm the views, carry the
    // writes over); after it, the old replica is retired and the process
    // exits.
    let rebuilding = |root: &Path| {
        let root = root.to_path_buf();
        let (old_gen, name) = (old_gen.clone(), db.name.clone());
        move |_: &str| {
            let current = settee::sync::SyncRoot::new(&root)
                .current(&name)
                .ok()
                .flatten();
            let swapped = current.is_some_and(|c| !c.ends_with(&old_gen));
            !swapped && generations(&root, &name).iter().any(|g| *g != old_gen)
        }
    };
    let measured = {
        let root = tmp.path().join("measured");
        copy_dir(&template, &root);
        recreate_with_new_epoch(&db).await;
        measure_probed("carry-over", sync(&root), &rebuilding(&root)).await
    };
    assert!(measured.ran.seen.is_some(), "the rebuild was seen");
    let mut tally = Tally::new("carry-over", measured.work());
    for (round, fraction) in kill_fractions(crash_loops()).into_iter().enumerate() {
        let root = tmp.path().join(format!("r-{round}"));
        copy_dir(&template, &root);
        recreate_with_new_epoch(&db).await;
        let kill = Kill::AfterSeen(measured.work().mul_f64(fraction));
        let ran = run_probed(sync(&root), Some(kill), &rebuilding(&root)).await;
        let what = format!("round {round}");
        // Where the kill left the root, before anything opens it.
        let gens = generations(&root, &db.name);
        let current = settee::sync::SyncRoot::new(&root)
            .current(&db.name)
            .unwrap();
        let current = current.expect("a live replica");
        let swapped = current.file_name().unwrap().to_str().unwrap() != old_gen;
        let new_gen = gens.iter().find(|g| **g != old_gen).cloned();
        let carried = match &new_gen {
            Some(g) => {
                let path = settee::sync::SyncRoot::new(&root).db_dir(&db.name).join(g);
                let replica = Replica::open(&path, ReplicaConfig::default()).unwrap();
                owed_ids(&replica)
                    .iter()
                    .filter(|id| owed.contains_key(*id))
                    .count()
            }
            None => 0,
        };
        tally.record(
            fraction,
            !ran.finished() && new_gen.is_some(),
            format!(
                "generations {gens:?}, {} live, {carried} of {} writes carried",
                if swapped { "new" } else { "old" },
                owed.len()
            ),
        );
        check_clean(&root, &["--db", &db.name], &what);
        {
            // Whichever replica is live holds every write, queued.
            let replica = Replica::open(&current, ReplicaConfig::default()).expect("reopens");
            check_store_invariants(&replica);
            let queued = owed_ids(&replica);
            for (id, body) in &owed {
                let doc = replica.get(id).unwrap();
                let doc = doc.unwrap_or_else(|| panic!("{what}: {id} is lost"));
                assert_eq!(&Value::Object(doc.body), body, "{what}: {id}");
                assert!(queued.contains(id), "{what}: {id} is no longer queued");
            }
        }
        // The sync run again completes the rebuild and the carry; a push
        // then delivers every write to the recreated database, once.
        let again = run(sync(&root), None).await;
        assert!(again.status.success(), "{what}: {}", again.stderr);
        let status: Value = serde_json::from_str(again.lines()[0]).unwrap();
        assert_eq!(status["state"], "ready", "{what}: {status}");
        let live = settee::sync::SyncRoot::new(&root)
            .current(&db.name)
            .unwrap()
            .unwrap();
        assert_ne!(live.file_name().unwrap().to_str().unwrap(), old_gen);
        let out = settee(&["push", path_str(&live), "--remote", &db.url(), "--json"]);
        assert!(
            out.status.success(),
            "{what}: push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let replica = Replica::open(&live, ReplicaConfig::default()).unwrap();
        assert_eq!(replica.outbox().len().unwrap(), 0, "{what}");
        let local = local_revs(&replica);
        for (id, body) in &owed {
            let doc = replica.get(id).unwrap().unwrap();
            assert_eq!(&Value::Object(doc.body), body, "{what}: {id}");
            assert_eq!(replica.leaves(id).unwrap().len(), 1, "{what}: {id}");
        }
        let on_server = server_revs(&db, "carry-").await;
        assert_eq!(on_server.len(), writes, "{what}");
        for (id, rev) in &on_server {
            assert_eq!(local.get(id), Some(rev), "{what}: {id}");
            assert!(rev.starts_with("1-"), "{what}: {id} carried once: {rev}");
        }
        for id in edited {
            let doc = db.get_json(&enc_id(id)).await;
            assert_eq!(doc["elo"], 4242, "{what}: {id}");
            assert!(
                doc["_rev"].as_str().unwrap().starts_with("2-"),
                "{what}: {id} edited once on the recreated database: {doc}"
            );
            assert_eq!(local.get(id).map(String::as_str), doc["_rev"].as_str());
        }
    }
    tally.assert_mostly_mid();
    eprintln!("crash: carry-over: the test took {:?}", started.elapsed());
}

/// Writes a client sends through `settee serve` (issue 21): in turn a
/// `PUT` (a local write) and a `_bulk_docs` with `new_edits: false` (a
/// revision pushed by a replicator).
const SERVE_WRITES: usize = 400;

/// A `settee serve` process on a free port and the URL of its database.
fn start_serve(dir: &Path) -> (std::process::Child, String) {
    let mut child = settee_cmd(&["serve", path_str(dir), "--port", "0", "--name", "db"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start settee serve");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("serving ")
        .unwrap_or_else(|| panic!("{line:?}"));
    (child, url.to_owned())
}

/// Sends the writes, recording each one answered 201 in `told` (the
/// client's promise from the server); stops at the first failure (the
/// server is gone). True when it sent them all.
async fn serve_client(
    url: String,
    prefix: String,
    told: Arc<Mutex<Vec<(String, String)>>>,
) -> bool {
    let client = reqwest::Client::new();
    for i in 0..SERVE_WRITES {
        let id = format!("{prefix}{i:04}");
        let (request, rev) = if i % 2 == 0 {
            (
                client.put(format!("{url}/{id}")).json(&json!({"n": i})),
                None,
            )
        } else {
            let hash = format!("{:032x}", (i as u128) << 64 | 0xabcdef);
            let doc = json!({"_id": id, "_rev": format!("1-{hash}"),
                "_revisions": {"start": 1, "ids": [hash]}, "n": i});
            let body = json!({"docs": [doc], "new_edits": false});
            (
                client.post(format!("{url}/_bulk_docs")).json(&body),
                Some(format!("1-{hash}")),
            )
        };
        let Ok(resp) = request.send().await else {
            return false;
        };
        if resp.status() != 201 {
            return false;
        }
        let Ok(answer) = resp.json::<Value>().await else {
            return false;
        };
        let rev = match rev {
            Some(rev) if answer == json!([]) => rev,
            Some(_) => panic!("{id}: refused: {answer}"),
            None => answer["rev"].as_str().expect("rev").to_owned(),
        };
        told.lock().unwrap().push((id, rev));
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_serve_loses_no_acknowledged_write() {
    let _turn = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        drop(Replica::open(&dir, ReplicaConfig::default()).expect("create"));
        dir
    };
    // One whole run first: how long the writes take.
    let (mut server, url) = start_serve(&fresh("measured"));
    let started = Instant::now();
    let told = Arc::new(Mutex::new(Vec::new()));
    assert!(serve_client(url, "m-".into(), told.clone()).await);
    let measured = started.elapsed();
    server.kill().unwrap();
    server.wait().unwrap();
    let mut tally = Tally::new("serve writes", measured);
    for (round, fraction) in kill_fractions(crash_loops()).into_iter().enumerate() {
        let dir = fresh(&format!("r-{round}"));
        let (mut server, url) = start_serve(&dir);
        let told = Arc::new(Mutex::new(Vec::new()));
        let client = tokio::spawn(serve_client(url, format!("w{round}-"), told.clone()));
        // The kill comes once that fraction of the writes is acknowledged
        // (not after that fraction of the measured time: on a loaded
        // machine a round runs slower or faster than the measured one,
        // and a timed kill could land before the first write or after
        // the last).
        let target = ((SERVE_WRITES as f64 * fraction) as usize).clamp(1, SERVE_WRITES - 20);
        let deadline = Instant::now() + measured * 5 + Duration::from_secs(10);
        while told.lock().unwrap().len() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        server.kill().unwrap();
        server.wait().unwrap();
        let finished = client.await.unwrap();
        let told = told.lock().unwrap().clone();
        tally.record(
            fraction,
            !finished && !told.is_empty(),
            format!("{} of {SERVE_WRITES} writes acknowledged", told.len()),
        );
        let what = format!("round {round}");
        check_clean(&dir, &[], &what);
        let replica = Replica::open(&dir, ReplicaConfig::default()).expect("reopens");
        check_store_invariants(&replica);
        let owed = owed_ids(&replica);
        for (id, rev) in &told {
            let leaves = replica.leaves(id).unwrap();
            assert!(
                leaves.iter().any(|l| l.rev.to_string() == *rev),
                "{what}: acknowledged {id} {rev} is lost"
            );
            assert!(owed.contains(id), "{what}: {id} is not queued for the push");
        }
    }
    tally.assert_mostly_mid();
}
