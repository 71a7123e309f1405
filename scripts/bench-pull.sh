#!/usr/bin/env bash
# bench-pull.sh: settee vs PouchDB 9 (and rouchdb 0.5.1, and the server's own raw
# dump), cold one-shot pulls from the same PouchDB Server and the same corpus, in one
# interleaved run; also checks how settee's peak memory grows with the corpus size.
#
# Usage:
#   scripts/bench-pull.sh [--sizes "10000 100000"] [--runs 3] [--settings "1000/5 100/10"]
#                         [--orders "id shuffled"] [--clients "settee pouchdb rouchdb raw"]
#                         [--anchor DIR] [--json] [--out DIR] [--data DIR] [--no-build]
#                         [--base BIN]
#
#   --sizes     cards per corpus; each size N is the database course-N, seeded once with
#               `fixtures/seed-course.mjs --cards N --tags 200 --realistic`, the reference
#               corpus shape of ../shared/anchor-bench (default "10000 100000")
#   --runs      runs per (size, setting) and client (default 3)
#   --settings  batch_size/batches_limit pairs given to both clients (default "1000/5 100/10")
#   --out       results directory (default target/bench/<UTC stamp>)
#   --data      PouchDB Server data directory, kept between invocations so the corpus
#               is seeded only once (default ${TMPDIR:-/tmp}/settee-bench-pouchdb-data)
#   --no-build  skip `cargo build --release` and use the existing target/release/settee
#   --orders    corpus insertion orders (default "id"): "id" is course-N, cards inserted in id
#               order (PouchDB Server's _changes then lists them in id order); "shuffled" is
#               course-N-shuffled, the same cards seeded with --shuffle, so the feed lists them
#               out of id order, as a sharded CouchDB's does
#   --clients   which clients run, interleaved in this order (default "settee pouchdb raw",
#               plus rouchdb when its binary exists): settee (the streamed feed), paged
#               (settee with --feed paged: one _changes request per batch), pouchdb (PouchDB 9), rouchdb
#               (rouchdb 0.5.1 from <anchor>/rouchdb-bench, built once outside the crate in
#               /tmp/rouchdb-bench with `cargo build --release`; env ROUCHDB_BIN overrides),
#               raw (one `curl _all_docs?include_docs=true`, the server's own dump rate)
#   --anchor    the anchor-bench directory (default ../shared/anchor-bench next to the repo,
#               or /work/shared/anchor-bench)
#   --base      another settee binary (say, main's release build copied aside), run as client
#               "base" with the same arguments and checks as settee: a before/after
#               comparison interleaved in one run (give "base" in --clients to place it)
#   --json      print the run records (JSON lines) on stdout; progress and the summary go to stderr
#
# Quick smoke (well under two minutes once built):
#   scripts/bench-pull.sh --sizes 2000 --runs 1 --settings 1000/5
#
# What it does:
#   1. `npm ci` in scripts/pouchdb-server and scripts/bench when their node_modules are
#      missing (PouchDB Server 4.2.0 and PouchDB 9.0.0, pinned by their lock files), and
#      `cargo build --release`.
#   2. Starts PouchDB Server on disk (leveldb, admin party) on a free 127.0.0.1 port
#      and seeds course-N for every size unless the database already holds the
#      doc_count recorded when it was seeded.
#   3. For every size and setting: restarts the server (a JIT-warm server is faster,
#      so every group starts from a fresh process), then RUNS times: `settee pull`
#      into a fresh temporary replica, then scripts/bench/pouch-pull.js (a fresh
#      on-disk leveldb PouchDB). Each client runs under `/usr/bin/time -v`.
#   4. Appends one JSON line per client run to <out>/runs.jsonl: wall_ms (settee:
#      timings.total_ms; PouchDB: the replicate() call; rouchdb: its replicate call; raw:
#      curl's time_total), docs/s, MB/s (the database's raw _all_docs?include_docs=true
#      bytes / wall), docs_read, docs_written, doc_write_failures, client user+sys CPU s and
#      CPU µs per document written, max RSS MB, process wall s, and the CPU seconds the
#      server process used during the run (/proc/<pid>/stat utime+stime before and after),
#      and the HTTP requests the client made: the server runs at log level info, which
#      writes one `IP - - METHOD PATH STATUS` line per answered request to its log.txt, and
#      the lines added during the run are counted (the same count for every client), and
#      load1, the machine's 1-minute load average as the run ends (the machine is shared).
#   5. Prints a Markdown summary (medians per size x setting x client, settee/PouchDB
#      ratios, `settee peak RSS <largest>/<smallest> = X.XX` at setting 1000/5) and
#      writes it to <out>/summary.md.
# Every run is checked: doc_write_failures must be 0, the client must exit 0, and
# settee's docs_written must equal PouchDB's (leaf revisions); any miss is a loud
# WARNING here and in the summary. Only loopback addresses are used. The server is
# stopped when the script exits, however it exits.
#
# Needs: node + npm, cargo, python3 (summary, medians, JSON when jq is missing),
# curl, GNU time at /usr/bin/time (installed with apt-get if missing). jq is used
# for JSON when it is installed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# ---- arguments ---------------------------------------------------------------
sizes="10000 100000"
runs=3
settings="1000/5 100/10"
out=""
data_dir="${TMPDIR:-/tmp}/settee-bench-pouchdb-data"
build=1
orders="id"
clients=""
anchor=""
json=0
base_bin=""
for a in "$root/../shared/anchor-bench" "$root/../../shared/anchor-bench" /work/shared/anchor-bench; do
  [[ -z "$anchor" && -d "$a/rouchdb-bench" ]] && anchor="$(cd "$a" && pwd)"
