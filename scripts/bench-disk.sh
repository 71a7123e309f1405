#!/usr/bin/env bash
# bench-disk.sh: how a replica's size on disk evolves under incremental updates
# (issue 10, point 6), beside the server's own database size.
#
# Usage:
#   scripts/bench-disk.sh [--cards 100000] [--rounds 10] [--percent 1] [--out DIR]
#                         [--data DIR] [--no-build]
#
#   --cards    cards in the corpus (`fixtures/seed-course.mjs --cards N --tags 200
#              --realistic`, recreated on every run because the rounds change it)
#   --rounds   update rounds (default 10)
#   --percent  share of the cards updated per round (default 1): each is rewritten on
#              the server with `_bulk_docs` to a body of about 1 KB (a `disk_round`
#              counter and a padding string), a deterministic sample per round
#   --out      results directory (default target/bench-disk/<UTC stamp>)
#   --data     PouchDB Server data directory (default ${TMPDIR:-/tmp}/settee-disk-pouchdb-data;
#              not the one scripts/bench-pull.sh keeps its corpora in)
#   --no-build skip `cargo build --release --bin settee`
#
# What it does: starts PouchDB Server on disk (leveldb) on a free 127.0.0.1 port,
# seeds course-disk-N, pulls it cold into two replicas: "plain" (`--compact-above 0`,
# never compacted) and "auto" (the default automatic trigger), then per round updates
# the sample on the server and pulls both replicas incrementally. After the cold pull
# and every round it records, as one JSON line in <out>/rounds.jsonl and one row of
# the table: the bytes of each replica directory (`du -sb`), the server's database
# directory (`du -sb` of its leveldb) and what `GET /db` reports (`disk_size`,
# `sizes.file` when the server gives them), and the pull's wall time. At the end it
# copies the plain replica, runs `settee compact` on the copy, and prints the copy's
# size; `settee compact --usage` of the plain replica (keys and bytes per tree) after
# the cold pull and after the last round goes to <out>/usage-*.json.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

cards=100000
rounds=10
percent=1
out=""
data_dir="${TMPDIR:-/tmp}/settee-disk-pouchdb-data"
build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cards) cards="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --percent) percent="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --data) data_dir="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "bench-disk: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$out" ]] || out="target/bench-disk/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out" "$data_dir"
out="$(cd "$out" && pwd)"

if [[ ! -d scripts/pouchdb-server/node_modules ]]; then
  (cd scripts/pouchdb-server && npm ci --silent)
fi
if [[ "$build" == 1 ]]; then
  cargo build --release --bin settee
fi
settee="${SETTEE_BIN:-$root/target/release/settee}"
[[ -x "$settee" ]] || { echo "bench-disk: no $settee; build it or drop --no-build" >&2; exit 1; }

# shellcheck source=scripts/lib/pouchdb-server.sh
. scripts/lib/pouchdb-server.sh
trap pouchdb_server_stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pouchdb_server_start "$out/server.err" --dir "$data_dir"
base="$base_url"
db="course-disk-$cards"
echo "==> PouchDB Server $base (data $data_dir); seeding $db" >&2
node fixtures/seed-course.mjs --url "$base" --db "$db" --cards "$cards" --tags 200 --realistic --recreate > "$out/seed.json"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/settee-bench-disk.XXXXXX")"
trap 'pouchdb_server_stop; rm -rf "$scratch"' EXIT
plain="$scratch/plain"; auto="$scratch/auto"

pull() { # pull DIR EXTRA-ARGS...: prints the wall ms of the pull
  local dir="$1"; shift
  local t0 t1
  t0="$(date +%s%N)"
  "$settee" pull "$base/$db" "$dir" --json --quiet "$@" > "$out/last-pull.json"
  t1="$(date +%s%N)"
  echo $(( (t1 - t0) / 1000000 ))
}

record() { # record ROUND PLAIN_MS AUTO_MS
  python3 - "$1" "$2" "$3" "$(du -sb "$plain" | cut -f1)" "$(du -sb "$auto" | cut -f1)" \
    "$(du -sb "$data_dir/dbs" | cut -f1)" "$(curl -fsS "$base/$db")" << 'PY' | tee -a "$out/rounds.jsonl"
import json, sys
r, pms, ams, plain, auto, server_dir, info = sys.argv[1:]
info = json.loads(info)
sizes = info.get("sizes") or {}
print(json.dumps({"round": int(r), "plain_bytes": int(plain), "auto_bytes": int(auto),
  "server_dir_bytes": int(server_dir), "server_disk_size": info.get("disk_size"),
  "server_sizes_file": sizes.get("file"), "doc_count": info.get("doc_count"),
  "plain_pull_ms": int(pms), "auto_pull_ms": int(ams)}))
PY
}

