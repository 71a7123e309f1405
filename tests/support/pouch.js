// The PouchDB that PouchDB Server ships (scripts/pouchdb-server/node_modules,
// installed by the test harness), with its HTTP adapter and the plugins
// named: `require('./pouch')('pouchdb-replication', ...)`.
'use strict';
const path = require('path');
const nm = path.join(__dirname, '..', '..', 'scripts', 'pouchdb-server', 'node_modules');
const load = (name) => require(path.join(nm, name));

module.exports = (...plugins) =>
  plugins.reduce((PouchDB, name) => PouchDB.plugin(load(name)), load('pouchdb-core').plugin(load('pouchdb-adapter-http')));
