//! The layering of `src/`, read from the code's own imports: no import cycle between the
//! top-level modules, and each outside dependency imported by its one owner.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Every `.rs` file under `src/`, with its top-level module (`cache` for
/// `src/cache/l1.rs`); `lib.rs` and `main.rs` are the crate's roots and are left out.
fn files() -> Vec<(String, PathBuf)> {
    crate::helpers::files_under(Path::new(SRC), "rs")
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(SRC).unwrap().to_str().unwrap().to_owned();
            let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
            (top != "lib" && top != "main").then(|| (top.to_owned(), path))
        })
        .collect()
}

/// The code of a file, without comments and without its `#[cfg(test)]` module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules each top-level module names as `crate::<module>`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, path) in files() {
        let code = code(&path);
        let edges = graph.entry(top.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                edges.insert(name);
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    visit(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_cycle_between_the_top_level_modules() {
    let graph = graph();
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| format!("{} -> {}", c.join(" -> "), c[0]))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn each_outside_dependency_is_imported_by_its_owner_only() {
    // (crate as written in code, the files or folders allowed to name it)
    let owners: [(&str, &[&str]); 5] = [
        ("tokio_postgres::", &["postgres/"]),
        ("deadpool_postgres::", &["postgres/"]),
        ("fred::", &["redis/"]),
        ("moka::", &["cache/l1.rs", "cache/entry.rs"]),
        ("axum::", &["api/", "bench/contender.rs"]),
    ];
    let mut strays = Vec::new();
    for (_, path) in files() {
        let rel = path.strip_prefix(SRC).unwrap().to_str().unwrap().to_owned();
        let code = code(&path);
        for (krate, allowed) in owners {
            let name = &krate[..krate.len() - 2];
            let named = code.contains(krate)
                || code.contains(&format!("use {name};"))
                || code.contains(&format!("use {name}::"));
            if named && !allowed.iter().any(|a| rel.starts_with(a)) {
                strays.push(format!("src/{rel} imports {name}"));
            }
        }
    }
    assert!(strays.is_empty(), "{}", strays.join("\n"));
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("a".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle_from(&graph, "a"), Some(vec!["a".into(), "b".into()]));
    assert_eq!(cycle_from(&graph, "c"), None);
}
