//! docs/design.md's crate table against the crates' own manifests: every crate is in the
//! table, and its "depends on" cell names exactly its normal dependencies (internal ones
//! by their short name: `store` for `ordo-store`).

use std::collections::BTreeSet;
use std::path::Path;

/// The workspace root (this crate is `crates/ordo-cli`).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

/// The names under `[dependencies]` of a manifest.
fn normal_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut in_section = false;
    let mut names = BTreeSet::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[dependencies]";
            continue;
        }
        if !in_section || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split('=').next().unwrap().trim();
        let name = name.strip_suffix(".workspace").unwrap_or(name);
        let name = name.strip_prefix("ordo-").unwrap_or(name);
        names.insert(name.to_string());
    }
    names
}

/// The names a "depends on" cell lists: `hyper(-util)` is hyper and hyper-util,
/// `rustls (ring)` is rustls.
fn listed(cell: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for item in cell.split(',') {
        let item = item.trim();
        let item = item.split(" (").next().unwrap();
        if let Some(base) = item.strip_suffix("(-util)") {
            names.insert(base.to_string());
            names.insert(format!("{base}-util"));
        } else if !item.is_empty() {
            names.insert(item.to_string());
        }
    }
    names
}

#[test]
fn the_crate_table_names_every_crate_and_its_dependencies() {
    let design = std::fs::read_to_string(root().join("docs/design.md")).unwrap();
    let mut checked = 0;
    let mut wrong = Vec::new();
    let mut manifests: Vec<_> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("Cargo.toml"))
        .collect();
    manifests.push(root().join("examples/inventory/Cargo.toml"));
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest).unwrap();
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap();
        let row_start = format!("| `{name}` ");
        let Some(row) = design.lines().find(|l| l.starts_with(&row_start)) else {
            wrong.push(format!(
                "`{name}` has no row in docs/design.md's crate table"
            ));
            continue;
        };
        let cell = row.trim_end_matches('|').rsplit('|').next().unwrap();
        let (actual, documented) = (normal_dependencies(&text), listed(cell));
        if actual != documented {
            wrong.push(format!(
                "`{name}`: the table lists {:?} it does not depend on and misses {:?}",
                documented.difference(&actual).collect::<Vec<_>>(),
                actual.difference(&documented).collect::<Vec<_>>()
            ));
        }
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} crates found");
    assert!(
        wrong.is_empty(),
        "docs/design.md drifted:\n{}",
        wrong.join("\n")
    );
}
