// Runs reads the way an app does with PouchDB's own `query` and `find`
// (the PouchDB that PouchDB Server ships, over HTTP) against a CouchDB
// endpoint; prints one JSON array, an answer (or the error's status and
// name) per read. The reads come on stdin as a JSON array of
// {"query": "ddoc/view", "options": {...}} or {"find": {...}}.
//
//   node tests/support/pouch-query.js http://127.0.0.1:PORT/db < reads.json
'use strict';
const fs = require('fs');
const PouchDB = require('./pouch')('pouchdb-mapreduce', 'pouchdb-find');

async function main() {
  const db = new PouchDB(process.argv[2]);
  const reads = JSON.parse(fs.readFileSync(0, 'utf8'));
  const answers = [];
  for (const read of reads) {
    try {
      answers.push(read.find ? await db.find(read.find) : await db.query(read.query, read.options));
    } catch (e) {
      answers.push({ error: e.name || String(e), status: e.status });
    }
  }
  process.stdout.write(JSON.stringify(answers) + '\n');
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
