//! JSON as CouchDB's Erlang renders it, where that leaks into what a client
//! sees: error reasons print values with `~w` or `~p` (`<<97>>`,
//! `{[{<<"a">>,1}]}`), and a generated index name is the SHA-1 of the
//! external term format (`term_to_binary`) of the index request, so an
//! index created here gets the design document id CouchDB would give it.
//!
//! Pure: no I/O, no knowledge of selectors or indexes.

use serde_json::{Number, Value};

/// `io_lib:format("~w", [V])` of a JSON value decoded by CouchDB (jiffy):
/// strings are binaries printed as byte lists, objects `{[{K,V}]}`.
pub(crate) fn w(v: &Value) -> String {
    let mut out = String::new();
    write_term(v, &mut out, false);
    out
}

/// `io_lib:format("~p", [V])`: as [`w`] but a binary of printable ASCII is
/// shown as `<<"text">>`. (Erlang also breaks long terms over lines at 80
/// columns; settee keeps one line.)
pub(crate) fn p(v: &Value) -> String {
    let mut out = String::new();
    write_term(v, &mut out, true);
    out
}

fn write_bin(s: &str, out: &mut String, pretty: bool) {
    if pretty && !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.push_str("<<\"");
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str("\">>");
        return;
    }
    out.push_str("<<");
    for (i, b) in s.bytes().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&b.to_string());
    }
    out.push_str(">>");
}

fn write_term(v: &Value, out: &mut String, pretty: bool) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => write_bin(s, out, pretty),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_term(item, out, pretty);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push_str("{[");
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('{');
                write_bin(k, out, pretty);
                out.push(',');
                write_term(v, out, pretty);
                out.push('}');
            }
            out.push_str("]}");
        }
    }
}

/// An integer as Erlang prints it; a float in Erlang's shortest
/// round-trip form (`2.5`, `1.0e20`, `1.0e-5`).
fn number(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    let a = f.abs();
    if a == 0.0 || (1e-4..1e16).contains(&a) {
        let s = format!("{f:?}");
        if s.contains('.') || s.contains('e') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        // Rust prints `1e20`; Erlang always has a fraction: `1.0e20`.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !m.contains('.') => format!("{m}.0e{e}"),
            _ => s,
        }
    }
}

/// `term_to_binary(T, [{minor_version, 1}])` for the terms an index
/// request becomes: JSON values as jiffy decodes them, atoms, tuples and
/// lists.
#[derive(Debug, Clone)]
pub(crate) enum Term<'a> {
    Json(&'a Value),
    Atom(&'static str),
    Int(i64),
    Tuple(Vec<Term<'a>>),
    List(Vec<Term<'a>>),
}

const VERSION: u8 = 131;
const NEW_FLOAT: u8 = 70;
const SMALL_INTEGER: u8 = 97;
const INTEGER: u8 = 98;
const SMALL_TUPLE: u8 = 104;
const NIL: u8 = 106;
const LIST: u8 = 108;
const BINARY: u8 = 109;
const SMALL_BIG: u8 = 110;
const ATOM: u8 = 100;

/// The external term format of `t`.
pub(crate) fn term_to_binary(t: &Term<'_>) -> Vec<u8> {
    let mut out = vec![VERSION];
    encode(t, &mut out);
    out
}

fn len32(n: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn encode_list<'a>(items: impl ExactSizeIterator<Item = Term<'a>>, out: &mut Vec<u8>) {
    if items.len() == 0 {
        out.push(NIL);
        return;
    }
    out.push(LIST);
    len32(items.len(), out);
    for item in items {
        encode(&item, out);
    }
    out.push(NIL);
}

fn encode_int(i: i128, out: &mut Vec<u8>) {
    if (0..=255).contains(&i) {
        out.push(SMALL_INTEGER);
        out.push(i as u8);
    } else if let Ok(i) = i32::try_from(i) {
        out.push(INTEGER);
        out.extend_from_slice(&i.to_be_bytes());
    } else {
        out.push(SMALL_BIG);
        let mut digits = Vec::new();
        let mut m = i.unsigned_abs();
        while m > 0 {
            digits.push((m & 0xff) as u8);
            m >>= 8;
        }
        out.push(digits.len() as u8);
        out.push(u8::from(i < 0));
        out.extend_from_slice(&digits);
    }
}

fn encode(t: &Term<'_>, out: &mut Vec<u8>) {
    match t {
        Term::Atom(a) => {
            // Latin-1 atoms, as CouchDB 3.4's runtime writes them (checked
            // against the names CouchDB 3.4.3 generates).
            out.push(ATOM);
            out.extend_from_slice(&(a.len() as u16).to_be_bytes());
            out.extend_from_slice(a.as_bytes());
        }
        Term::Int(i) => encode_int(i128::from(*i), out),
        Term::Tuple(items) => {
            out.push(SMALL_TUPLE);
            out.push(items.len() as u8);
            for item in items {
                encode(item, out);
            }
        }
        Term::List(items) => encode_list(items.iter().cloned(), out),
        Term::Json(v) => match v {
            Value::Null => encode(&Term::Atom("null"), out),
            Value::Bool(true) => encode(&Term::Atom("true"), out),
            Value::Bool(false) => encode(&Term::Atom("false"), out),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    encode_int(i128::from(i), out);
                } else if let Some(u) = n.as_u64() {
                    encode_int(i128::from(u), out);
                } else {
                    out.push(NEW_FLOAT);
                    out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
                }
            }
            Value::String(s) => {
                out.push(BINARY);
                len32(s.len(), out);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Array(items) => encode_list(items.iter().map(Term::Json), out),
            Value::Object(members) => {
                // jiffy's `{[{K, V}, …]}`.
                out.push(SMALL_TUPLE);
                out.push(1);
                let pairs: Vec<(Value, &Value)> = members
                    .iter()
                    .map(|(k, v)| (Value::String(k.clone()), v))
                    .collect();
                if pairs.is_empty() {
                    out.push(NIL);
                    return;
                }
                out.push(LIST);
                len32(pairs.len(), out);
                for (k, v) in &pairs {
                    out.push(SMALL_TUPLE);
                    out.push(2);
                    encode(&Term::Json(k), out);
                    encode(&Term::Json(v), out);
                }
                out.push(NIL);
            }
        },
    }
}

/// SHA-1 (FIPS 180-4) in lower-case hex: `crypto:hash(sha, …)` then
/// `mango_util:enc_hex`. Only for names, never for security.
pub(crate) fn sha1_hex(data: &[u8]) -> String {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_erlang() {
        assert_eq!(w(&json!("x")), "<<120>>");
        assert_eq!(
            w(&json!({"b": [1, 2.5, "é"]})),
            "{[{<<98>>,[1,2.5,<<195,169>>]}]}"
        );
        assert_eq!(w(&json!({})), "{[]}");
        assert_eq!(p(&json!({"a": "up"})), "{[{<<\"a\">>,<<\"up\">>}]}");
        assert_eq!(w(&json!([1.5, 1])), "[1.5,1]");
        assert_eq!(p(&json!("")), "<<>>");
        assert_eq!(w(&json!(1e20)), "1.0e20");
    }

    #[test]
    fn sha1_is_sha1() {
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }
}
