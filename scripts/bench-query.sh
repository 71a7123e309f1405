#!/usr/bin/env bash
# bench-query.sh: settee's queries (views, Mango _find) against PouchDB 9.0.0 +
# pouchdb-find 9.0.0 on the same app-shaped course corpus, in one interleaved run.
#
# Usage:
#   scripts/bench-query.sh [--cards N] [--rounds R (3)] [--seed S (42)] [--tags T (200)]
#                          [--pouch "node:leveldb browser:memory"] [--views elo,getTags]
#                          [--out DIR] [--no-build] [--json]
#
#   --cards    cards in the corpus (default $SETTEE_QUERY_BENCH_CARDS, else 100000); the
#              corpus also holds one DISPLAYABLE_DATA per card (+1 per 50), the TAG
#              documents, CourseConfig and the app's three design documents
#   --rounds   rounds; each runs settee's bench once, then pouch-query.js once per --pouch
#              configuration (default 3)
#   --pouch    PouchDB configurations, BUILD:ADAPTER (default "node:leveldb"): node:leveldb
#              (PouchDB's Node build on disk, Node's default), node:memory (memdown),
#              browser:memory (pouchdb/lib/index-browser.js, what a web app runs: it compiles
#              a view's map function once, where the Node build starts a new V8 context for
#              every document it maps; see pouch-query.js --build)
#   --views    the views PouchDB builds and queries (default elo,getTags; the browser build
#              spends about 500 s on getTags at 100k cards): passed to pouch-query.js
#   --out      results directory (default target/bench/query-<UTC stamp>)
#   --no-build use the query bench executable already built (the newest
#              target/release/deps/query-*), no `cargo bench --no-run`
#   --json     print the measurement lines on stdout; progress and the table go to stderr
#
# What it does:
#   1. `npm ci` in scripts/bench when its node_modules is missing; builds the bench
#      with `cargo bench --bench query --no-run` and runs its executable directly.
#   2. Writes the corpus once as NDJSON (`<query bench> --bench --corpus-out FILE`,
#      benches/common/corpus.rs), so both sides index byte-identical documents.
#   3. R rounds of: settee (the query bench: a fresh replica, every measurement it
#      has), then PouchDB once per --pouch configuration (scripts/bench/pouch-query.js
#      --docs FILE: a fresh database).
#   4. Writes every line, with its round, to <out>/runs.jsonl and prints a table of
#      medians per bench with the ratio PouchDB / settee (above 1: settee is faster),
#      to <out>/summary.md too. Checks that both sides returned the same number of rows
#      where both report rows for the same reps.
#
# The line format (both sides; one JSON object per line on stdout, other lines ignored):
#
#   {"bench":"view_build_elo","side":"settee","engine":"builtin","ms":812.4,
#    "cpu_ms":1390,"reps":1,"rows":1,"cards":100000,"docs":202203}
#
#   bench   what was measured; the same name on both sides means the same operation on
#           the same data (the list below); a side may skip any
#   side    "settee" or "pouchdb" (filled in from the source when missing)
#   engine  which implementation: settee "builtin" (the Rust views), "js" (design-doc
#           JavaScript views), "mango" (_find), "commit" (load); PouchDB
#           "pouchdb-leveldb", "pouchdb-memory", "pouchdb-browser-memory". The table has
#           one row per PouchDB engine and settee engine.
#   ms      wall milliseconds, the mean per call when reps > 1 (required)
#   cpu_ms, reps, rows (rows/docs returned, summed over the reps), cards, docs: optional
#
# Bench names (queries in full: scripts/bench/pouch-query.js; the corpus:
# benches/common/corpus.rs; keep both sides' parameters identical):
#   load                     all documents written into a fresh database/replica
#   view_build_elo           build `elo` from nothing + {limit: 1} (PouchDB: the first query)
#   view_build_getTags       the same for `getTags`
#   view_build_all           both views (settee: one warm-up of both; PouchDB: the two added)
#   view_query_elo           {limit: 1} on the built view, mean of 20; view_query_getTags likewise
#   view_query_elo_page      {startkey: 700 + (37k mod 600), limit: 20}, mean of 200
#   view_query_getTags_keys  {keys: 20 card ids (corpus::pick_card(20k + j))}, mean of 200
#   find_scan                {'elo.global.count': {$gt: 16}}, limit 25, no index (reads all), mean of 3
#   find_regex               {docType: 'DISPLAYABLE_DATA', 'data.0.data': {$regex: '.*goroutine.*'}}, mean of 3
#   find_cards_1000          {docType: 'CARD'}, limit 1000, no index, mean of 3
#   find_index_create        createIndex / _index of fields [docType, elo.global.score] (pouchdb-find
#                            builds the index inside createIndex)
#   find_indexed_first       first {docType: 'CARD', 'elo.global.score': {$gt: 1000}}, limit 25 (builds it)
#   find_indexed             the same with $gt 700 + (53k mod 600), warm, mean of 50 (PouchDB
#                            returns short pages here: apache/pouchdb#6263, noted in the table)
#   find_cards_1000_indexed  {docType: 'CARD'}, limit 1000 with that index present, mean of 3
#
# Needs: node + npm, cargo, python3.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

