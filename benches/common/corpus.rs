//! The app-shaped course corpus the query benchmarks share with PouchDB:
//! one deterministic generator, written as NDJSON for
//! `scripts/bench/pouch-query.js` and into a replica for the Rust benches,
//! so both sides index byte-identical documents (same ids, revisions and
//! bodies; the NDJSON line is `{"_id":…,"_rev":…,` + the stored body).
//!
//! Shapes follow `../shared/corpora/go-course` (vue-skuilder's Go course,
//! see its `APP-OPERATIONS.md`), scaled to `cards` cards:
//!
//! - `CourseConfig`, and the app's three design documents exactly as in
//!   the corpus's `manifest.json` (`_design/elo`, `_design/getTags`,
//!   `_design/cardsByInexperience`; maps only, no reduce);
//! - per card, in generation order: a `DISPLAYABLE_DATA` document
//!   `dd-<32 hex>` (`data: [{name: "Input", data: <markdown, ~90 chars>},
//!   {name: "Uploads"}]`, `course` the course id, `id_datashape`,
//!   `author`), then the `CARD` `c-<32 hex>` (`course: "default"`,
//!   `id_displayable_data: [its dd id]`, `id_view`, `docType`,
//!   `elo: {global: {score, count}, tags: {<tag>: {score, count}}, misc: {}}`);
//!   ids are random-looking (uuid-like), so id order is not generation order;
//! - one extra, unreferenced `DISPLAYABLE_DATA` per 50 cards (the corpus
//!   has 4 of 206);
//! - `tags` `TAG-<name>` documents at the end (`course`, `docType`,
//!   `name`, `snippit`, `taggedCards`, `wiki`); each card is listed by 2
//!   to 5 of them (`elo.tags` holds a rating for one of those on 40% of
//!   the cards).
//!
//! Ratings: `elo.global.score` is an integer in 700..=1300 (a sum of four
//! uniform draws, so bell-shaped around 1000, with many ties), and
//! `elo.global.count` is uniform in 0..=16 as in the corpus, except for one
//! card in 8192 (a "veteran", count 17..=216): so `{"elo.global.count":
//! {"$gt": 16}}` ([`SCAN_COUNT_GT`]) matches about 12 cards in 100k, fewer
//! than a 25-document page, and a `_find` without an index must read the
//! whole database to answer it. Likewise [`SEARCH_WORD`] appears in the
//! markdown of about one `DISPLAYABLE_DATA` in 5000 (the app's admin search
//! is `{docType: "DISPLAYABLE_DATA", "data.0.data": {$regex: ".*<word>.*"}}`).
//!
//! All revisions are generation 1 (`1-<32 hex>`); nothing is deleted or
//! in conflict. The same `(cards, tags, seed)` always gives the same bytes.

use serde_json::value::RawValue;
use serde_json::{json, Value};
use settee::internals::{self, IncomingRev, WriteBatch};
use settee::revtree::RevPath;
use settee::{Replica, ReplicaConfig};
use std::io::Write;
use std::path::Path;

/// `find_scan`'s threshold: `{"elo.global.count": {"$gt": SCAN_COUNT_GT}}`
/// matches only the rare veteran cards.
pub const SCAN_COUNT_GT: u64 = 16;

/// The word `find_regex` looks for (about one `DISPLAYABLE_DATA` in 5000).
pub const SEARCH_WORD: &str = "goroutine";

/// The go-course's course id (`DISPLAYABLE_DATA.course`, `TAG.course`).
pub const COURSE_ID: &str = "2aeb8315ef78f3e89ca386992d00825b";

