#!/usr/bin/env bash
# Makes tests/fixtures/format3-replica.tar.gz and what it must read as, with
# a given release's `settee` binary (the fixture was made by the release
# before issue 19, commit 6e69e5d, the last to land with store format 3):
#
#   scripts/make-format3-fixture.sh PATH/TO/settee
#
# A PouchDB Server on a free loopback port holds a seeded course (updates,
# injected conflicts, tombstones, attachments, design docs, odd ids); the
# binary pulls it, then makes local writes (a new document, one over 256
# bytes, an edit, a deletion) that stay queued in the outbox. What the
# release itself printed (`settee dump`, `settee outbox --json`) is stored
# beside the archive; tests/format3.rs opens the archive with today's code
# and compares.
set -euo pipefail
settee="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out=tests/fixtures
work="$(mktemp -d "${TMPDIR:-/tmp}/settee-fixture.XXXXXX")"
port="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"
fifo="$work/keepalive"
mkfifo "$fifo"
node scripts/pouchdb-server/serve.js --port "$port" --dir "$work/server" --admin admin:pass < "$fifo" > "$work/ready" &
exec 9> "$fifo"
trap 'exec 9>&-; wait 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/" > /dev/null && break
  sleep 0.5
done
base="http://admin:pass@127.0.0.1:$port"
node fixtures/seed-course.mjs --url "$base" --db course --cards 40 --realistic --extras --seed 3
rep="$work/replica"
"$settee" pull "$base/course" "$rep" --quiet
"$settee" put "$rep" local-new '{"docType":"CARD","front":"made offline"}'
"$settee" put "$rep" local-big "{\"docType\":\"CARD\",\"pad\":\"$(printf 'x%.0s' $(seq 1 400))\"}"
card="$("$settee" dump "$rep" | node -e 'const l = require("fs").readFileSync(0, "utf8").trim().split("\n").map(JSON.parse); console.log(l.find(d => d.docType === "CARD" && !d._conflicts)._id)')"
"$settee" put "$rep" "$card" '{"docType":"CARD","front":"edited offline"}' --overwrite
gone="$("$settee" dump "$rep" | node -e 'const l = require("fs").readFileSync(0, "utf8").trim().split("\n").map(JSON.parse); console.log(l.filter(d => d.docType === "CARD")[3]._id)')"
"$settee" delete "$rep" "$gone"
"$settee" dump "$rep" > "$out/format3-dump.jsonl"
"$settee" outbox "$rep" --json > "$out/format3-outbox.json"
tar czf "$out/format3-replica.tar.gz" -C "$rep" .
ls -la "$out"/format3-*