done
rouchdb_bin="${ROUCHDB_BIN:-/tmp/rouchdb-bench/target/release/rouchdb-bench}"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "bench-pull: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --sizes) sizes="${2:?--sizes needs a value}"; shift 2 ;;
    --runs) runs="${2:?--runs needs a value}"; shift 2 ;;
    --settings) settings="${2:?--settings needs a value}"; shift 2 ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    --data) data_dir="${2:?--data needs a value}"; shift 2 ;;
    --no-build) build=0; shift ;;
    --orders) orders="${2:?--orders needs a value}"; shift 2 ;;
    --clients) clients="${2:?--clients needs a value}"; shift 2 ;;
    --anchor) anchor="${2:?--anchor needs a value}"; shift 2 ;;
    --json) json=1; shift ;;
    --base) base_bin="${2:?--base needs a value}"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "bench-pull: unknown argument $1" >&2; usage 2 ;;
  esac
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
for n in $sizes; do [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "--sizes: '$n' is not a positive integer"; done
for s in $settings; do [[ "$s" =~ ^[1-9][0-9]*/[1-9][0-9]*$ ]] || die "--settings: '$s' is not BATCH_SIZE/BATCHES_LIMIT"; done
[[ -n "${sizes// /}" && -n "${settings// /}" ]] || die "--sizes and --settings must not be empty"
for o in $orders; do [[ "$o" == id || "$o" == shuffled ]] || die "--orders: '$o' is not id or shuffled"; done
if [[ -z "$clients" ]]; then
  clients="settee pouchdb raw"
  [[ -x "$rouchdb_bin" ]] && clients="settee pouchdb rouchdb raw"
fi
for c in $clients; do
  case "$c" in settee|paged|pouchdb|rouchdb|raw) ;; base) [[ -x "$base_bin" ]] || die "--clients base needs --base BIN" ;;
    *) die "--clients: unknown client '$c'" ;; esac
done
[[ -z "$base_bin" || " $clients " == *" base "* ]] || clients="base $clients"
# With --json, stdout carries only the records: everything else goes to stderr.
exec 3>&1
[[ "$json" == 1 ]] && exec 1>&2

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="${out:-target/bench/$stamp}"
mkdir -p "$out" "$data_dir"
out="$(cd "$out" && pwd)"
data_dir="$(cd "$data_dir" && pwd)"
runs_file="$out/runs.jsonl"
warnings_file="$out/warnings.txt"
: > "$warnings_file"
clk_tck="$(getconf CLK_TCK)"

warn() {
  echo "$*" >> "$warnings_file"
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
  printf '!!! WARNING: %s\n' "$*" >&2
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}

# ---- tools -------------------------------------------------------------------
if [[ ! -x /usr/bin/time ]]; then
  echo "==> /usr/bin/time (GNU time) is missing; installing it: apt-get install -y time"
  apt-get install -y time || { apt-get update && apt-get install -y time; }
