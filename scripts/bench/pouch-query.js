#!/usr/bin/env node
// pouch-query.js: the PouchDB 9 reference side of scripts/bench-query.sh. Loads
// an app-shaped course corpus into a brand-new PouchDB (leveldb in a fresh
// temporary directory, Node's default adapter; or --adapter memory) and times the
// app's view queries and Mango finds on it, with PouchDB 9.0.0 and pouchdb-find
// 9.0.0 as pinned in scripts/bench/package-lock.json.
//
//   node scripts/bench/pouch-query.js --docs FILE [--adapter leveldb|memory] [--batch N (1000)]
//   node scripts/bench/pouch-query.js --cards N [--seed S (42)] [--tags T (200)] ...
//                                     [--build node|browser] [--views elo,getTags]
//
// --docs FILE   NDJSON, one document per line with its _id and _rev, as written by
//               `cargo bench --bench query -- --corpus-out FILE` (benches/common/corpus.rs),
//               so both sides index byte-identical documents. Loaded with bulkDocs
//               {new_edits: false} in batches of --batch, in file order.
// --build       node (default): PouchDB's Node build, which runs every map call of a
//               design-doc view in a new V8 context (vm.runInNewContext, the document
//               JSON-stringified into the source: ~1.3 ms of CPU per document);
//               browser: pouchdb/lib/index-browser.js, what a web app such as
//               vue-skuilder runs (map functions compiled once with new Function), in
//               Node with `self` = globalThis; it has no leveldb adapter, so the memory
//               adapter (memdown) is used. The engine is then "pouchdb-browser-memory".
// --views LIST  the views to build and query (default elo,getTags); the browser build
//               takes about 500 s over getTags at 100k cards, so --views elo measures
//               the rest of the list in a few minutes.
// --cards N     generate that corpus first, by running the same Rust generator
//               (`cargo bench --bench query -- --corpus-out TMP` with
//               SETTEE_QUERY_BENCH_CARDS/_SEED/_TAGS) into a temporary file.
//
// Prints one JSON line per measurement on stdout, the format scripts/bench-query.sh
// documents: {"bench","side":"pouchdb","engine":"pouchdb-<adapter>","ms","cpu_ms"?,"reps","rows",
// "cards","docs"}; ms is wall time, the mean per call when reps > 1; rows is the number
// of rows/docs returned, summed over the reps. Measurements, in this order:
//   load                      bulkDocs of every document (not node start-up)
//   view_build_elo            first db.query('elo', {limit: 1}): PouchDB builds the view
//   view_build_getTags        first db.query('getTags', {limit: 1})
//   view_build_all            the two above added (the app's warmViewIndices runs both)
//   view_query_elo            {limit: 1} again, mean of 20
//   view_query_getTags        {limit: 1} again, mean of 20
//   view_query_elo_page       {startkey: 700 + (37k mod 600), limit: 20}, mean of 200
//   view_query_getTags_keys   {keys: 20 card ids}, mean of 200 (card (7919 i + 104729) mod N,
//                             i = 20k + j, in generation order: corpus::pick_card)
//   find_scan                 {selector: {'elo.global.count': {$gt: 16}}, limit: 25}, mean of 3:
//                             no index covers it and ~12 cards in 100k match, so it reads all
//   find_regex                the app's search {docType: 'DISPLAYABLE_DATA',
//                             'data.0.data': {$regex: '.*goroutine.*'}} (default limit 25), mean of 3
//   find_cards_1000           the app's {docType: 'CARD'}, limit 1000, no index, mean of 3
//   find_index_create         createIndex({index: {fields: ['docType', 'elo.global.score']}});
//                             pouchdb-find builds the index inside createIndex (a {limit: 0}
//                             query of it), so this is the index build
//   find_indexed_first        first {docType: 'CARD', 'elo.global.score': {$gt: 1000}}, limit 25
//                             (createIndex + first find: the two added)
//   find_indexed              the same with $gt 700 + (53k mod 600), warm, mean of 50
//   find_cards_1000_indexed   {docType: 'CARD'}, limit 1000 once the index exists, mean of 3
// Exit status: 0, or 1 on an error (2 on a usage error).
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { execFileSync } = require('child_process');
let PouchDB = null; // the build --build asks for, loaded in main()