cards="${SETTEE_QUERY_BENCH_CARDS:-100000}"
rounds=3
seed="${SETTEE_QUERY_BENCH_SEED:-42}"
tags="${SETTEE_QUERY_BENCH_TAGS:-200}"
pouch_configs="node:leveldb"
views="elo,getTags"
out=""
build=1
json=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "bench-query: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --cards) cards="${2:?--cards needs a value}"; shift 2 ;;
    --rounds) rounds="${2:?--rounds needs a value}"; shift 2 ;;
    --seed) seed="${2:?--seed needs a value}"; shift 2 ;;
    --tags) tags="${2:?--tags needs a value}"; shift 2 ;;
    --pouch) pouch_configs="${2:?--pouch needs a value}"; shift 2 ;;
    --views) views="${2:?--views needs a value}"; shift 2 ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    --no-build) build=0; shift ;;
    --json) json=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "bench-query: unknown argument $1" >&2; usage 2 ;;
  esac
done
for v in cards rounds tags; do [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "--$v must be a positive integer"; done
[[ "$seed" =~ ^[0-9]+$ ]] || die "--seed must be a non-negative integer"
for pc in $pouch_configs; do
  case "$pc" in node:leveldb|node:memory|browser:memory) ;; *) die "--pouch: unknown configuration '$pc'" ;; esac
done
command -v python3 > /dev/null || die "python3 is required"
command -v node > /dev/null || die "node is required"

exec 3>&1
[[ "$json" == 1 ]] && exec 1>&2

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="${out:-target/bench/query-$stamp}"
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"
runs_file="$out/runs.jsonl"
: > "$runs_file"

# ---- installs and build ------------------------------------------------------
if [[ ! -d scripts/bench/node_modules ]]; then
  echo "==> npm ci in scripts/bench (once)"
  (cd scripts/bench && npm ci --no-audit --no-fund)
fi
target="${CARGO_TARGET_DIR:-$root/target}"
if [[ "$build" == 1 ]]; then
  echo "==> cargo bench --bench query --no-run"
  bench_exe="$(cargo bench --bench query --no-run --message-format=json 2> "$out/logs/build.err" |
    python3 -c '
import json, sys
exe = ""
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "query" and m.get("executable"):
        exe = m["executable"]
print(exe)')" || { cat "$out/logs/build.err" >&2; die "cargo bench --no-run failed"; }
else
  bench_exe="$(ls -t "$target"/release/deps/query-* 2> /dev/null | grep -v '\.d$' | head -n 1 || true)"
fi
[[ -n "$bench_exe" && -x "$bench_exe" ]] || die "the query bench executable is missing (build it, or drop --no-build)"
echo "==> settee query bench: $bench_exe"