fi
command -v python3 > /dev/null || die "python3 is required"
command -v curl > /dev/null || die "curl is required"

# jget FILE a.b.c: print that field of the JSON document in FILE (empty if absent).
if command -v jq > /dev/null; then
  jget() { jq -r --arg p "$2" 'getpath($p | split(".")) // empty | tostring' "$1" 2> /dev/null || true; }
else
  jget() {
    python3 - "$1" "$2" << 'PY' 2> /dev/null || true
import json, sys
try:
    v = json.load(open(sys.argv[1]))
    for k in sys.argv[2].split("."):
        v = v[k]
except Exception:
    sys.exit(0)
if v is not None:
    print(v if isinstance(v, str) else json.dumps(v))
PY
  }
fi

# A JSON value for a record: numbers as they are, anything else (or nothing) as null.
num() { if [[ "${1:-}" =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then printf '%s' "$1"; else printf 'null'; fi; }
# A short token as a JSON string (sequence ids and the like), else null.
str() { if [[ "${1:-}" =~ ^[A-Za-z0-9_.:-]+$ ]]; then printf '"%s"' "$1"; else printf 'null'; fi; }

# tfield FILE LABEL: one value from `/usr/bin/time -v` output.
tfield() { awk -F': ' -v k="$2" 'index($0, k) { print $NF; exit }' "$1"; }

# CPU ticks (utime + stime) a process has used so far.
cpu_ticks() {
  local stat
  stat="$(< "/proc/$1/stat")"
  stat="${stat##*) }"            # drop "pid (comm) ": comm may contain spaces
  # shellcheck disable=SC2086
  set -- $stat                   # now $1 = state, so utime = $12, stime = $13
  echo $(( ${12} + ${13} ))
}

# ---- installs and build ------------------------------------------------------
for pkg in scripts/pouchdb-server scripts/bench; do
  if [[ ! -d "$pkg/node_modules" ]]; then
    echo "==> npm ci in $pkg (once)"
    (cd "$pkg" && npm ci --no-audit --no-fund)
  fi
done
if [[ "$build" == 1 ]]; then
  echo "==> cargo build --release"
  cargo build --release
fi
settee="$root/target/release/settee"
[[ -x "$settee" ]] || die "$settee is missing (build it, or drop --no-build)"
if [[ " $clients " == *" rouchdb "* && ! -x "$rouchdb_bin" ]]; then
  [[ -n "$anchor" ]] || die "rouchdb: no anchor-bench directory (give --anchor DIR)"
  echo "==> building rouchdb-bench outside the crate: /tmp/rouchdb-bench (once)"
  rm -rf /tmp/rouchdb-bench && cp -r "$anchor/rouchdb-bench" /tmp/rouchdb-bench
  (cd /tmp/rouchdb-bench && cargo build --release)
  rouchdb_bin=/tmp/rouchdb-bench/target/release/rouchdb-bench
fi

# ---- PouchDB Server ----------------------------------------------------------
# shellcheck source=scripts/lib/pouchdb-server.sh
. scripts/lib/pouchdb-server.sh
trap pouchdb_server_stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_server() { pouchdb_server_stop; }

start_server() {
  # On disk (no --in-memory), admin party (no --admin), bound to 127.0.0.1 by serve.js.
  # Log level info: one line per answered request in $data_dir/log.txt (requests made).
  pouchdb_server_start "$out/server.err" --dir "$data_dir" --log-level info
  echo "==> PouchDB Server $base_url (pid $server_pid, data $data_dir)"
}

# ---- corpus ------------------------------------------------------------------
# course-N is seeded once; a marker file (named after the seed arguments) records the
# seed summary, and the database is reused while its doc_count still equals the recorded one.
# db_name SIZE ORDER: the database of that corpus.
db_name() { if [[ "$2" == shuffled ]]; then echo "course-$1-shuffled"; else echo "course-$1"; fi; }
declare -A corpus_bytes=()

seed_if_needed() {
  local n="$1" order="$2" db marker info want have shuffle=()
  db="$(db_name "$n" "$order")"
  marker="$data_dir/seeded-$db-tags200.json"
  [[ "$order" == shuffled ]] && shuffle=(--shuffle)
  info="$(mktemp)"
  curl -fsS "$base_url/$db" > "$info" 2> /dev/null || true
  have="$(jget "$info" doc_count)"
  want=""
  [[ -f "$marker" ]] && want="$(jget "$marker" doc_count)"
  rm -f "$info"
  if [[ -n "$want" && "$have" == "$want" ]]; then
    echo "==> $db already seeded (doc_count $have)"
  else
    echo "==> seeding $db: --cards $n --tags 200 --realistic ${shuffle[*]} (doc_count now: ${have:-none}, recorded: ${want:-none})"
    rm -f "$marker"
    node fixtures/seed-course.mjs --url "$base_url" --db "$db" --cards "$n" --tags 200 --realistic --recreate "${shuffle[@]}" > "$marker.tmp"
    cat "$marker.tmp"
    mv "$marker.tmp" "$marker"
  fi
  corpus_bytes[$db]="$(curl -fsS -o /dev/null -w '%{size_download}' "$base_url/$db/_all_docs?include_docs=true")"
}

# Requests the server has answered so far (express-pouchdb's http log lines).
request_lines() { local n; n="$(grep -c ' - - [A-Z]* /' "$data_dir/log.txt" 2> /dev/null || true)"; echo "${n:-0}"; }

# ---- one measured client run -------------------------------------------------
# run_client CLIENT SIZE SETTING RUN: runs one cold pull, appends its record to
# runs.jsonl and sets last_docs_written.
last_docs_written=""
run_client() {
  local client="$1" size="$2" setting="$3" run="$4" order="$5"
  local bs="${setting%/*}" bl="${setting#*/}" db
  db="$(db_name "$size" "$order")"
  local tag="${size}-${order}-${bs}-${bl}-${run}-${client}"
  local stdout="$out/logs/$tag.out" stderr="$out/logs/$tag.err" timef="$out/logs/$tag.time"
  local replica="" rc=0 before after
  mkdir -p "$out/logs"

  local raw_docs=""
  # Asked before the clock starts, so the raw client's count is its one request.
  [[ "$client" == raw ]] &&
    raw_docs="$(curl -fsS "$base_url/$db" | python3 -c 'import json,sys; print(json.load(sys.stdin)["doc_count"])')"
  local req_before req_after requests
  req_before="$(request_lines)"
  before="$(cpu_ticks "$server_pid")"
  if [[ "$client" == settee || "$client" == base || "$client" == paged ]]; then
    local bin="$settee" feed=()
    [[ "$client" == base ]] && bin="$base_bin"
    [[ "$client" == paged ]] && feed=(--feed paged)
    replica="$(mktemp -d "${TMPDIR:-/tmp}/settee-bench-replica.XXXXXX")"
    /usr/bin/time -v -o "$timef" "$bin" pull "$base_url/$db" "$replica/replica" \
      --batch-size "$bs" --batches-limit "$bl" "${feed[@]}" --json --quiet > "$stdout" 2> "$stderr" || rc=$?
  elif [[ "$client" == rouchdb ]]; then
    replica="$(mktemp -d "${TMPDIR:-/tmp}/rouchdb-bench-replica.XXXXXX")"
    TMPDIR="$replica" /usr/bin/time -v -o "$timef" "$rouchdb_bin" --url "$base_url/$db" \
      --batch-size "$bs" --batches-limit "$bl" > "$stdout" 2> "$stderr" || rc=$?
  elif [[ "$client" == raw ]]; then
    local w
    w="$(/usr/bin/time -v -o "$timef" curl -fsS -o /dev/null -w '%{time_total} %{size_download}' \
      "$base_url/$db/_all_docs?include_docs=true" 2> "$stderr")" || rc=$?
    python3 - "$w" "$raw_docs" > "$stdout" << 'PY'
import json, sys
t, size = sys.argv[1].split()
print(json.dumps({"wall_ms": round(float(t) * 1000), "docs_read": int(sys.argv[2]), "docs_written": int(sys.argv[2]),
                  "doc_write_failures": 0, "bytes": int(size)}))
PY
  else
    /usr/bin/time -v -o "$timef" node scripts/bench/pouch-pull.js "$base_url/$db" \
      --batch-size "$bs" --batches-limit "$bl" > "$stdout" 2> "$stderr" || rc=$?
  fi
  after="$(cpu_ticks "$server_pid")"
  local load1; load1="$(cut -d' ' -f1 /proc/loadavg)"   # the machine's 1-minute load as the run ends
  sleep 0.5                      # the server's log stream writes asynchronously
  req_after="$(request_lines)"
  requests=$(( req_after - req_before ))
  [[ -n "$replica" ]] && rm -rf "$replica"

  local wall_ms docs_read docs_written failures last_seq docs_per_s
  if [[ "$client" == settee || "$client" == base || "$client" == paged ]]; then
    wall_ms="$(jget "$stdout" timings.total_ms)"
  else
    wall_ms="$(jget "$stdout" wall_ms)"
  fi
  docs_read="$(jget "$stdout" docs_read)"
  docs_written="$(jget "$stdout" docs_written)"
  failures="$(jget "$stdout" doc_write_failures)"
  [[ "$client" == rouchdb ]] && failures="$(jget "$stdout" errors)"
  last_seq="$(jget "$stdout" last_seq)"
  docs_per_s=""
  [[ -n "$wall_ms" && -n "$docs_written" ]] &&
    docs_per_s="$(awk -v d="$docs_written" -v ms="$wall_ms" 'BEGIN { printf "%d", d * 1000 / (ms > 0 ? ms : 1) + 0.5 }')"

  local user sys rss_kb elapsed cpu rss_mb proc_wall server_cpu
  user="$(tfield "$timef" 'User time (seconds)')"
  sys="$(tfield "$timef" 'System time (seconds)')"
  rss_kb="$(tfield "$timef" 'Maximum resident set size (kbytes)')"
  elapsed="$(tfield "$timef" 'Elapsed (wall clock) time')"
  cpu="$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN { printf "%.2f", u + s }')"
  rss_mb="$(awk -v k="${rss_kb:-0}" 'BEGIN { printf "%.1f", k / 1024 }')"
  proc_wall="$(awk -v e="${elapsed:-0}" 'BEGIN { n = split(e, a, ":"); t = 0; for (i = 1; i <= n; i++) t = t * 60 + a[i]; printf "%.2f", t }')"
  server_cpu="$(awk -v a="$before" -v b="$after" -v hz="$clk_tck" 'BEGIN { printf "%.2f", (b - a) / hz }')"
  local cpu_us_per_doc="" mb_per_s=""
  [[ -n "$docs_written" && "$docs_written" != 0 ]] &&
    cpu_us_per_doc="$(awk -v c="$cpu" -v d="$docs_written" 'BEGIN { printf "%.1f", c * 1e6 / d }')"
  [[ -n "$wall_ms" && -n "${corpus_bytes[$db]:-}" ]] &&
    mb_per_s="$(awk -v b="${corpus_bytes[$db]}" -v ms="$wall_ms" 'BEGIN { printf "%.2f", b / 1e6 * 1000 / (ms > 0 ? ms : 1) }')"

  printf '{"ts":"%s","client":"%s","size":%s,"order":"%s","db":"%s","setting":"%s","batch_size":%s,"batches_limit":%s,"run":%s,"exit_code":%s,"wall_ms":%s,"docs_per_s":%s,"mb_per_s":%s,"docs_read":%s,"docs_written":%s,"doc_write_failures":%s,"last_seq":%s,"client_cpu_s":%s,"cpu_us_per_doc":%s,"max_rss_mb":%s,"proc_wall_s":%s,"server_cpu_s":%s,"requests":%s,"load1":%s}\n' \
    "$(date -u +%FT%TZ)" "$client" "$size" "$order" "$db" "$setting" "$bs" "$bl" "$run" "$rc" \
    "$(num "$wall_ms")" "$(num "$docs_per_s")" "$(num "$mb_per_s")" "$(num "$docs_read")" "$(num "$docs_written")" \
    "$(num "$failures")" "$(str "$last_seq")" "$(num "$cpu")" "$(num "$cpu_us_per_doc")" "$(num "$rss_mb")" "$(num "$proc_wall")" \
    "$(num "$server_cpu")" "$(num "$requests")" "$(num "$load1")" >> "$runs_file"

  printf '    %-7s run %s: %6s ms  %6s docs/s  %6s MB/s  written %-7s  cpu %5s s (%5s µs/doc)  rss %6s MB  server cpu %5s s  requests %s  load %s\n' \
    "$client" "$run" "${wall_ms:-?}" "${docs_per_s:-?}" "${mb_per_s:-?}" "${docs_written:-?}" "$cpu" "${cpu_us_per_doc:-?}" "$rss_mb" "$server_cpu" "$requests" "$load1"

  [[ "$rc" == 0 ]] || warn "$client $db $setting run $run exited with status $rc (see $stderr)"
  [[ "$failures" == 0 ]] || warn "$client $db $setting run $run: doc_write_failures = ${failures:-missing}"
  last_docs_written="$docs_written"
}

# ---- meta --------------------------------------------------------------------
git_rev="$(git rev-parse --short HEAD 2> /dev/null || echo unknown)"
[[ -z "$(git status --porcelain -- src Cargo.toml Cargo.lock 2> /dev/null)" ]] || git_rev="$git_rev+dirty"
cpu_model="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2> /dev/null || true)"
cat > "$out/meta.json" << EOF
{"stamp":"$stamp","sizes":"$sizes","runs":$runs,"settings":"$settings","orders":"$orders","clients":"$clients","git":"$git_rev",
 "settee":"$("$settee" --version 2> /dev/null | tr -d '"')","base":"${base_bin//\"/}","node":"$(node --version)",
 "pouchdb":"$(node -p 'require("./scripts/bench/node_modules/pouchdb/package.json").version')",
 "pouchdb_server":"$(node -p 'require("./scripts/pouchdb-server/node_modules/pouchdb-server/package.json").version')",
 "cpus":$(nproc),"cpu_model":"${cpu_model//\"/}","kernel":"$(uname -r)","data_dir":"$data_dir"}
EOF
echo "==> results in $out"

# ---- seed, then the interleaved runs -----------------------------------------
start_server
for n in $sizes; do for order in $orders; do seed_if_needed "$n" "$order"; done; done

for n in $sizes; do
  for order in $orders; do
    for setting in $settings; do
      stop_server
      start_server                 # a fresh (JIT-cold) server for every group
      db="$(db_name "$n" "$order")"
      echo "==> $db, batch_size/batches_limit $setting, clients: $clients, $runs run(s)"
      for run in $(seq 1 "$runs"); do
        declare -A written=()
        for client in $clients; do
          sync
          run_client "$client" "$n" "$setting" "$run" "$order"
          written[$client]="$last_docs_written"
        done
        for client in base pouchdb rouchdb; do
          [[ " $clients " == *" settee "* && " $clients " == *" $client "* ]] || continue
          [[ -n "${written[settee]}" && "${written[settee]}" == "${written[$client]}" ]] ||
            warn "$db $setting run $run: settee docs_written ${written[settee]:-missing} != $client docs_written ${written[$client]:-missing}"
        done
        unset written
      done
    done
  done
done
stop_server

# ---- summary -----------------------------------------------------------------
python3 - "$out" << 'PY'
import json, os, statistics, sys

out = sys.argv[1]
meta = json.load(open(os.path.join(out, "meta.json")))
recs = [json.loads(l) for l in open(os.path.join(out, "runs.jsonl")) if l.strip()]
warnings = [l.rstrip("\n") for l in open(os.path.join(out, "warnings.txt")) if l.strip()]

def label(n):
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)

def vals(rs, key):
    return [r[key] for r in rs if r.get(key) is not None]

def med(rs, key):
    v = vals(rs, key)
    return statistics.median(v) if v else None

def mx(rs, key):
    v = vals(rs, key)
    return max(v) if v else None

def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}".replace(",", " ")

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"

