//! Tidy checks of the source tree, run by `cargo test --workspace`: every
//! Rust file starts with a `//!` line and stays under 600 lines, the
//! repository root holds only the project's own files, every on-disk magic
//! is documented in docs/FORMAT.md, and the module graphs of the library
//! crates have no cycles.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Longest source file allowed, in lines.
const MAX_LINES: usize = 600;

/// What may sit at the repository root (tracked or not, unless ignored).
const ROOT_ENTRIES: [&str; 11] = [
    ".cargo",
    ".ci",
    ".gitignore",
    "Cargo.lock",
    "Cargo.toml",
    "README.md",
    "bench",
    "docs",
    "engine",
    "shard",
    "xtask",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Paths (relative to the root) that git lists: tracked files, and
/// untracked ones that no ignore rule covers.
fn git_files() -> Vec<String> {
    let out = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(repo())
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8(out.stdout)
        .expect("paths are UTF-8")
        .lines()
        .filter(|p| repo().join(p).exists())
        .map(str::to_owned)
        .collect()
}

fn rust_files() -> Vec<String> {
    git_files()
        .into_iter()
        .filter(|p| p.ends_with(".rs"))
        .collect()
}

#[test]
fn every_rust_file_starts_with_a_module_doc_line() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|p| {
            let text = fs::read_to_string(repo().join(p)).expect("readable");
            let first = text.lines().find(|l| !l.starts_with("#!["));
            !first.is_some_and(|l| l.starts_with("//!"))
        })
        .collect();
    assert!(missing.is_empty(), "no `//!` first line: {missing:?}");
}

#[test]
fn no_rust_file_is_over_the_line_limit() {
    let long: Vec<(String, usize)> = rust_files()
        .into_iter()
        .map(|p| {
            let lines = fs::read_to_string(repo().join(&p))
                .expect("readable")
                .lines()
                .count();
            (p, lines)
        })
        .filter(|&(_, n)| n > MAX_LINES)
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn the_repository_root_holds_only_the_project_files() {
    let unexpected: BTreeSet<String> = git_files()
        .iter()
        .map(|p| p.split('/').next().unwrap_or(p).to_owned())
        .filter(|top| !ROOT_ENTRIES.contains(&top.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected at the repository root (commit no outputs; ignore them or move them under target/): {unexpected:?}"
    );
}

#[test]
fn every_on_disk_magic_is_in_the_format_document() {
    let format_doc = fs::read_to_string(repo().join("docs/FORMAT.md")).expect("docs/FORMAT.md");
    let mut magics = Vec::new();
    for p in rust_files()
        .iter()
        .filter(|p| p.starts_with("shard/src/format/"))
    {
        let text = fs::read_to_string(repo().join(p)).expect("readable");
        for line in text
            .lines()
            .filter(|l| l.contains("MAGIC") && l.contains("const"))
        {
            if let Some(at) = line.find("b\"") {
                let rest = &line[at + 2..];
                let end = rest.find('"').expect("a closed byte string");
                magics.push((p.clone(), rest[..end].to_owned()));
            }
        }
    }
    assert!(
        magics.len() >= 5,
        "expected the magics of batches, segments, sidecars, the checkpoint and the clean marker; found {magics:?}"
    );
    let undocumented: Vec<_> = magics
        .into_iter()
        .filter(|(_, m)| !format_doc.contains(m.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "magics missing from docs/FORMAT.md: {undocumented:?}"
    );
}

/// The module path of a source file under `src` (`a/b.rs` and `a/b/mod.rs`
/// are `a::b`; the crate root is empty).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// Every path named after `crate::` in `text`, with `use` groups expanded:
/// `crate::a::{b, c::D}` gives `a::b` and `a::c::D`.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        from = start + "crate::".len();
        if !preceded {
            let mut pos = from;
            tree(bytes, &mut pos, Vec::new(), &mut out);
        }
    }
    out
}

fn skip_space(b: &[u8], pos: &mut usize) {
    while *pos < b.len() && b[*pos].is_ascii_whitespace() {
        *pos += 1;
    }
}

/// Parses a path tree at `pos` (after a `::`) below `prefix`.
fn tree(b: &[u8], pos: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    skip_space(b, pos);
    if *pos < b.len() && b[*pos] == b'{' {
        *pos += 1;
        loop {
            skip_space(b, pos);
            if *pos >= b.len() || b[*pos] == b'}' {
                *pos += 1;
                return;
            }
            tree(b, pos, prefix.clone(), out);
            skip_space(b, pos);
            // Skip `as Name` and the separator.
            while *pos < b.len() && b[*pos] != b',' && b[*pos] != b'}' {
                *pos += 1;
            }
            if *pos < b.len() && b[*pos] == b',' {
                *pos += 1;
            }
        }
    }
    let start = *pos;
    while *pos < b.len() && (b[*pos].is_ascii_alphanumeric() || b[*pos] == b'_') {
        *pos += 1;
    }
    let ident = String::from_utf8_lossy(&b[start..*pos]).into_owned();
    let mut path = prefix;
    if !ident.is_empty() && ident != "self" {
        path.push(ident);
    }
    if b[*pos..].starts_with(b"::") {
        *pos += 2;
        tree(b, pos, path, out);
    } else {
        out.push(path);
    }
}

/// Edges between modules of the crate whose sources are under `src`: from
/// each file's module to every module it names. A module naming its own
/// ancestor (a child file of a split `impl`, or a child using its parent's
/// items) is the same concept and not counted.
fn module_edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<PathBuf> = rust_files()
        .iter()
        .map(|p| repo().join(p))
        .filter(|p| p.starts_with(src))
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(src, f);
        let text = fs::read_to_string(f).expect("readable");
        for path in crate_paths(&text) {
            let Some(to) = (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains(m))
            else {
                continue;
            };
            let is_ancestor = to.is_empty() || from == to || from.starts_with(&format!("{to}::"));
            if !is_ancestor {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A cycle in `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

/// The same graph with every module folded into its top-level module.
fn top_level(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_owned();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in edges {
        for to in tos {
            if top(from) != top(to) {
                out.entry(top(from)).or_default().insert(top(to));
            }
        }
    }
    out
}

#[test]
fn the_module_graphs_have_no_cycles() {
    for src in ["shard/src", "engine/src", "bench/src/bin/load", "xtask/src"] {
        let edges = module_edges(&repo().join(src));
        if let Some(cycle) = find_cycle(&edges) {
            panic!("{src}: modules import each other: {}", cycle.join(" -> "));
        }
        if let Some(cycle) = find_cycle(&top_level(&edges)) {
            panic!(
                "{src}: top-level modules import each other: {}",
                cycle.join(" -> ")
            );
        }
    }
}

/// The checker itself finds a cycle and expands `use` groups.
#[test]
fn the_cycle_checker_sees_grouped_imports() {
    let paths = crate_paths("use crate::{a::{b, c::D}, e};\nlet x = crate::f::g(1);");
    assert_eq!(
        paths,
        vec![
            vec!["a".to_owned(), "b".to_owned()],
            vec!["a".into(), "c".into(), "D".into()],
            vec!["e".into()],
            vec!["f".into(), "g".into()],
        ]
    );
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    assert_eq!(find_cycle(&edges), None);
    edges.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
