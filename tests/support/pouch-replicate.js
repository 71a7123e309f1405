// Replicates a CouchDB endpoint into a fresh in-memory PouchDB (the PouchDB
// that PouchDB Server ships, from scripts/pouchdb-server/node_modules) and
// prints one JSON object: the replication's counters and, per document id,
// every leaf as PouchDB stores it (`open_revs: 'all'`, `revs: true`), sorted
// by revision. Used by tests/serve.rs: PouchDB's copy must equal settee's.
//
//   node tests/support/pouch-replicate.js http://127.0.0.1:PORT/db
'use strict';
const PouchDB = require('./pouch')('pouchdb-adapter-memory', 'pouchdb-replication');

// --live-until ID: a live replication instead, until document ID arrives
// (at most 30 s); prints {"arrived": true|false}.
async function liveUntil(local, remote, id) {
  const rep = local.replicate.from(remote, { live: true, retry: true, batch_size: 20 });
  const deadline = Date.now() + 30000;
  let arrived = false;
  while (!arrived && Date.now() < deadline) {
    arrived = await local.get(id).then(() => true, () => false);
    if (!arrived) await new Promise((r) => setTimeout(r, 100));
  }
  rep.cancel();
  process.stdout.write(JSON.stringify({ arrived }) + '\n');
}

// --push-own: a PouchDB of its own edits (an update, an attachment, a
// conflict) replicated *to* URL; prints its counters and those documents'
// leaves as --from prints them.
async function pushOwn(local, remote) {
  const first = await local.put({ _id: 'mine-1', n: 1 });
  await local.put({ _id: 'mine-1', _rev: first.rev, n: 2 });
  await local.put({
    _id: 'mine-att',
    _attachments: { 'note.txt': { content_type: 'text/plain', data: Buffer.from('hello from pouch').toString('base64') } },
  });
  const base = await local.put({ _id: 'mine-conflict', side: 'base' });
  const h = base.rev.split('-')[1];
  await local.bulkDocs([
    { _id: 'mine-conflict', _rev: '2-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', _revisions: { start: 2, ids: ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', h] }, side: 'a' },
    { _id: 'mine-conflict', _rev: '2-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', _revisions: { start: 2, ids: ['bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', h] }, side: 'b' },
  ], { new_edits: false });
  const result = await local.replicate.to(remote);
  await report(local, result, ['mine-1', 'mine-att', 'mine-conflict']);
}

// Prints the replication's counters and every leaf of `ids` in `local`.
async function report(local, result, ids) {
  const docs = {};
  for (const id of ids) {
    const leaves = await local.get(id, { open_revs: 'all', revs: true });
    docs[id] = leaves.map((l) => l.ok).sort((a, b) => (a._rev < b._rev ? -1 : a._rev > b._rev ? 1 : 0));
  }
  process.stdout.write(JSON.stringify({
    docs_written: result.docs_written,
    doc_write_failures: result.doc_write_failures,
    docs,
  }) + '\n');
}

async function main() {
  const source = process.argv[2];
  if (!source) throw new Error('usage: pouch-replicate.js URL [--live-until ID | --push-own]');
  const local = new PouchDB('copy', { adapter: 'memory' });
  const remote = new PouchDB(source, {
    fetch: (url, opts) => PouchDB.fetch(url, opts).then((r) => {
      if (!r.ok) console.error(`${(opts && opts.method) || 'GET'} ${url}: ${r.status}`);
      return r;
    }),
  });
  if (process.argv[3] === '--live-until') return liveUntil(local, remote, process.argv[4]);
  if (process.argv[3] === '--push-own') return pushOwn(local, remote);
  const result = await local.replicate.from(remote, { batch_size: 20 });
  const feed = await local.changes({ style: 'all_docs' });
  await report(local, result, [...new Set(feed.results.map((r) => r.id))].sort());
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  console.error(JSON.stringify(e, null, 1));
  if (e && e.result && e.result.errors) console.error(e.result.errors.map(String).join('\n'));
  process.exit(1);
});