function usage(message) {
  if (message) console.error(`pouch-query: ${message}`);
  console.error('usage: node pouch-query.js (--docs FILE | --cards N [--seed S] [--tags T]) ' +
    '[--adapter leveldb|memory] [--batch N] [--build node|browser] [--views elo,getTags]');
  process.exit(2);
}

function parse(argv) {
  const opts = { docs: null, cards: null, seed: 42, tags: 200, adapter: null, batch: 1000, build: 'node',
    views: ['elo', 'getTags'] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    const number = (min) => {
      const n = Number(value());
      if (!Number.isSafeInteger(n) || n < min) usage(`${arg} needs an integer >= ${min}`);
      return n;
    };
    if (arg === '--docs') opts.docs = value();
    else if (arg === '--cards') opts.cards = number(1);
    else if (arg === '--seed') opts.seed = number(0);
    else if (arg === '--tags') opts.tags = number(5);
    else if (arg === '--batch') opts.batch = number(1);
    else if (arg === '--adapter') opts.adapter = value();
    else if (arg === '--build') opts.build = value();
    else if (arg === '--views') opts.views = value().split(',').filter(Boolean);
    else if (arg === '-h' || arg === '--help') usage();
    else usage(`unexpected argument ${arg}`);
  }
  if ((opts.docs === null) === (opts.cards === null)) usage('give exactly one of --docs and --cards');
  if (!['node', 'browser'].includes(opts.build)) usage('--build is node or browser');
  if (!opts.views.length || !opts.views.every((v) => ['elo', 'getTags'].includes(v))) {
    usage('--views is a comma-separated list of elo and getTags');
  }
  if (opts.adapter === null) opts.adapter = opts.build === 'browser' ? 'memory' : 'leveldb';
  if (!['leveldb', 'memory'].includes(opts.adapter)) usage('--adapter is leveldb or memory');
  if (opts.build === 'browser' && opts.adapter !== 'memory') usage('--build browser has only --adapter memory');
  return opts;
}

const now = () => process.hrtime.bigint();
const msSince = (t0) => Number(now() - t0) / 1e6;
const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };

