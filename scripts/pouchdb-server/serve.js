#!/usr/bin/env node
// Starts PouchDB Server on 127.0.0.1 for settee's tests, demo and benchmarks.
//
//   node serve.js --port P --dir D [--admin USER:PASS] [--in-memory] [--log-level L]
//
// Prints one line `READY <url>` on stdout once `GET /` answers, then keeps
// running. It stops the server and exits when its standard input closes, so
// a test process that dies (even by SIGKILL) never leaves a server behind:
// the kernel closes the pipe and this script notices.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const path = require('path');

const args = { port: 0, dir: null, admin: null, inMemory: false, logLevel: 'warning' };
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i];
  const v = () => process.argv[++i];
  if (k === '--port') args.port = parseInt(v(), 10);
  else if (k === '--dir') args.dir = v();
  else if (k === '--admin') args.admin = v();
  else if (k === '--in-memory') args.inMemory = true;
  else if (k === '--log-level') args.logLevel = v();
  else { console.error(`serve.js: unknown argument ${k}`); process.exit(2); }
}
if (!args.port || !args.dir) { console.error('serve.js: --port and --dir are required'); process.exit(2); }

fs.mkdirSync(path.join(args.dir, 'dbs'), { recursive: true });
const config = {
  log: { file: path.join(args.dir, 'log.txt'), level: args.logLevel },
  httpd: { bind_address: '127.0.0.1', port: args.port },
};
if (args.admin) {
  const at = args.admin.indexOf(':');
  config.admins = { [args.admin.slice(0, at)]: args.admin.slice(at + 1) };
}
fs.writeFileSync(path.join(args.dir, 'config.json'), JSON.stringify(config, null, 2));

const bin = path.join(__dirname, 'node_modules', 'pouchdb-server', 'bin', 'pouchdb-server');
const serverArgs = [bin, '-p', String(args.port), '-o', '127.0.0.1', '-d', path.join(args.dir, 'dbs'),
  '-c', path.join(args.dir, 'config.json'), '-n', '--no-color'];
if (args.inMemory) serverArgs.push('--in-memory');
const out = fs.openSync(path.join(args.dir, 'server.out'), 'a');
const child = spawn(process.execPath, serverArgs, { stdio: ['ignore', out, out] });

let stopping = false;
function stop(code) {
  if (stopping) return;
  stopping = true;
  child.kill('SIGTERM');
  setTimeout(() => { child.kill('SIGKILL'); process.exit(code); }, 2000).unref();
  child.once('exit', () => process.exit(code));
}
child.once('exit', (code) => {
  if (!stopping) {
    console.error(`serve.js: pouchdb-server exited with ${code}; see ${path.join(args.dir, 'server.out')}`);
    process.exit(1);
  }
});
process.stdin.on('end', () => stop(0));
process.stdin.on('error', () => stop(0));
process.stdin.resume();
process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));

const url = `http://127.0.0.1:${args.port}`;
const deadline = Date.now() + 60000;
(function probe() {
  const req = http.get(url + '/', (res) => {
    res.resume();
    if (res.statusCode === 200) { process.stdout.write(`READY ${url}\n`); return; }
    retry();
  });
  req.on('error', retry);
  function retry() {
    if (Date.now() > deadline) { console.error('serve.js: server did not answer within 60 s'); stop(1); return; }
    setTimeout(probe, 100);
  }
})();
