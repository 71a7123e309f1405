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
  # Installed unless exactly this lock file was installed before (the same
  # marker the test harness uses), so an interrupted or outdated install is redone.
  srv=scripts/pouchdb-server
  if ! cmp -s "$srv/package-lock.json" "$srv/node_modules/.settee-installed-lock"; then
    echo "==> installing PouchDB Server (npm ci)"
    (cd "$srv" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$srv/package-lock.json" "$srv/node_modules/.settee-installed-lock"
  fi
  port="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"
  data="$(mktemp -d "${TMPDIR:-/tmp}/settee-demo-server.XXXXXX")"
  fifo="$data/keepalive"
  mkfifo "$fifo"
  # serve.js stops the server when its stdin closes: hold the fifo open on fd 9.
  node scripts/pouchdb-server/serve.js --port "$port" --dir "$data" < "$fifo" > "$data/ready" &
  server_pid=$!
  exec 9> "$fifo"
  trap 'exec 9>&-; wait 2>/dev/null; rm -rf "$data"' EXIT
  # serve.js gives the server 60 s to answer; wait a little longer, or until it gives up.
  for _ in $(seq 1 900); do
    grep -q READY "$data/ready" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
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
echo
echo "==> cards rated 995 to 1005, from the local elo view (no network): settee query $dir elo --start 995 --end 1005 --limit 5"
"$settee" query "$dir" elo --start 995 --end 1005 --limit 5 || true
echo
echo "==> settee check $dir"
"$settee" check "$dir"
