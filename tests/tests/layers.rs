//! The code layout's rules, checked on the sources (README, "Code layout"): each crate's
//! top-level modules import one another one way (no cycles), nothing in flagd imports
//! from `http` but `server`, the store knows neither the HTTP errors nor the metrics, and
//! no source file outside tests is over 600 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .expect("a source directory")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Unit tests in a file of their own (`tests.rs`, or anything under a `tests` folder).
fn is_test_file(f: &Path) -> bool {
    f.file_name().is_some_and(|n| n == "tests.rs")
        || f.components().any(|c| c.as_os_str() == "tests")
}

/// A file's top-level module within its crate (`store` for `src/store/write.rs`), or
/// `None` for the crate root (`lib.rs`, `main.rs`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (!matches!(name.as_str(), "lib" | "main" | "bin")).then_some(name)
}

/// Top-level modules `file` refers to with `crate::…`.
fn refers_to(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        // `flagd_core::…` and the like are other crates, not `crate::`.
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The edges between a crate's top-level modules.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(m) = top_module(src, &f) else {
            continue;
        };
        // Test code may use any layer to set things up.
        if is_test_file(&f) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("readable source");
        let entry = g.entry(m.clone()).or_default();
        // Comments may name modules (`crate::error` in prose) without importing them.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for to in refers_to(&code) {
            let is_module = src.join(format!("{to}.rs")).exists() || src.join(&to).is_dir();
            if to != m && is_module {
                entry.insert(to);
            }
        }
    }
    g
}

/// A cycle in `g`, if there is one.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

const CRATES: [&str; 4] = ["flagd/src", "flagd/cli/src", "sdk/src", "sdk/core/src"];

#[test]
fn modules_import_one_another_one_way() {
    for c in CRATES {
        let g = graph(&root().join(c));
        assert!(g.len() > 1, "{c}: no modules found");
        if let Some(cy) = cycle(&g) {
            panic!("{c}: modules import each other: {}", cy.join(" → "));
        }
    }
}

#[test]
fn nothing_in_flagd_imports_http_but_server_and_the_store_stands_alone() {
    let g = graph(&root().join("flagd/src"));
    for (m, to) in &g {
        assert!(
            m == "server" || m == "http" || !to.contains("http"),
            "flagd::{m} imports from http"
        );
    }
    let store = &g["store"];
    for layer in ["http", "error", "metrics", "hub", "bus", "state", "auth"] {
        assert!(!store.contains(layer), "the store imports {layer}");
    }
    // The state is a leaf: it names the parts, nothing it names imports it back.
    for (m, to) in &g {
        if m != "state" && g["state"].contains(m) {
            assert!(!to.contains("state"), "{m} and state import each other");
        }
    }
}

#[test]
fn no_source_file_outside_tests_is_over_600_lines() {
    let mut over = Vec::new();
    for c in CRATES
        .iter()
        .chain(&["examples/src", "sdk/bench/src", "tests/src"])
    {
        let dir = root().join(c);
        if !dir.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for f in files {
            if is_test_file(&f) {
                continue;
            }
            let n = std::fs::read_to_string(&f)
                .expect("readable")
                .lines()
                .count();
            if n > MAX_LINES {
                over.push(format!("{} ({n} lines)", f.display()));
            }
        }
    }
    assert!(over.is_empty(), "over {MAX_LINES} lines: {over:#?}");
}