/// The app's design documents, `manifest.designDocs` of the go-course
/// corpus, byte for byte (compact JSON).
pub const DESIGN_DOCS_JSON: &str = r#"[{"_id":"_design/cardsByInexperience","views":{"cardsByInexperience":{"map":"function (doc) {\n                if (doc.docType && doc.docType === 'CARD') {\n                    if (doc.elo && doc.elo.global && typeof doc.elo.global.count == 'number') {\n                        emit(doc.elo.global.count, doc.elo);\n                    }\n                    else if (doc.elo && typeof doc.elo == 'number') {\n                        emit(0, doc.elo);\n                    }\n                    else {\n                        emit(0, 995 + Math.floor(10 * Math.random()));\n                    }\n                }\n            }"}}},{"_id":"_design/elo","views":{"elo":{"map":"function (doc) {\n                if (doc.docType && doc.docType === 'CARD') {\n                    if (doc.elo && typeof(doc.elo) === 'number') {\n                        emit(doc.elo, doc._id);\n                    } else if (doc.elo && doc.elo.global) {\n                        emit(doc.elo.global.score, doc._id);\n                    } else if (doc.elo) {\n                        emit(doc.elo.score, doc._id);\n                    } else {\n                        const randElo = 995 + Math.round(10 * Math.random());\n                        emit(randElo, doc._id);\n                    }\n                }\n            }"}}},{"_id":"_design/getTags","views":{"getTags":{"map":"function (doc) {\n                if (doc.docType && doc.docType === \"TAG\") {\n                    for (var cardIndex in doc.taggedCards) {\n                        emit(doc.taggedCards[cardIndex], {\n                            docType: doc.docType,\n                            name: doc.name,\n                            snippit: doc.snippit,\n                            wiki: '',\n                            taggedCards: []\n                        });\n                    }\n                }\n            }"}}}]"#;

/// One document: id, generation-1 revision hash and the body as stored
/// (a JSON object without `_id` and `_rev`).
pub struct CorpusDoc {
    /// The document id.
    pub id: String,
    /// The revision's hash: the revision is `1-<rev_hash>`.
    pub rev_hash: String,
    /// The body, without `_id` and `_rev`.
    pub body: Box<RawValue>,
}

impl CorpusDoc {
    fn new(id: String, rev_hash: String, body: &Value) -> CorpusDoc {
        CorpusDoc {
            id,
            rev_hash,
            body: serde_json::value::to_raw_value(body).unwrap(),
        }
    }

    /// The document as PouchDB or CouchDB stores it: `{"_id":…,"_rev":…,…}`.
    pub fn to_json_line(&self) -> String {
        let body = self.body.get();
        let rest = body.strip_prefix('{').unwrap_or(body);
        let mut line = format!(
            "{{\"_id\":{},\"_rev\":\"1-{}\"",
            serde_json::to_string(&self.id).unwrap(),
            self.rev_hash
        );
        if rest.trim_start() != "}" {
            line.push(',');
        }
        line.push_str(rest);
        line
    }

    /// The revision the store's commit path takes.
    pub fn to_incoming(&self) -> IncomingRev {
        IncomingRev {
            id: self.id.clone(),
            path: RevPath {
                start: 1,
                ids: vec![self.rev_hash.clone()],
            },
            deleted: false,
            body: self.body.clone(),
        }
    }
}

/// The generated corpus, documents in generation (and NDJSON) order.
pub struct Corpus {
    /// Cards generated.
    pub cards: u64,
    /// `TAG` documents generated.
    pub tags: u64,
    /// The seed.
    pub seed: u64,
    /// Every document: `CourseConfig`, the design documents, the
    /// `DISPLAYABLE_DATA` and `CARD` documents, the `TAG` documents.
    pub docs: Vec<CorpusDoc>,
    /// The card ids, in generation order (the order the benches pick
    /// cards from: see [`pick_card`]).
    pub card_ids: Vec<String>,
}

/// SplitMix64's finalizer: a bijection of `u64`.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 32 hex digits, distinct for distinct `(i, kind)` under one seed (the
/// low half is a bijection of `i`, `kind` and the seed).
fn hex32(seed: u64, i: u64, kind: u64) -> String {
    let low = mix((i | kind << 56) ^ mix(seed));
    let high = mix(low ^ 0x6a09_e667_f3bc_c908 ^ seed);
    format!("{high:016x}{low:016x}")
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(mix(seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len() as u64) as usize]
    }
}

const TAG_STEMS: &[&str] = &[
    "array",
    "best-practices",
    "binary",
    "bool",
    "built-ins",
    "channel",
    "channels",
    "closure",
    "code-blocks",
    "comments",
    "comparable",
    "concurrency",
    "constants",
    "conventions",
    "deadlocks",
    "defer",
    "embedded-types",
    "errors",
    "exports",
    "float",
    "flow-control",
    "functions",
    "garbage-collection",
    "generics",
    "godocs",
    "goroutines",
    "identifiers",
    "imports",
    "int",
    "interface",
    "keywords",
    "make",
    "maps",
    "methods",
    "modules",
    "mutex",
    "nil",
    "packages",
    "pointers",
    "runes",
    "select",
    "slices",
    "strings",
    "structs",
    "switch",
    "testing",
    "types",
    "unicode",
    "variables",
    "zero-value",
];

