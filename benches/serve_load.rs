//! `settee serve` under load: `cargo bench --bench serve_load`.
//!
//! Builds a replica of `SETTEE_LOAD_CARDS` synthetic go-course cards
//! (default 10000, with their `DISPLAYABLE_DATA`, 200 tags and the app's
//! design documents: `benches/common/corpus.rs`), serves it on a loopback
//! port, warms the `elo` view, then runs `SETTEE_LOAD_CLIENTS` clients
//! (default 50) for `SETTEE_LOAD_SECS` seconds (default 60), each sending
//! its next request as soon as the last is answered, in turn: a document
//! `GET`, an `_all_docs` page of 20 with documents, a `_find` page of 25
//! (through an `_index` on `elo.global.score`, made first),
//! an `elo` view page of 10, and a `_changes` page of 50. Prints requests
//! per second, p50/p99 latency per kind and overall, errors (any answer
//! but 200), and the process's CPU seconds. `SETTEE_LOAD_KINDS=get,view`
//! sends only those kinds.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use common::{corpus, cpu_seconds, env_or};
use serde_json::json;
use settee::serve::ServeConfig;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KINDS: [&str; 5] = ["get", "_all_docs", "_find", "view", "_changes"];

fn main() {
    let cards: u64 = env_or("SETTEE_LOAD_CARDS", "10000").parse().unwrap();
    let clients: usize = env_or("SETTEE_LOAD_CLIENTS", "50").parse().unwrap();
    let secs: u64 = env_or("SETTEE_LOAD_SECS", "60").parse().unwrap();
    // `SETTEE_LOAD_KINDS=get,view`: only these kinds of request.
    let only: Vec<usize> = env_or("SETTEE_LOAD_KINDS", &KINDS.join(","))
        .split(',')
        .map(|k| {
            KINDS
                .iter()
                .position(|x| *x == k)
                .expect("a kind of request")
        })
        .collect();
    let only = Arc::new(only);
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus::generate(cards, 200, 42);
    let replica = corpus::build_replica(dir.path(), &corpus.docs);
    let card_ids = Arc::new(corpus.card_ids.clone());
    let docs = replica.doc_count().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(settee::serve::serve(
            replica,
            ServeConfig::builder()
                .db_name("course")
                .bind("127.0.0.1:0".parse().unwrap())
                .build()
                .unwrap(),
            move |addr| {
                let _ = addr_tx.send(addr);
            },
            async {
                let _ = stop_rx.await;
            },
        ));
        let base = format!("http://{}/course", addr_rx.await.unwrap());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .unwrap();
        let index = json!({"index": {"fields": ["elo.global.score"]}});
        let made = http.post(format!("{base}/_index")).json(&index).send().await.unwrap();
        assert_eq!(made.status(), 200, "{:?}", made.text().await);
        let warm = Instant::now();
        let view = format!("{base}/_design/elo/_view/elo?limit=1");
        assert_eq!(http.get(&view).send().await.unwrap().status(), 200);
        eprintln!(
            "serve_load: {docs} documents, elo view warmed in {:.1} s; {clients} clients for {secs} s",
            warm.elapsed().as_secs_f64()
        );
        let latencies: Arc<Mutex<Vec<Vec<Duration>>>> =
            Arc::new(Mutex::new(vec![Vec::new(); KINDS.len()]));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (http, base, ids) = (http.clone(), base.clone(), card_ids.clone());
                let (latencies, errors) = (latencies.clone(), errors.clone());
                let only = only.clone();
                tokio::spawn(async move {
                    let mut mine = vec![Vec::new(); KINDS.len()];
                    let mut k = c as u64;
                    while Instant::now() < deadline {
                        let kind = only[(k % only.len() as u64) as usize];
                        let card = corpus::pick_card(&ids, k);
                        let request = match kind {
                            0 => http.get(format!("{base}/{card}")),
                            1 => http.get(format!(
                                "{base}/_all_docs?limit=20&include_docs=true&startkey=%22{card}%22"
                            )),
                            2 => http.post(format!("{base}/_find")).json(&json!({
                                "selector": {"elo.global.score": {"$gt": 900 + (k % 200)}},
                                "limit": 25
                            })),
                            3 => http.get(format!(
                                "{base}/_design/elo/_view/elo?startkey={}&limit=10",
                                900 + k % 200
                            )),
                            _ => http.get(format!("{base}/_changes?since={}&limit=50", k % 1000)),
                        };
                        let sent = Instant::now();
                        match request.send().await {
                            Ok(resp) if resp.status() == 200 => {
                                let _ = resp.bytes().await;
                                mine[kind].push(sent.elapsed());
                            }
                            Ok(resp) => errors
                                .lock()
                                .unwrap()
                                .push(format!("{}: {}", KINDS[kind], resp.status())),
                            Err(e) => errors.lock().unwrap().push(format!("{}: {e}", KINDS[kind])),
                        }
                        k += clients as u64;
                    }
                    let mut all = latencies.lock().unwrap();
                    for (kind, l) in mine.into_iter().enumerate() {
                        all[kind].extend(l);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_before;
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
        let mut latencies = latencies.lock().unwrap().clone();
        let pct = |l: &mut Vec<Duration>, p: f64| -> f64 {
            l.sort();
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let mut everything = Vec::new();
        println!("| request | count | per s | p50 ms | p99 ms |");
        println!("| --- | --- | --- | --- | --- |");
        for (kind, l) in latencies.iter_mut().enumerate() {
            everything.extend(l.iter().copied());
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} |",
                KINDS[kind],
                l.len(),
                l.len() as f64 / wall,
                pct(l, 0.5),
                pct(l, 0.99)
            );
        }
        println!(
            "| all | {} | {:.0} | {:.2} | {:.2} |",
            everything.len(),
            everything.len() as f64 / wall,
            pct(&mut everything, 0.5),
            pct(&mut everything, 0.99)
        );
        let errors = errors.lock().unwrap();
        println!(
            "serve_load: {wall:.1} s, {cpu:.1} CPU s (client and server in one process), {} errors{}",
            errors.len(),
            errors.first().map(|e| format!(", first: {e}")).unwrap_or_default()
        );
        assert!(errors.is_empty(), "{} requests failed", errors.len());
    });
}
