#!/usr/bin/env bash
# bench-attachment-rss.sh: peak memory (RSS) of `settee pull`, and of `settee get
# --attachment` reading it back out, against the size of one attachment, to check that
# attachment bytes are streamed both ways and never held whole (issue 12). Not part of
# `cargo test`.
#
# Usage:
#   scripts/bench-attachment-rss.sh [--sizes "16 64"] [--bin PATH]
#
#   --sizes  attachment sizes in MiB, one database each (default "16 64"; PouchDB
#            Server refuses bodies over about 100 MiB)
#   --bin    the settee binary (default target/debug/settee, built if missing)
#
# Starts PouchDB Server in memory on a free port, PUTs one attachment of random bytes
# per size, pulls each into a fresh replica under /usr/bin/time -v, and prints the
# size, the peak RSS and the replica's disk use, then copies the attachment out with
# `settee get --attachment -o` under /usr/bin/time -v and checks the bytes. Expect both
# RSS figures to stay flat as the size grows (the pull's did not before: 295 MiB for
# 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="16 64"
bin=target/debug/settee
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || cargo build --bin settee
[ -d scripts/pouchdb-server/node_modules ] || (cd scripts/pouchdb-server && npm ci --no-audit --no-fund --loglevel=error)
work=$(mktemp -d)
# shellcheck source=scripts/lib/pouchdb-server.sh
. scripts/lib/pouchdb-server.sh
trap 'pouchdb_server_stop; rm -rf "$work"' EXIT
pouchdb_server_start "$work/server.err" --dir "$work/data" --admin a:b --in-memory
base="http://a:b@${base_url#http://}"
printf '%-10s %-14s %-18s %s\n' "MiB" "peak RSS MiB" "get: peak RSS MiB" "replica on disk"
for mb in $sizes; do
  curl -sf -X PUT "$base/att$mb" > /dev/null
  head -c $((mb * 1024 * 1024)) /dev/urandom > "$work/blob"
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$work/blob" \
    "$base/att$mb/doc/blob.bin" > /dev/null
  /usr/bin/time -v "$bin" pull --quiet "$base/att$mb" "$work/r$mb" > /dev/null 2> "$work/time"
  rss=$(awk -F: '/Maximum resident/ {printf "%.0f", $2 / 1024}' "$work/time")
  /usr/bin/time -v "$bin" get "$work/r$mb" doc --attachment blob.bin -o "$work/out" 2> "$work/time"
  cmp -s "$work/blob" "$work/out" || { echo "settee get returned other bytes" >&2; exit 1; }
  get_rss=$(awk -F: '/Maximum resident/ {printf "%.0f", $2 / 1024}' "$work/time")
  printf '%-10s %-14s %-18s %s\n' "$mb" "$rss" "$get_rss" "$(du -sh "$work/r$mb" | cut -f1)"
done
