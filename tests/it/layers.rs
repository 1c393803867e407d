//! The crate's floors: every module uses only those listed above it in the `lib.rs`
//! module map (tests excepted), so the map is true and no layer reaches up.

use std::path::Path;

/// The top-level modules in the map's order, read from `src/lib.rs`.
fn map_order(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split_once('`').map(|(m, _)| m.to_string()))
        .collect()
}

/// `crate::NAME` paths in the non-test part of every file below `dir`, as (file, NAME).
fn uses(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            uses(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((path.display().to_string(), name));
        }
    }
}

#[test]
fn no_module_uses_one_above_it_in_the_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = map_order(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    for m in ["store", "budget", "ladder", "search", "stats"] {
        assert!(
            order.iter().any(|o| o == m),
            "{m} is not in the map: {order:?}"
        );
    }
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut found = Vec::new();
    uses(&src, &mut found);
    let mut upward = Vec::new();
    for (file, dep) in &found {
        let rel = file.strip_prefix(&format!("{}/", src.display())).unwrap();
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
        // The error type wraps the errors of the modules below it.
        if top == "error" {
            continue;
        }
        if let (Some(me), Some(them)) = (rank(top), rank(dep))
            && them > me
        {
            upward.push(format!("{rel} uses crate::{dep}"));
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}
