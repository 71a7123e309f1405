#!/usr/bin/env bash
# settee's main job, end to end: pull a CouchDB database into a local
# replica and show what arrived.
#
#   scripts/demo.sh                 # no URL: start a local PouchDB Server, load
#                                   # the demo course, pull it into ./replicas/demo
#   scripts/demo.sh DB_URL [DIR]    # pull an existing database (DIR default ./replicas/demo)
#
# Needs cargo and Node.js; installs PouchDB Server from scripts/pouchdb-server
# (pinned in its package-lock.json) on first use. The local server listens on
# 127.0.0.1 only and is stopped when the script ends.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
url="${1:-}"
dir="${2:-replicas/demo}"

echo "==> building settee (release)"
cargo build --release --quiet --bin settee
settee="$root/target/release/settee"

if [[ -z "$url" ]]; then
  if [[ ! -f scripts/pouchdb-server/node_modules/pouchdb-server/package.json ]]; then
    echo "==> installing PouchDB Server (npm ci, once)"
    (cd scripts/pouchdb-server && npm ci --no-audit --no-fund --loglevel=error)
  fi
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  data="$(mktemp -d "${TMPDIR:-/tmp}/settee-demo-server.XXXXXX")"
  fifo="$data/keepalive"
  mkfifo "$fifo"
  # serve.js stops the server when its stdin closes: hold the fifo open on fd 9.
  node scripts/pouchdb-server/serve.js --port "$port" --dir "$data" < "$fifo" > "$data/ready" &
  exec 9> "$fifo"
  trap 'exec 9>&-; wait 2>/dev/null; rm -rf "$data"' EXIT
  for _ in $(seq 1 300); do grep -q READY "$data/ready" 2>/dev/null && break; sleep 0.1; done
  grep -q READY "$data/ready" || { echo "PouchDB Server did not start; see $data/server.out" >&2; exit 1; }
  echo "==> PouchDB Server on http://127.0.0.1:$port; loading the demo course"
  node fixtures/seed-course.mjs --url "http://127.0.0.1:$port" --db coursedb-demo \
    --cards 2000 --tags 40 --realistic --extras --recreate
  url="http://127.0.0.1:$port/coursedb-demo"
  rm -rf "$dir"   # a fresh server is a new database: start the replica fresh too
fi

echo "==> settee pull $url $dir"
"$settee" pull "$url" "$dir"
echo
echo "==> settee status $dir"
"$settee" status "$dir"
echo
echo "==> settee get $dir CourseConfig"
"$settee" get "$dir" CourseConfig || true
echo
echo "==> the first documents of settee dump $dir"
"$settee" dump "$dir" | head -n 3 | cut -c1-240
if "$settee" get "$dir" x-conflicts3 --conflicts > /dev/null 2>&1; then
  echo
  echo "==> a conflicted document: settee get $dir x-conflicts3 --conflicts"
  "$settee" get "$dir" x-conflicts3 --conflicts | cut -c1-240
fi
