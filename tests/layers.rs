//! The module layering of `docs/architecture.md` ("Modules, bottom to top"): every
//! module of `src/` uses only modules below it, so there are no import circles.

use std::path::{Path, PathBuf};

/// Bottom to top; a module may use modules of lower layers only (and itself).
const LAYERS: &[&[&str]] = &[
    &["event"],
    &["protocol"],
    &["log"],
    &["fanout"],
    &["error", "config", "metrics", "limits"],
    &["headers", "auth", "idempotency"],
    &["state"],
    &["transport"],
    &["api", "demo", "assets"],
    &["serve", "openapi"],
    &["lib", "main"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|ms| ms.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<name>` a line of code (not a comment) uses.
fn uses(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .filter(|(i, _)| *i == 0 || !line.as_bytes()[i - 1].is_ascii_alphanumeric())
        .map(|(i, _)| {
            let rest = &line[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn no_module_uses_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a component");
        let module = first.as_os_str().to_string_lossy();
        let module = module.trim_end_matches(".rs");
        let Some(own) = layer(module) else {
            bad.push(format!(
                "{}: module {module:?} has no layer in tests/layers.rs",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).expect("read");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in uses(line) {
                // Anything else under `crate::` is an item of the crate root (lib.rs).
                let used = if layer(used).is_some() { used } else { "lib" };
                let theirs = layer(used).unwrap_or(usize::MAX);
                if used != module && theirs >= own {
                    bad.push(format!(
                        "{}:{}: {module} (layer {own}) uses {used} (layer {theirs})",
                        relative.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    assert!(
        bad.is_empty(),
        "module layering broken (see docs/architecture.md):\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn the_check_sees_a_use_of_a_higher_module() {
    assert_eq!(uses("use crate::state::AppState;"), ["state"]);
    assert_eq!(
        uses("let x = crate::headers::cors(a); // crate::lib"),
        ["headers", "lib"]
    );
    assert_eq!(uses("mycrate::x"), Vec::<&str>::new());
}
