#!/usr/bin/env bash
# bench-serve.sh: a cold PouchDB 9 replication from `settee serve` against the same
# replication from PouchDB Server holding the same database, in one interleaved run
# (issue 21: settee's endpoint >= 2x as fast).
#
# Usage:
#   scripts/bench-serve.sh [--cards N (10000)] [--runs R (3)] [--setting B/L (100/10)]
#                          [--data DIR] [--out DIR] [--no-build]
#
#   --cards    the corpus course-N (fixtures/seed-course.mjs --cards N --tags 200
#              --realistic), seeded once into --data and reused, as bench-pull.sh does
#   --runs     replications per source (default 3), alternating server, settee
#   --setting  PouchDB's batch_size/batches_limit (default 100/10, PouchDB's own defaults)
#   --data     PouchDB Server's data directory (default ${TMPDIR:-/tmp}/settee-bench-pouchdb-data,
#              shared with bench-pull.sh)
#   --no-build use the existing target/release/settee
#
# What it does: starts PouchDB Server on --data (leveldb on disk), seeds course-N if
# needed, `settee pull`s it into a fresh replica and starts `settee serve` on it; then
# RUNS times, interleaved: scripts/bench/pouch-pull.js (a fresh on-disk leveldb PouchDB)
# from PouchDB Server, then from settee serve. Each line of <out>/runs.jsonl is
# pouch-pull.js's record plus the source and the CPU seconds the serving process used
# during the replication. The summary (stderr and <out>/summary.md) gives the median wall
# time per source and the ratio server / settee (above 1: settee's endpoint is faster).
#
# Needs: node + npm, cargo, python3, curl.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=lib/pouchdb-server.sh
source scripts/lib/pouchdb-server.sh

cards=10000 runs=3 setting=100/10 build=1
data_dir="${TMPDIR:-/tmp}/settee-bench-pouchdb-data"
out="target/bench/serve-$(date -u +%Y%m%dT%H%M%SZ)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cards) cards="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --setting) setting="$2"; shift 2 ;;
    --data) data_dir="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "bench-serve: unknown argument $1" >&2; exit 2 ;;
  esac
done
bs="${setting%/*}" bl="${setting#*/}"
mkdir -p "$out" "$data_dir"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/settee-bench-serve.XXXXXX")"
settee_pid=""
cleanup() {
  [[ -n "$settee_pid" ]] && kill "$settee_pid" 2> /dev/null && wait "$settee_pid" 2> /dev/null
  pouchdb_server_stop
  rm -rf "$scratch"
}
trap cleanup EXIT

[[ -d scripts/pouchdb-server/node_modules ]] || (cd scripts/pouchdb-server && npm ci --silent)
[[ -d scripts/bench/node_modules ]] || (cd scripts/bench && npm ci --silent)
[[ "$build" == 1 ]] && cargo build --release --quiet
settee=target/release/settee

pouchdb_server_start "$out/server.err" --dir "$data_dir" --log-level warn
echo "==> PouchDB Server $base_url (pid $server_pid, data $data_dir)" >&2
db="course-$cards"
marker="$data_dir/seeded-$db-tags200.json"
have="$(curl -fsS "$base_url/$db" 2> /dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["doc_count"])' 2> /dev/null || true)"
want="$( [[ -f "$marker" ]] && python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["doc_count"])' "$marker" || true)"
if [[ -z "$want" || "$have" != "$want" ]]; then
  echo "==> seeding $db" >&2
  node fixtures/seed-course.mjs --url "$base_url" --db "$db" --cards "$cards" --tags 200 --realistic --recreate > "$marker.tmp"
  mv "$marker.tmp" "$marker"
fi

echo "==> settee pull $db" >&2
"$settee" pull "$base_url/$db" "$scratch/replica" --quiet
"$settee" serve "$scratch/replica" --port 0 --name "$db" > "$scratch/serve.out" 2> "$out/settee-serve.err" &
settee_pid=$!
for _ in $(seq 1 100); do grep -q '^serving ' "$scratch/serve.out" 2> /dev/null && break; sleep 0.1; done
settee_url="$(sed -n 's/^serving //p' "$scratch/serve.out")"
[[ -n "$settee_url" ]] || { echo "settee serve did not start; see $out/settee-serve.err" >&2; exit 1; }
echo "==> settee serve $settee_url (pid $settee_pid)" >&2

cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
for run in $(seq 1 "$runs"); do
  for source in server settee; do
    if [[ "$source" == server ]]; then url="$base_url/$db" pid="$server_pid"; else url="$settee_url" pid="$settee_pid"; fi
    before="$(cpu_s "$pid")"
    line="$(node scripts/bench/pouch-pull.js "$url" --batch-size "$bs" --batches-limit "$bl")"
    after="$(cpu_s "$pid")"
    echo "$line" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
r.update(source=sys.argv[1], run=int(sys.argv[2]), serving_cpu_s=round(float(sys.argv[4]) - float(sys.argv[3]), 2), cards=int(sys.argv[5]))
print(json.dumps(r))' "$source" "$run" "$before" "$after" "$cards" | tee -a "$out/runs.jsonl" >&2
  done
done

python3 - "$out/runs.jsonl" "$setting" << 'PY' | tee "$out/summary.md" >&2
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(source, key):
    return statistics.median(r[key] for r in runs if r["source"] == source)
print(f"PouchDB 9 cold replication, {runs[0]['cards']} cards, batch {sys.argv[2]}, {len(runs) // 2} runs each (medians)\n")
print("| source | wall ms | docs written | serving CPU s |")
print("|---|---|---|---|")
for s in ("server", "settee"):
    print(f"| {s} | {med(s, 'wall_ms'):.0f} | {med(s, 'docs_written'):.0f} | {med(s, 'serving_cpu_s'):.2f} |")
print(f"\nsettee serve is {med('server', 'wall_ms') / med('settee', 'wall_ms'):.2f}x as fast as PouchDB Server")
PY
