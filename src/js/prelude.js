// settee's query server: what a design document's functions see, as
// CouchDB's share/server/{util,views}.js give it (emit, log, sum,
// isArray, toJSON, require), and the entry points the host calls. Written
// for settee; CouchDB's files were read for behaviour only.
//
// Every entry point takes and returns strings (JSON): one conversion each
// way, the same as CouchDB's line protocol, and nothing of the host is
// reachable from here but `__host_log`.

var __rows = null;
var __maps = [];
var __reduces = [];
var __lib = null;
var __moduleCache = {};
var __lastKey = null;
var __lastDoc = null;

// An Error thrown or emitted becomes {error, message} instead of `{}`.
function __errorJson(e) {
  if (typeof e === "object" && e !== null && "stack" in e && "name" in e && "message" in e) {
    return { error: e.name, message: e.message };
  }
  return e;
}

function __errstr(e) {
  try {
    return String(e);
  } catch (_) {
    return "an exception that has no string form";
  }
}

function emit(key, value) {
  if (__rows === null) {
    throw new Error("emit() called outside a map function");
  }
  __rows.push([key, __errorJson(value)]);
}

function log(message) {
  if (typeof message !== "string") {
    message = JSON.stringify(__errorJson(message));
  }
  __host_log(String(message));
}

function sum(values) {
  var rv = 0;
  for (var i in values) {
    rv += values[i];
  }
  return rv;
}

function isArray(obj) {
  return Object.prototype.toString.call(obj) === "[object Array]";
}

function toJSON(obj) {
  return JSON.stringify(obj);
}

// Documents are sealed, as CouchDB seals them: one view's map function
// cannot change what the next one sees. Only fresh JSON.parse output is
// sealed here, where no object is reachable twice, so each is frozen
// without asking first; arrays are walked by index (their own property
// names would be a string per element).
function __freeze(o) {
  Object.freeze(o);
  var i, v;
  if (Array.isArray(o)) {
    for (i = 0; i < o.length; i++) {
      v = o[i];
      if (v !== null && typeof v === "object") {
        __freeze(v);
      }
    }
    return o;
  }
  var names = Object.keys(o);
  for (i = 0; i < names.length; i++) {
    v = o[names[i]];
    if (v !== null && typeof v === "object") {
      __freeze(v);
    }
  }
  return o;
}

// CommonJS modules of the design document: a map function may
// require("views/lib/NAME"), resolved against {views: {lib: …}}.
function __resolve(names, mod) {
  if (names.length === 0) {
    if (typeof mod.current !== "string") {
      throw ["error", "invalid_require_path", "Must require a JavaScript string, not: " + typeof mod.current];
    }
    return { current: mod.current, parent: mod.parent, id: mod.id, exports: {} };
  }
  var n = names.shift();
  if (n === "..") {
    if (!(mod.parent && mod.parent.parent)) {
      throw ["error", "invalid_require_path", "Object has no parent " + JSON.stringify(mod.current)];
    }
    return __resolve(names, { id: mod.id.slice(0, mod.id.lastIndexOf("/")), parent: mod.parent.parent, current: mod.parent.current });
  }
  if (n === ".") {
    if (!mod.parent) {
      throw ["error", "invalid_require_path", "Object has no parent " + JSON.stringify(mod.current)];
    }
    return __resolve(names, { parent: mod.parent, current: mod.current, id: mod.id });
  }
  if (mod.current === null || typeof mod.current !== "object" || !Object.prototype.hasOwnProperty.call(mod.current, n)) {
    throw ["error", "invalid_require_path", "Object has no property \"" + n + "\". " + JSON.stringify(mod.current)];
  }
  return __resolve(names, { current: mod.current[n], parent: mod, id: mod.id ? mod.id + "/" + n : n });
}

function __require(name, parent) {
  var root = { current: { views: { lib: __lib } }, id: "" };
  var start = parent ? parent : root;
  var mod = __resolve(String(name).split("/"), name.charAt(0) === "." ? start : root);
  if (!Object.prototype.hasOwnProperty.call(__moduleCache, mod.id)) {
    // An empty exports object first: a circular require ends there.
    __moduleCache[mod.id] = {};
    var fn;
    try {
      fn = (0, eval)("(function (module, exports, require) { " + mod.current + "\n})");
      fn.call(globalThis, mod, mod.exports, function (n) {
        return __require(n, mod);
      });
    } catch (e) {
      throw ["error", "compilation_error", "Module require('" + name + "') raised error " + __errstr(e)];
    }
    __moduleCache[mod.id] = mod.exports;
  }
  return __moduleCache[mod.id];
}

function require(name) {
  return __require(name, null);
}

function __compile(source) {
  var f;
  try {
    f = (0, eval)("(" + source + "\n)");
  } catch (e) {
    return "compilation_error: " + __errstr(e) + " (" + source + ")";
  }
  if (typeof f !== "function") {
    return "compilation_error: Expression does not eval to a function. (" + source + ")";
  }
  return f;
}

// Host: __init(libJson, mapSources, reduceSources) → "" or an error.
function __init(libJson, maps, reduces) {
  __lib = JSON.parse(libJson);
  var all = [[JSON.parse(maps), __maps], [JSON.parse(reduces), __reduces]];
  for (var k = 0; k < all.length; k++) {
    var sources = all[k][0];
    for (var i = 0; i < sources.length; i++) {
      var f = __compile(sources[i]);
      if (typeof f === "string") {
        return f;
      }
      all[k][1].push(f);
    }
  }
  return "";
}

// What CouchDB does not swallow per document: "fatal_error", ["fatal",
// …], and the engine's InternalError (out of memory, interrupted).
function __fatal(e) {
  return e === "fatal_error" || (isArray(e) && e[0] === "fatal") ||
    (e !== null && typeof e === "object" && e.name === "InternalError");
}

// Host: __map(i, key, json) → the rows as JSON ("[[k,v],…]"), or "!" and
// the exception for a map that threw on this document (it then has no
// rows, as in CouchDB). `key` names the document's revision: the views of
// one design document parse and seal a document once.
function __map(i, key, json) {
  if (__lastKey !== key) {
    __lastDoc = null;
    __lastDoc = __freeze(JSON.parse(json));
    __lastKey = key;
  }
  __rows = [];
  try {
    __maps[i](__lastDoc);
  } catch (e) {
    __rows = null;
    if (__fatal(e)) {
      throw e;
    }
    return "!" + __errstr(e);
  }
  // Most documents emit nothing for most views: no stringify for those.
  var out = __rows.length === 0 ? "[]" : JSON.stringify(__rows);
  __rows = null;
  return out;
}

// Host: __reduce(i, kvsJson, rereduce) → the reduction as JSON, or "!" and
// the exception (CouchDB then logs it and reduces to null).
function __reduce(i, json, rereduce) {
  var input = JSON.parse(json);
  var keys = null;
  var values = input;
  if (!rereduce) {
    keys = new Array(input.length);
    values = new Array(input.length);
    for (var j = 0; j < input.length; j++) {
      keys[j] = input[j][0];
      values[j] = input[j][1];
    }
  }
  var r;
  try {
    r = __reduces[i](keys, values, rereduce);
  } catch (e) {
    if (__fatal(e)) {
      throw e;
    }
    return "!" + __errstr(e);
  }
  var out = JSON.stringify(r);
  return out === undefined ? "null" : out;
}