update_round() { # update_round ROUND: rewrites PERCENT% of the cards to ~1 KB bodies
  python3 - "$base/$db" "$1" "$cards" "$percent" << 'PY'
import json, random, sys, urllib.request
url, rnd, cards, percent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rng = random.Random(1000 + rnd)
ids = sorted(f"c-{i:06d}" for i in rng.sample(range(cards), max(1, int(cards * percent / 100))))
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())
docs = []
for i in range(0, len(ids), 500):
    rows = call("POST", "/_all_docs?include_docs=true", {"keys": ids[i:i + 500]})["rows"]
    docs += [row["doc"] for row in rows if row.get("doc")]
for d in docs:
    d["disk_round"] = rnd
    d.pop("pad", None)
    size = len(json.dumps(d))
    d["pad"] = "x" * max(0, 1000 - size)
for i in range(0, len(docs), 500):
    res = call("POST", "/_bulk_docs", {"docs": docs[i:i + 500]})
    bad = [r for r in res if not r.get("ok")]
    if bad:
        sys.exit(f"bench-disk: updates refused: {bad[:3]}")
print(len(docs), file=sys.stderr)
PY
}

echo "==> cold pulls" >&2
pms="$(pull "$plain" --compact-above 0)"
ams="$(pull "$auto")"
record 0 "$pms" "$ams"
"$settee" compact "$plain" --usage --json > "$out/usage-cold.json"
for r in $(seq 1 "$rounds"); do
  echo "==> round $r: updating $percent% of $cards cards" >&2
  update_round "$r" 2>> "$out/updates.log"
  pms="$(pull "$plain" --compact-above 0)"
  ams="$(pull "$auto")"
  record "$r" "$pms" "$ams"
done
"$settee" compact "$plain" --usage --json > "$out/usage-last.json"
cp -a "$plain" "$scratch/manual"
"$settee" compact "$scratch/manual" --json > "$out/manual-compact.json"
"$settee" check "$scratch/manual" > "$out/check-manual.txt"
"$settee" check "$scratch/auto" > "$out/check-auto.txt"
"$settee" dump "$plain" > "$scratch/plain.dump"
"$settee" dump "$scratch/manual" > "$scratch/manual.dump"
"$settee" dump "$auto" > "$scratch/auto.dump"
cmp -s "$scratch/plain.dump" "$scratch/manual.dump" || echo "WARNING: the compacted copy's dump differs" >&2
cmp -s "$scratch/plain.dump" "$scratch/auto.dump" || echo "WARNING: the auto replica's dump differs" >&2

python3 - "$out" << 'PY' | tee "$out/summary.md"
import json, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/rounds.jsonl")]
manual = json.load(open(f"{out}/manual-compact.json"))
mb = lambda b: f"{b / 1048576:.1f}" if b is not None else "-"
cold = rows[0]
print("| after | replica, never compacted (MB) | x cold | replica, auto compaction (MB) | x cold | server leveldb dir (MB) | server disk_size (MB) | pull ms plain / auto |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    name = "cold pull" if r["round"] == 0 else f"round {r['round']}"
    print(f"| {name} | {mb(r['plain_bytes'])} | {r['plain_bytes'] / cold['plain_bytes']:.2f} | {mb(r['auto_bytes'])} | "
          f"{r['auto_bytes'] / cold['auto_bytes']:.2f} | {mb(r['server_dir_bytes'])} | {mb(r['server_disk_size'])} | "
          f"{r['plain_pull_ms']} / {r['auto_pull_ms']} |")
print(f"\n`settee compact` of the never-compacted replica after the last round: "
      f"{mb(manual['bytes_before'])} -> {mb(manual['bytes_after'])} MB in {manual['took_ms']} ms "
      f"({manual['entries']} entries, {mb(manual['live_bytes'])} MB of keys and values)")
for name in ("cold", "last"):
    u = json.load(open(f"{out}/usage-{name}.json"))
    trees = ", ".join(f"{t['name']} {t['keys']}/{mb(t['bytes'])}" for t in u["trees"] if t["keys"])
    print(f"\nusage after {name}: dir {mb(u['dir_bytes'])} MB, live {mb(u['live_bytes'])} MB; keys/MB per tree: {trees}")
PY
