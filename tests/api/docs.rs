//! The README and `docs/` name only files that exist, and point nowhere outside the
//! repository: a renamed or removed file fails here, not in a newcomer's hands.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Folders of the repository whose paths the documents name in backticks.
const TOP: [&str; 7] = [
    "src/",
    "lua/",
    "tests/",
    "scripts/",
    "benches/",
    "migrations/",
    "docs/",
];

/// Every Markdown page: the README and everything under `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![Path::new(ROOT).join("README.md")];
    pages.extend(crate::helpers::files_under(
        &Path::new(ROOT).join("docs"),
        "md",
    ));
    pages
}

/// Repository paths named in backticks (`src/cache/l1.rs`), as written.
fn named_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| TOP.iter().any(|top| t.starts_with(top)))
        .filter(|t| !t.contains(' ') && !t.contains('<') && !t.contains('*'))
        .map(|t| t.trim_end_matches(['.', ',', ':']).to_owned())
        .collect()
}

/// Targets of Markdown links (`[text](target)`), without any `#fragment`.
fn link_targets(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            let end = rest.find(')')?;
            let target = rest[..end].split('#').next().unwrap_or("");
            (!target.is_empty()).then(|| target.to_owned())
        })
        .collect()
}

#[test]
fn every_path_the_readme_and_docs_name_exists() {
    let mut missing = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(ROOT).unwrap().display().to_string();
        for path in named_paths(&text) {
            if !Path::new(ROOT).join(&path).exists() {
                missing.push(format!("{name}: `{path}`"));
            }
        }
        for target in link_targets(&text) {
            if target.contains("://") {
                missing.push(format!("{name}: ({target}) points outside the repository"));
            } else if !page.parent().unwrap().join(&target).exists() {
                missing.push(format!("{name}: ({target})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named but missing:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readme_stays_a_front_door() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; details go to docs/"
    );
    for section in [
        "## Quick start",
        "## Try it",
        "## The request path",
        "## Code tour",
    ] {
        assert!(readme.contains(section), "README.md lacks {section}");
    }
}

#[test]
fn the_path_finder_sees_a_missing_file() {
    let text = "see `src/cache/l1.rs` and `src/no/such_file.rs`, and [x](docs/api.md)";
    assert_eq!(
        named_paths(text),
        ["src/cache/l1.rs", "src/no/such_file.rs"]
    );
    assert_eq!(link_targets(text), ["docs/api.md"]);
    assert!(!Path::new(ROOT).join("src/no/such_file.rs").exists());
}
