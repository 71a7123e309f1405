//! What the hand-timed benchmarks (`store_write`, `store_memory`, `views`)
//! share: environment knobs, the process's CPU and peak RSS from `/proc`,
//! and the `--probe` child-process protocol that lets each measured run
//! start from a fresh allocator and fresh sled threads.
//!
//! Each bench includes this with `mod common;` and uses part of it;
//! `corpus` is the app-shaped course corpus the query benchmarks share
//! with PouchDB (`scripts/bench-query.sh`).

#![allow(dead_code)]

pub mod corpus;

/// The environment variable `name`, or `default`.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// User + system CPU seconds of this process (the machine is shared, so
/// wall time alone overstates the work).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, s)| s).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields after "(comm) ": state is index 0, utime 11, stime 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// This process's peak resident set size, KiB (`VmHWM`).
pub fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// How this bench executable was started.
pub enum Invocation {
    /// As a child: `--probe KIND N`, one measured run.
    Probe { kind: String, n: u64 },
    /// By `cargo bench`: run the probes and print the table.
    Bench,
    /// By `cargo test --benches` (once, as a test): do nothing costly.
    Test,
}

/// Reads the arguments; on `Test`, says how to run bench `name` for real.
pub fn invocation(name: &str) -> Invocation {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--probe") {
        return Invocation::Probe {
            kind: args[at + 1].clone(),
            n: args[at + 2].parse().unwrap(),
        };
    }
    if args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench") {
        println!("{name}: run with `cargo bench --bench {name}`");
        return Invocation::Test;
    }
    Invocation::Bench
}