// Markdown vocabulary (no SEARCH_WORD in it, nor a word containing it).
const WORDS: &[&str] = &[
    "a",
    "the",
    "of",
    "to",
    "is",
    "in",
    "and",
    "value",
    "function",
    "channel",
    "slice",
    "map",
    "struct",
    "interface",
    "pointer",
    "method",
    "package",
    "type",
    "variable",
    "constant",
    "returns",
    "declare",
    "closed",
    "buffered",
    "nil",
    "zero",
    "string",
    "rune",
    "byte",
    "int",
    "error",
    "panic",
    "recover",
    "defer",
    "select",
    "case",
    "loop",
    "range",
    "append",
    "copy",
    "len",
    "cap",
    "make",
    "new",
    "import",
    "export",
    "compile",
    "runtime",
    "garbage",
    "collector",
    "receiver",
    "embedded",
    "field",
    "tag",
    "generic",
    "constraint",
    "mutex",
    "lock",
    "context",
    "statement",
];

fn markdown(rng: &mut Rng, rare: bool) -> String {
    let n = 8 + rng.below(13) as usize;
    let blank = rng.below(n as u64) as usize;
    let emphasis = rng.below(n as u64) as usize;
    let rare_at = rng.below(n as u64) as usize;
    let mut words = Vec::with_capacity(n + 1);
    for k in 0..n {
        let w = rng.pick(WORDS);
        if k == blank {
            let other = rng.pick(WORDS);
            words.push(format!("{{{{{w}||{other}}}}}"));
        } else if k == emphasis {
            words.push(format!("__{w}__"));
        } else {
            words.push(w.to_owned());
        }
        if rare && k == rare_at {
            words.push(format!("`{SEARCH_WORD}`"));
        }
    }
    let mut text = words.join(" ");
    text.push('.');
    if rng.below(10) == 0 {
        text.push_str("\n\n(see the language specification)");
    }
    text
}

fn tag_name(t: u64) -> String {
    let stems = TAG_STEMS.len() as u64;
    let stem = TAG_STEMS[(t % stems) as usize];
    if t < stems {
        stem.to_owned()
    } else {
        format!("{stem}-{}", t / stems)
    }
}