async function main() {
  const opts = parse(process.argv.slice(2));
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'settee-bench-pouch-query-'));
  let db = null;
  try {
    let docsFile = opts.docs;
    if (docsFile === null) {
      docsFile = path.join(scratch, 'corpus.ndjson');
      const root = path.resolve(__dirname, '..', '..');
      console.error(`pouch-query: generating ${opts.cards} cards with cargo bench --bench query`);
      execFileSync('cargo', ['bench', '--bench', 'query', '--', '--corpus-out', docsFile], {
        cwd: root,
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, SETTEE_QUERY_BENCH_CARDS: String(opts.cards),
          SETTEE_QUERY_BENCH_SEED: String(opts.seed), SETTEE_QUERY_BENCH_TAGS: String(opts.tags) },
      });
    }

    if (opts.build === 'browser') {
      globalThis.self = globalThis; // the browser build reads self.setImmediate and the like
      PouchDB = require('pouchdb/lib/index-browser.js');
    } else {
      PouchDB = require('pouchdb');
    }
    PouchDB.plugin(require('pouchdb-find'));
    if (opts.adapter === 'memory') {
      PouchDB.plugin(require('pouchdb-adapter-memory'));
      db = new PouchDB('bench', { adapter: 'memory' });
    } else {
      db = new PouchDB(path.join(scratch, 'db')); // leveldb on disk
    }
    const engine = opts.build === 'browser' ? `pouchdb-browser-${opts.adapter}` : `pouchdb-${opts.adapter}`;
    let cards = 0, docs = 0;
    const cardIds = [];
    const out = (bench, ms, extra = {}) => {
      console.log(JSON.stringify({ bench, side: 'pouchdb', engine, ms: Math.round(ms * 1000) / 1000,
        ...extra, cards, docs }));
    };

    // ---- load ------------------------------------------------------------------
    {
      const c0 = cpuMs();
      const t0 = now();
      const lines = readline.createInterface({ input: fs.createReadStream(docsFile), crlfDelay: Infinity });
      let batch = [];
      const flush = async () => {
        const res = await db.bulkDocs(batch, { new_edits: false });
        const bad = res.filter((r) => r.error);
        if (bad.length) throw new Error(`bulkDocs: ${bad.length} error(s), e.g. ${JSON.stringify(bad[0])}`);
        batch = [];
      };
      for await (const line of lines) {
        if (!line.trim()) continue;
        const doc = JSON.parse(line);
        if (doc.docType === 'CARD') cardIds.push(doc._id);
        batch.push(doc);
        docs++;
        if (batch.length >= opts.batch) await flush();
      }
      if (batch.length) await flush();
      cards = cardIds.length;
      out('load', msSince(t0), { cpu_ms: Math.round(cpuMs() - c0) });
    }
    if (!cards) throw new Error(`${docsFile} holds no CARD documents`);
    const pick = (k) => cardIds[Number((BigInt(k) * 7919n + 104729n) % BigInt(cards))];

    // timed(reps, f): mean wall ms per call of await f(k) for k in 0..reps, rows summed.
    const timed = async (reps, f) => {
      let rows = 0;
      const c0 = cpuMs();
      const t0 = now();
      for (let k = 0; k < reps; k++) rows += await f(k);
      return { ms: msSince(t0) / reps, extra: { cpu_ms: Math.round(cpuMs() - c0), reps, rows } };
    };
    const query = async (view, q) => (await db.query(view, q)).rows.length;
    const find = async (req) => (await db.find(req)).docs.length;

    // ---- views -----------------------------------------------------------------
    let all = 0;
    for (const view of opts.views) {
      const r = await timed(1, () => query(view, { limit: 1 }));
      all += r.ms;
      out(`view_build_${view}`, r.ms, r.extra);
    }
    if (opts.views.length === 2) out('view_build_all', all, { derived: 'view_build_elo + view_build_getTags' });
    for (const view of opts.views) {
      const r = await timed(20, () => query(view, { limit: 1 }));
      out(`view_query_${view}`, r.ms, r.extra);
    }
    if (opts.views.includes('elo')) {
      const r = await timed(200, (k) => query('elo', { startkey: 700 + (k * 37) % 600, limit: 20 }));
      out('view_query_elo_page', r.ms, r.extra);
    }
    if (opts.views.includes('getTags')) {
      const r = await timed(200, (k) => query('getTags',
        { keys: Array.from({ length: 20 }, (_, j) => pick(k * 20 + j)) }));
      out('view_query_getTags_keys', r.ms, r.extra);
    }

    // ---- Mango, no index (what the app does: it never creates one) --------------
    {
      const r = await timed(3, () => find({ selector: { 'elo.global.count': { $gt: 16 } }, limit: 25 }));
      out('find_scan', r.ms, r.extra);
    }
    {
      const r = await timed(3, () => find({ selector: { docType: 'DISPLAYABLE_DATA',
        'data.0.data': { $regex: '.*goroutine.*' } } }));
      out('find_regex', r.ms, r.extra);
    }
    {
      const r = await timed(3, () => find({ selector: { docType: 'CARD' }, limit: 1000 }));
      out('find_cards_1000', r.ms, r.extra);
    }

    // ---- Mango, with an index ---------------------------------------------------
    {
      const r = await timed(1, async () => {
        const res = await db.createIndex({ index: { fields: ['docType', 'elo.global.score'] } });
        return res.result === 'created' ? 1 : 0;
      });
      out('find_index_create', r.ms, r.extra);
    }
    const indexed = (x) => find({ selector: { docType: 'CARD', 'elo.global.score': { $gt: x } }, limit: 25 });
    {
      const r = await timed(1, () => indexed(1000));
      out('find_indexed_first', r.ms, r.extra);
    }
    {
      const r = await timed(50, (k) => indexed(700 + (k * 53) % 600));
      out('find_indexed', r.ms, r.extra);
    }
    {
      const r = await timed(3, () => find({ selector: { docType: 'CARD' }, limit: 1000 }));
      out('find_cards_1000_indexed', r.ms, r.extra);
    }
  } finally {
    if (db) await db.close().catch(() => {});
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`pouch-query: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