sizes = [int(s) for s in meta["sizes"].split()]
settings = meta["settings"].split()
clients = meta.get("clients", "settee pouchdb").split()
orders = meta.get("orders", "id").split()
group = lambda n, s, c, o="id": [r for r in recs if r["size"] == n and r["setting"] == s and r["client"] == c
                                 and r.get("order", "id") == o]

lines = []
p = lines.append
p(f"# settee vs PouchDB {meta['pouchdb']} ({', '.join(clients)}): cold pull from PouchDB Server {meta['pouchdb_server']} ({meta['stamp']})")
p("")
p(f"{meta['settee']} (git {meta['git']}), node {meta['node']}, {meta['cpus']} CPUs ({meta['cpu_model']}), "
  f"Linux {meta['kernel']}; server and clients share the CPUs. {meta['runs']} run(s) per row, "
  "server restarted before every size × setting group, clients interleaved (settee, then PouchDB).")
p("wall = settee `timings.total_ms` / PouchDB `replicate()` call; docs/s = docs_written / wall; "
  "peak RSS = max of `/usr/bin/time -v` max RSS; CPU = user+sys; server CPU = pouchdb-server CPU during the run.")
p("")
p("| corpus | order | batch/limit | client | docs_written | median wall ms | median docs/s | median MB/s | median requests | max peak RSS MB | median client CPU s | median CPU µs/doc | median server CPU s |")
p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for n in sizes:
    for o in orders:
        for s in settings:
            for c in clients:
                rs = group(n, s, c, o)
                written = sorted(set(vals(rs, "docs_written")))
                p(f"| course-{label(n)} | {o} | {s} | {c} | {', '.join(str(w) for w in written) or '–'} | {fmt(med(rs, 'wall_ms'))} | "
                  f"{fmt(med(rs, 'docs_per_s'))} | {fmt(med(rs, 'mb_per_s'), 2)} | {fmt(med(rs, 'requests'))} | {fmt(mx(rs, 'max_rss_mb'))} | {fmt(med(rs, 'client_cpu_s'), 2)} | "
                  f"{fmt(med(rs, 'cpu_us_per_doc'), 1)} | {fmt(med(rs, 'server_cpu_s'), 2)} |")
