#!/usr/bin/env bash
# bench-feed-cost.sh: what reading a database costs PouchDB Server itself, per way of
# reading it, with no replication client in the way: the floor under any pull's wall time
# on a server that answers one request at a time.
#
# Usage:
#   scripts/bench-feed-cost.sh --data DIR [--db NAME] [--rounds N] [--variants "..."]
#
#   --data      a PouchDB Server data directory holding the database, such as the one
#               scripts/bench-pull.sh seeds (${TMPDIR:-/tmp}/settee-bench-pouchdb-data)
#   --db        the database (default course-100000)
#   --rounds    times each variant runs, alternating (default 1)
#   --variants  any of (default all, in this order):
#                 changes_docs  _changes?style=all_docs&include_docs=true, pages of 1000
#                               (what a cold settee pull reads)
#                 changes       the same pages without documents
#                 changes_keys  those pages, each followed by POST _all_docs?include_docs=true
#                               with the page's ids (PouchDB's way for first revisions)
#                 alldocs       _all_docs?include_docs=true in pages of 1000
#                 dump          _all_docs?include_docs=true in one request (the raw dump)
#
# Every variant runs against a freshly started server (a JIT-warm server is faster), and
# prints the server process's CPU seconds (utime + stime from /proc) and the wall time of
# reading. The client is a small Python loop: its own speed does not enter the server CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

data=""; db="course-100000"; rounds=1
variants="changes_docs changes changes_keys alldocs dump"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --db) db="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "bench-feed-cost: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$data" && -d "$data" ]] || { echo "bench-feed-cost: --data DIR (an existing PouchDB Server data directory) is required" >&2; exit 2; }
[[ -d scripts/pouchdb-server/node_modules ]] || (cd scripts/pouchdb-server && npm ci --no-audit --no-fund)

work="$(mktemp -d "${TMPDIR:-/tmp}/settee-feed-cost.XXXXXX")"
# shellcheck source=scripts/lib/pouchdb-server.sh
. scripts/lib/pouchdb-server.sh
trap 'pouchdb_server_stop; rm -rf "$work"' EXIT

cat > "$work/client.py" <<'PY'
import json, os, sys, time, urllib.parse, urllib.request
base, variant, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
tick = os.sysconf("SC_CLK_TCK")

def server_cpu():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def ask(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as answer:
        return json.loads(answer.read())

info = ask(base)
cpu0, t0, rows, requests = server_cpu(), time.time(), 0, 0
if variant.startswith("changes"):
    since, docs = 0, "&include_docs=true" if variant == "changes_docs" else ""
    while True:
        page = ask(f"{base}/_changes?style=all_docs&since={urllib.parse.quote(json.dumps(since))}&limit=1000{docs}")
        requests += 1
        got = page["results"]
        rows += len(got)
        if got and variant == "changes_keys":
            ask(f"{base}/_all_docs?include_docs=true", {"keys": [r["id"] for r in got]})
            requests += 1
        since = page["last_seq"]
        if len(got) < 1000:
            break
elif variant == "alldocs":
    start = None
    while True:
        q = "" if start is None else "&startkey=" + urllib.parse.quote(json.dumps(start))
        got = ask(f"{base}/_all_docs?include_docs=true&limit=1001{q}")["rows"]
        requests += 1
        rows += min(len(got), 1000)
        if len(got) <= 1000:
            break
        start = got[-1]["id"]
elif variant == "dump":
    rows = len(ask(f"{base}/_all_docs?include_docs=true")["rows"])
    requests = 1
else:
    sys.exit(f"bench-feed-cost: unknown variant {variant}")
print(f"{variant:13s} rows {rows:7d}  requests {requests:4d}  server CPU {server_cpu() - cpu0:6.2f} s"
      f"  wall {time.time() - t0:6.2f} s  ({info.get('doc_count')} docs)")
PY

echo "==> $db in $data; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$rounds"); do
  for v in $variants; do
    pouchdb_server_start "$work/server.err" --dir "$data" --log-level warn
    python3 "$work/client.py" "$base_url/$db" "$v" "$server_pid"
    pouchdb_server_stop
  done
done