export SETTEE_QUERY_BENCH_CARDS="$cards" SETTEE_QUERY_BENCH_SEED="$seed" SETTEE_QUERY_BENCH_TAGS="$tags"

# ---- corpus ------------------------------------------------------------------
corpus="$out/corpus.ndjson"
trap 'rm -f "$corpus"' EXIT
echo "==> corpus: $cards cards, $tags tags, seed $seed -> $corpus"
"$bench_exe" --bench --corpus-out "$corpus" > "$out/logs/corpus.jsonl" 2> "$out/logs/corpus.err" ||
  { cat "$out/logs/corpus.err" >&2; die "writing the corpus failed"; }
cat "$out/logs/corpus.jsonl"

# ---- meta --------------------------------------------------------------------
git_rev="$(git rev-parse --short HEAD 2> /dev/null || echo unknown)"
[[ -z "$(git status --porcelain -- src benches Cargo.toml Cargo.lock 2> /dev/null)" ]] || git_rev="$git_rev+dirty"
cpu_model="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2> /dev/null || true)"
cat > "$out/meta.json" << EOF
{"stamp":"$stamp","cards":$cards,"tags":$tags,"seed":$seed,"rounds":$rounds,"pouch":"$pouch_configs","git":"$git_rev",
 "node":"$(node --version)","pouchdb":"$(node -p 'require("./scripts/bench/node_modules/pouchdb/package.json").version')",
 "pouchdb_find":"$(node -p 'require("./scripts/bench/node_modules/pouchdb-find/package.json").version')",
 "cpus":$(nproc),"cpu_model":"${cpu_model//\"/}","kernel":"$(uname -r)"}
EOF
echo "==> results in $out"

# ---- the interleaved rounds --------------------------------------------------
# collect SIDE ROUND FILE: the measurement lines of FILE into runs.jsonl, tagged.
collect() {
  python3 - "$1" "$2" "$3" "$(cut -d' ' -f1 /proc/loadavg)" >> "$runs_file" << 'PY'
import json, sys
side, rnd, path, load1 = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
for line in open(path):
    line = line.strip()
    if not line.startswith("{"):
        continue
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    if "bench" not in rec or "ms" not in rec:
        continue
    rec.setdefault("side", side)
    rec["round"] = rnd
    rec["load1"] = load1
    print(json.dumps(rec))
PY
}

show() {
  python3 - "$1" << 'PY'
import json, sys
for l in open(sys.argv[1]):
    if l.startswith("{"):
        r = json.loads(l)
        side, engine, rows = r.get("side", "?"), r.get("engine", ""), r.get("rows", "-")
        print(f"    {side:7} {engine:22} {r['bench']:24} {r['ms']:>12.3f} ms  rows {rows}")
PY
}

for r in $(seq 1 "$rounds"); do
  echo "==> round $r/$rounds: settee"
  sync
  "$bench_exe" --bench > "$out/logs/settee-$r.jsonl" 2> "$out/logs/settee-$r.err" ||
    die "settee's query bench failed (see $out/logs/settee-$r.err)"
  show "$out/logs/settee-$r.jsonl"
  collect settee "$r" "$out/logs/settee-$r.jsonl"
  for pc in $pouch_configs; do
    tag="pouchdb-${pc/:/-}-$r"
    echo "==> round $r/$rounds: PouchDB ($pc)"
    sync
    node scripts/bench/pouch-query.js --docs "$corpus" --build "${pc%%:*}" --adapter "${pc#*:}" \
      --views "$views" > "$out/logs/$tag.jsonl" 2> "$out/logs/$tag.err" ||
      die "pouch-query.js failed (see $out/logs/$tag.err)"
    show "$out/logs/$tag.jsonl"
    collect pouchdb "$r" "$out/logs/$tag.jsonl"
  done
done

# ---- summary -----------------------------------------------------------------
python3 - "$out" << 'PY'
import json, os, statistics, sys

