//! The source's layering, checked from the text of `src/` (no server, no
//! build of anything else: `cargo test --test layering`).
//!
//! 1. Data flows one way: a top-level module imports only modules of a
//!    lower layer (`LAYERS`), never the one that uses it.
//! 2. Only `src/store` adds methods to `Replica`.
//! 3. Inside `src/store`, no file imports another that imports it, directly
//!    or in a circle, and no file imports through `mod.rs` (which only
//!    declares the files and re-exports): every `use super::…` names the
//!    sibling file it comes from.
//!
//! "Imports" means a path in the code outside `#[cfg(test)]` modules:
//! `use super::x::…`, `super::x::…`, `crate::store::x::…` (inside the
//! store), `crate::m::…` (between top-level modules). Test modules may
//! reach anywhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom up; a module may import only modules
/// of lower layers (and crate-root items such as `crate::Error`).
const LAYERS: &[&[&str]] = &[
    &["revtree", "js", "remote"],
    &["store"],
    &["replicate", "views"],
    // Whether the remote is still the database a replica copied: reads the
    // pull's checkpoint (replicate) and the replica's identity record.
    &["identity"],
    &["outbox", "query"],
    &["sync", "serve"],
    &["cli"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The file's code without its `#[cfg(test)]` modules and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            // Skip the attribute's item: up to its closing brace at the
            // same indentation (a `mod tests { … }` or a single function).
            let indent = line.len() - t.len();
            for l in lines.by_ref() {
                let lt = l.trim_start();
                if lt.starts_with('}') && l.len() - lt.len() == indent {
                    break;
                }
                if lt.ends_with(';') && l.len() - lt.len() == indent {
                    break;
                }
            }
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every identifier that follows `prefix` in `code` (`super::` → `keys`
/// in `super::keys::meta`), expanding one level of `prefix{a, b::c}`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        // Not the tail of a longer path (`a::super::` does not occur in Rust,
        // but `xcrate::` could): the prefix must start a path.
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each top-level part of the group.
            let mut depth = 0;
            let mut part_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => part_start = true,
                    c if part_start && !c.is_whitespace() => {
                        part_start = false;
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            out.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The items `lib.rs` re-exports at the crate root, by the top-level module
/// that defines them (`Replica` → `store`): `crate::Replica` is an import
/// of `store` as much as `crate::store::Replica` is.
fn root_items() -> BTreeMap<String, String> {
    let lib = code(&src().join("lib.rs"));
    let mut out = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(path) = statement.trim_start().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, _)) = path.split_once("::") else {
            continue;
        };
        for item in names_after(path, &format!("{module}::")) {
            out.insert(item, module.to_owned());
        }
    }
    out
}

#[test]
fn top_level_modules_import_only_lower_layers() {
    let root = root_items();
    assert_eq!(root.get("Replica").map(String::as_str), Some("store"));
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, mods)| mods.iter().map(move |m| (*m, i)))
        .collect();
    let mut violations = Vec::new();
    for (module, &layer) in &layer_of {
        let dir = src().join(module);
        let mut files = if dir.is_dir() {
            rust_files(&dir)
        } else {
            Vec::new()
        };
        let file = src().join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        assert!(!files.is_empty(), "no source for module {module}");
        for file in files {
            for used in names_after(&code(&file), "crate::") {
                let used = root.get(&used).cloned().unwrap_or(used);
                match layer_of.get(used.as_str()) {
                    Some(&l) if used != *module && l >= layer => violations.push(format!(
                        "{} (layer {layer}) imports crate::{used} (layer {l})",
                        file.display()
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

/// `Replica` is the store's: a module above it reads and writes through
/// functions and handles of its own, not by adding methods to the store's
/// type (which would make `Replica`'s API the sum of every layer).
#[test]
fn only_the_store_adds_methods_to_replica() {
    let store = src().join("store");
    let outside: Vec<String> = rust_files(&src())
        .into_iter()
        .filter(|p| !p.starts_with(&store))
        .filter(|p| {
            code(p)
                .lines()
                .any(|l| l.starts_with("impl Replica ") || l.starts_with("impl Replica{"))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(outside.is_empty(), "{outside:#?}");
}

#[test]
fn store_files_import_each_other_one_way_only() {
    let dir = src().join("store");
    let files: BTreeMap<String, String> = rust_files(&dir)
        .into_iter()
        .filter(|p| p.parent() == Some(dir.as_path()))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, code(&p))
        })
        .collect();
    assert!(files.len() > 10, "found {} files in src/store", files.len());
    let mut graph: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut through_mod = Vec::new();
    for (name, code) in &files {
        if name == "mod" {
            // Declarations and re-exports only.
            for line in code.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let ok = [
                    "mod ",
                    "pub mod ",
                    "pub use ",
                    "pub(crate) use ",
                    "#[cfg(",
                    "}",
                    "};",
                ]
                .iter()
                .any(|p| line.starts_with(p))
                    || line.ends_with(',')
                    || line
                        .chars()
                        .all(|c| c.is_alphanumeric() || "_, ".contains(c));
                assert!(
                    ok,
                    "src/store/mod.rs does more than declare and re-export: {line}"
                );
            }
            continue;
        }
        let mut used = names_after(code, "super::");
        used.extend(names_after(code, "crate::store::"));
        let mut edges = BTreeSet::new();
        for u in used {
            if files.contains_key(&u) {
                if u != *name {
                    edges.insert(u);
                }
            } else {
                through_mod.push(format!("src/store/{name}.rs names super::{u}"));
            }
        }
        graph.insert(name, edges);
    }
    assert!(
        through_mod.is_empty(),
        "import items from the file that defines them, not through mod.rs: {through_mod:#?}"
    );
    // Depth-first search for a cycle.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<&str, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(true) => return None,
            Some(false) => {
                let from = stack.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = stack[from..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(node, false);
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node, true);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut state, &mut Vec::new()) {
            panic!(
                "src/store files import each other in a circle: {}",
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn the_checker_sees_imports_and_circles() {
    let text = "use super::{keys::{self, meta}, tx, Replica};\nfn f() { super::lock::open(); }\n";
    let names = names_after(text, "super::");
    let want: BTreeSet<String> = ["keys", "tx", "Replica", "lock"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.rs");
    std::fs::write(
        &path,
        "use super::a;\n#[cfg(test)]\nmod tests {\n    use super::b;\n}\nuse super::c;\n",
    )
    .unwrap();
    let seen = names_after(&code(&path), "super::");
    assert_eq!(seen, ["a", "c"].iter().map(|s| s.to_string()).collect());
}