/// Generates the corpus: `cards` cards (with their displayable data),
/// `tags` tags (at least 5 are made: a card needs up to 5).
pub fn generate(cards: u64, tags: u64, seed: u64) -> Corpus {
    let tags = tags.max(5);
    let mut rng = Rng::new(seed);
    let mut docs = Vec::with_capacity((cards * 2 + cards / 50 + tags + 4) as usize);
    let mut card_ids = Vec::with_capacity(cards as usize);
    docs.push(CorpusDoc::new(
        "CourseConfig".into(),
        hex32(seed, 0, 9),
        &json!({
            "name": "Go (Programming Language)", "description": "", "public": true, "deleted": false,
            "creator": "Colin", "admins": [], "moderators": [],
            "dataShapes": [{"name": "default.datashape.Blanks",
                            "questionTypes": ["default.question.BlanksCard"]}],
            "questionTypes": [{"name": "default.question.BlanksCard", "viewList": ["FillInView"],
                               "dataShapeList": ["default.datashape.Blanks"]}],
            "courseID": COURSE_ID,
        }),
    ));
    for (k, dd) in design_docs().into_iter().enumerate() {
        docs.push(CorpusDoc::new(dd.0, hex32(seed, k as u64, 10), &dd.1));
    }
    let names: Vec<String> = (0..tags).map(tag_name).collect();
    let mut tagged: Vec<Vec<String>> = vec![Vec::new(); tags as usize];
    let mut dd_n = 0u64;
    let mut displayable = |rng: &mut Rng, docs: &mut Vec<CorpusDoc>| -> String {
        let id = format!("dd-{}", hex32(seed, dd_n, 1));
        let rare = rng.below(5000) == 0;
        let body = json!({
            "course": COURSE_ID,
            "data": [{"name": "Input", "data": markdown(rng, rare)}, {"name": "Uploads"}],
            "docType": "DISPLAYABLE_DATA",
            "id_datashape": "default.datashape.Blanks",
            "author": "Colin",
        });
        docs.push(CorpusDoc::new(id.clone(), hex32(seed, dd_n, 3), &body));
        dd_n += 1;
        id
    };
    for i in 0..cards {
        let dd = displayable(&mut rng, &mut docs);
        if i % 50 == 49 {
            displayable(&mut rng, &mut docs); // unreferenced, as in the corpus
        }
        let id = format!("c-{}", hex32(seed, i, 2));
        let k = 2 + rng.below(4);
        let mut mine: Vec<u64> = Vec::with_capacity(k as usize);
        while (mine.len() as u64) < k {
            let t = rng.below(tags);
            if !mine.contains(&t) {
                mine.push(t);
            }
        }
        for &t in &mine {
            tagged[t as usize].push(id.clone());
        }
        let score = 700 + (0..4).map(|_| rng.below(151)).sum::<u64>();
        let count = if rng.below(8192) == 0 {
            SCAN_COUNT_GT + 1 + rng.below(200)
        } else {
            rng.below(SCAN_COUNT_GT + 1)
        };
        let mut per_tag = serde_json::Map::new();
        if rng.below(10) < 4 {
            let t = mine[rng.below(k) as usize];
            let s = score + rng.below(41) - 20;
            let c = rng.below(count + 1);
            per_tag.insert(names[t as usize].clone(), json!({"score": s, "count": c}));
        }
        let body = json!({
            "course": "default",
            "id_displayable_data": [dd],
            "id_view": "default.question.BlanksCard.FillInView",
            "docType": "CARD",
            "elo": {"global": {"score": score, "count": count}, "tags": per_tag, "misc": {}},
        });
        docs.push(CorpusDoc::new(id.clone(), hex32(seed, i, 4), &body));
        card_ids.push(id);
    }
    for (t, cards) in tagged.into_iter().enumerate() {
        let name = &names[t];
        let body = json!({
            "course": COURSE_ID,
            "docType": "TAG",
            "name": name,
            "snippit": if t % 4 == 0 { String::new() } else { format!("About {name} in Go.") },
            "taggedCards": cards,
            "wiki": "",
        });
        docs.push(CorpusDoc::new(
            format!("TAG-{name}"),
            hex32(seed, t as u64, 5),
            &body,
        ));
    }
    Corpus {
        cards,
        tags,
        seed,
        docs,
        card_ids,
    }
}

/// The app's design documents: `(id, body without _id)`.
pub fn design_docs() -> Vec<(String, Value)> {
    let docs: Vec<Value> = serde_json::from_str(DESIGN_DOCS_JSON).unwrap();
    docs.into_iter()
        .map(|mut d| {
            let obj = d.as_object_mut().unwrap();
            let id = obj.remove("_id").unwrap();
            (id.as_str().unwrap().to_owned(), d)
        })
        .collect()
}

/// The `k`-th card picked for a query (the same on both sides): card
/// number `(k * 7919 + 104_729) % cards` in generation order.
pub fn pick_card(card_ids: &[String], k: u64) -> &str {
    let n = card_ids.len() as u64;
    &card_ids[((k * 7919 + 104_729) % n) as usize]
}

/// Writes the documents as NDJSON (one `{"_id","_rev",…}` per line), in
/// order; returns the bytes written.
pub fn write_ndjson(docs: &[CorpusDoc], path: &Path) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut bytes = 0;
    for d in docs {
        let line = d.to_json_line();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        bytes += line.len() as u64 + 1;
    }
    out.flush()?;
    Ok(bytes)
}

/// Opens a replica at `dir` and writes `docs` into it through the store's
/// replication commit path (`internals::commit_blocking`, batches of 1000
/// in the given order, as a pull writes them).
pub fn build_replica(dir: &Path, docs: &[CorpusDoc]) -> Replica {
    build_replica_with(dir, docs, ReplicaConfig::default())
}

/// [`build_replica`] with a replica configuration.
pub fn build_replica_with(dir: &Path, docs: &[CorpusDoc], config: ReplicaConfig) -> Replica {
    let replica = Replica::open(dir, config).unwrap();
    for chunk in docs.chunks(1000) {
        internals::commit_blocking(
            &replica,
            &WriteBatch {
                revs: chunk.iter().map(CorpusDoc::to_incoming).collect(),
                ..WriteBatch::default()
            },
        )
        .unwrap();
    }
    replica
}