p("")
p("Ratios settee / other client (below 1 = settee uses less; docs/s above 1 = settee is faster):")
p("")
p("| corpus | order | batch/limit | vs | wall time | docs/s | client CPU | peak RSS | server CPU |")
p("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for n in sizes:
    for o in orders:
        for s in settings:
            for other in [c for c in clients if c != "settee"]:
                a, b = group(n, s, "settee", o), group(n, s, other, o)
                if not a or not b:
                    continue
                p(f"| course-{label(n)} | {o} | {s} | {other} | {ratio(med(a, 'wall_ms'), med(b, 'wall_ms'))} | "
                  f"{ratio(med(a, 'docs_per_s'), med(b, 'docs_per_s'))} | "
                  f"{ratio(med(a, 'client_cpu_s'), med(b, 'client_cpu_s'))} | {ratio(mx(a, 'max_rss_mb'), mx(b, 'max_rss_mb'))} | "
                  f"{ratio(med(a, 'server_cpu_s'), med(b, 'server_cpu_s'))} |")
p("")
rss_setting = "1000/5" if "1000/5" in settings else settings[0]
lo, hi = min(sizes), max(sizes)
if lo == hi:
    p(f"settee peak RSS: only one size ({label(lo)}), no scaling ratio")
else:
    ghi, glo = group(hi, rss_setting, "settee", orders[0]), group(lo, rss_setting, "settee", orders[0])
    note = "" if rss_setting == "1000/5" else f" (setting {rss_setting}: 1000/5 was not run)"
    # Both figures: the max over runs is what a user may hit; the median is
    # less sensitive to one noisy run on a shared machine.
    p(f"settee peak RSS {label(hi)}/{label(lo)} = {ratio(mx(ghi, 'max_rss_mb'), mx(glo, 'max_rss_mb'))} (max of runs), "
      f"{ratio(med(ghi, 'max_rss_mb'), med(glo, 'max_rss_mb'))} (median of runs){note}")
p("")

# Checks, again from the records: failures, exit codes, settee vs PouchDB docs_written.
problems = list(warnings)
for r in recs:
    if r.get("exit_code") != 0 or r.get("doc_write_failures") != 0:
        msg = f"{r['client']} {r['db']} {r['setting']} run {r['run']}: exit {r.get('exit_code')}, doc_write_failures {r.get('doc_write_failures')}"
        if not any(msg.split(":")[0] in w for w in problems):
            problems.append(msg)
if problems:
    p(f"**WARNING: {len(problems)} problem(s):**")
    p("")
    for w in problems:
        p(f"* {w}")
else:
    p(f"Checks: all {len(recs)} runs exited 0 with doc_write_failures = 0; settee docs_written = the other clients' in every run.")

text = "\n".join(lines) + "\n"
open(os.path.join(out, "summary.md"), "w").write(text)
print()
print(text, end="")
PY
echo "==> $out/summary.md, $out/runs.jsonl"
[[ "$json" == 1 ]] && cat "$runs_file" >&3
exit 0
