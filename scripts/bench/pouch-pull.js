#!/usr/bin/env node
// pouch-pull.js: the reference client for scripts/bench-pull.sh. One cold,
// one-shot pull of a remote CouchDB-compatible database into a brand-new
// on-disk PouchDB (leveldb adapter), with PouchDB 9 as pinned in
// scripts/bench/package-lock.json.
//
//   node scripts/bench/pouch-pull.js <DB_URL> [--batch-size N (100)] [--batches-limit N (10)]
//
// The local database lives in a fresh temporary directory that is removed
// afterwards. Prints exactly one JSON line on stdout:
//   {client:"pouchdb", docs_read, docs_written, doc_write_failures, wall_ms, docs_per_s, status, last_seq}
// wall_ms covers the PouchDB.replicate() call only (not node start-up, not
// opening the databases). docs_written counts leaf revisions written.
// Exit status: 0 on a complete replication, 1 on an error.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const PouchDB = require('pouchdb');

function usage(message) {
  if (message) console.error(`pouch-pull: ${message}`);
  console.error('usage: node pouch-pull.js <DB_URL> [--batch-size N] [--batches-limit N]');
  process.exit(2);
}

function parse(argv) {
  const opts = { url: null, batchSize: 100, batchesLimit: 10 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const number = () => {
      const n = Number(argv[++i]);
      if (!Number.isSafeInteger(n) || n < 1) usage(`${arg} needs a positive integer`);
      return n;
    };
    if (arg === '--batch-size') opts.batchSize = number();
    else if (arg === '--batches-limit') opts.batchesLimit = number();
    else if (arg === '-h' || arg === '--help') usage();
    else if (arg.startsWith('-') || opts.url) usage(`unexpected argument ${arg}`);
    else opts.url = arg.replace(/\/+$/, '');
  }
  if (!opts.url) usage('the database URL is required');
  return opts;
}

async function main() {
  const opts = parse(process.argv.slice(2));
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'settee-bench-pouch-'));
  try {
    // skip_setup: never try to create the remote database.
    const remote = new PouchDB(opts.url, { skip_setup: true });
    const local = new PouchDB(path.join(scratch, 'local')); // leveldb on disk

    const started = process.hrtime.bigint();
    const result = await PouchDB.replicate(remote, local, {
      batch_size: opts.batchSize,
      batches_limit: opts.batchesLimit,
    });
    const wallMs = Number(process.hrtime.bigint() - started) / 1e6;

    console.log(JSON.stringify({
      client: 'pouchdb',
      docs_read: result.docs_read,
      docs_written: result.docs_written,
      doc_write_failures: result.doc_write_failures,
      wall_ms: Math.round(wallMs),
      docs_per_s: Math.round(result.docs_written / Math.max(wallMs, 1) * 1000),
      status: result.status,
      last_seq: result.last_seq,
    }));
    await local.close();
    await remote.close();
    if (result.status !== 'complete') process.exitCode = 1;
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`pouch-pull: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
