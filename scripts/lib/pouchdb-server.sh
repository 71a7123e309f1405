# Starting and stopping PouchDB Server (scripts/pouchdb-server/serve.js) for the bench
# scripts: one copy of the start-up handshake they all need. Source it from the repo root.
#
#   pouchdb_server_start LOG [serve.js arguments...]
#       starts serve.js on a free 127.0.0.1 port with the arguments given (--dir, --log-level,
#       --admin, --in-memory, ...), its stderr appended to LOG, and waits for its READY line
#       (exits 1, naming LOG, if it never comes). Sets:
#         base_url    http://127.0.0.1:PORT
#         serve_pid   serve.js, whose stdin this shell holds open on fd 9: serve.js stops the
#                     server when its stdin closes
#         server_pid  the pouchdb-server process serve.js spawned (the one whose CPU to count)
#   pouchdb_server_stop
#       closes serve.js's stdin, waits up to 10 s for it to go, then kills what is left.
#       Safe to call when nothing runs (put it in an EXIT trap).

serve_pid="" server_pid="" base_url=""
pouchdb_server_dir=""

pouchdb_server_start() {
  local log="$1" port i
  shift
  pouchdb_server_dir="$(mktemp -d "${TMPDIR:-/tmp}/settee-pouchdb-server.XXXXXX")"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  mkfifo "$pouchdb_server_dir/stdin"
  node scripts/pouchdb-server/serve.js --port "$port" "$@" \
    < "$pouchdb_server_dir/stdin" > "$pouchdb_server_dir/ready" 2>> "$log" &
  serve_pid=$!
  exec 9> "$pouchdb_server_dir/stdin"
  for i in $(seq 1 600); do
    grep -q '^READY' "$pouchdb_server_dir/ready" 2> /dev/null && break
    kill -0 "$serve_pid" 2> /dev/null || break
    sleep 0.1
  done
  grep -q '^READY' "$pouchdb_server_dir/ready" 2> /dev/null ||
    { echo "PouchDB Server did not start; see $log" >&2; exit 1; }
  server_pid="$(tr ' ' '\n' < "/proc/$serve_pid/task/$serve_pid/children" | grep -m1 . || true)"
  [[ -n "$server_pid" ]] || { echo "cannot find the pouchdb-server process serve.js started" >&2; exit 1; }
  base_url="http://127.0.0.1:$port"
}

pouchdb_server_stop() {
  [[ -n "$serve_pid" ]] || return 0
  exec 9>&- || true
  local i
  for i in $(seq 1 100); do kill -0 "$serve_pid" 2> /dev/null || break; sleep 0.1; done
  kill -0 "$serve_pid" 2> /dev/null && kill "$serve_pid" 2> /dev/null || true
  [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2> /dev/null && kill "$server_pid" 2> /dev/null || true
  wait "$serve_pid" 2> /dev/null || true
  rm -rf "$pouchdb_server_dir"
  serve_pid="" server_pid="" base_url="" pouchdb_server_dir=""
}