out = sys.argv[1]
meta = json.load(open(os.path.join(out, "meta.json")))
recs = [json.loads(l) for l in open(os.path.join(out, "runs.jsonl")) if l.strip()]
order = []
for r in recs:
    if r["bench"] not in order:
        order.append(r["bench"])

def med(rs):
    return statistics.median(r["ms"] for r in rs) if rs else None

def fmt(ms):
    if ms is None:
        return "–"
    return f"{ms:,.3f}".replace(",", " ") if ms < 10 else f"{ms:,.1f}".replace(",", " ")

lines = []
p = lines.append
rounds = max((r["round"] for r in recs), default=0)
p(f"# settee vs PouchDB {meta['pouchdb']} (pouchdb-find {meta['pouchdb_find']}; {meta['pouch']}): queries, "
  f"{meta['cards']} cards ({meta['stamp']})")
p("")
p(f"git {meta['git']}, node {meta['node']}, {meta['cpus']} CPUs ({meta['cpu_model']}), Linux {meta['kernel']}; "
  f"{rounds} interleaved round(s), medians; ms is wall time per call (mean over the bench's reps). "
  "ratio = PouchDB / settee (above 1: settee is faster).")
p("")
p("| bench | PouchDB engine | PouchDB ms | settee engine | settee ms | ratio | rows (PouchDB / settee) |")
p("| --- | --- | --- | --- | --- | --- | --- |")
problems = []
notes = []
# Differences that are PouchDB's, not settee's: its indexed $gt page applies the limit
# before dropping the rows equal to the bound, so it comes back short (even empty
# when 25 or more documents tie at the bound): apache/pouchdb#6263, closed as wontfix.
KNOWN = {
    "find_indexed_first": "PouchDB's $gt page is short (apache/pouchdb#6263)",
    "find_indexed": "PouchDB's $gt pages are short (apache/pouchdb#6263)",
}

def engines_of(b, side):
    found = []
    for r in recs:
        if r["bench"] == b and r["side"] == side and r.get("engine", "") not in found:
            found.append(r.get("engine", ""))
    return found

def rows_of(rs):
    return sorted({r.get("rows") for r in rs if r.get("rows") is not None})

for b in order:
    sides = {side: {e: [r for r in recs if r["bench"] == b and r["side"] == side and r.get("engine", "") == e]
                    for e in engines_of(b, side)} for side in ("pouchdb", "settee")}
    for pe, pouch in (sides["pouchdb"] or {"–": []}).items():
        for se, s in (sides["settee"] or {"–": []}).items():
            pm, sm = med(pouch), med(s)
            prow, srow = rows_of(pouch), rows_of(s)
            ratio = f"{pm / sm:.1f}×" if pm is not None and sm else "–"
            p(f"| {b} | {pe} | {fmt(pm)} | {se} | {fmt(sm)} | {ratio} | "
              f"{', '.join(map(str, prow)) or '–'} / {', '.join(map(str, srow)) or '–'} |")
            if prow and srow and {r.get("reps") for r in pouch} == {r.get("reps") for r in s} and prow != srow:
                known = KNOWN.get(b)
                (notes if known else problems).append(
                    f"{b} ({pe} vs {se}): rows differ, PouchDB {prow} vs settee {srow}" + (f": {known}" if known else ""))
p("")
loads = [r["load1"] for r in recs if "load1" in r]
if loads:
    p(f"Machine load (1-min average as each side finished): {min(loads):.2f}–{max(loads):.2f}.")
p("")
for n in notes:
    p(f"Note: {n}.")
if notes:
    p("")
if problems:
    p(f"**WARNING: {len(problems)} row-count mismatch(es):**")
    p("")
    for w in problems:
        p(f"* {w}")
else:
    p("Checks: where both sides report rows for the same reps, they agree.")
text = "\n".join(lines) + "\n"
open(os.path.join(out, "summary.md"), "w").write(text)
print()
print(text, end="")
PY
echo "==> $out/summary.md, $out/runs.jsonl"
[[ "$json" == 1 ]] && cat "$runs_file" >&3
exit 0
