//! Tidy checks over the whole source tree, in the spirit of rust-analyzer's
//! `xtask/src/tidy.rs`: documentation and hygiene rules that review tends to
//! miss.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Every `.rs` file of the workspace, skipping build output.
fn rust_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("workspace dirs are readable") {
            let path = entry.expect("dir entries are readable").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn members() -> Vec<String> {
    let manifest =
        std::fs::read_to_string(root().join("Cargo.toml")).expect("root Cargo.toml is readable");
    let value: toml::Table = manifest.parse().expect("root Cargo.toml parses");
    value["workspace"]["members"]
        .as_array()
        .expect("workspace.members is an array")
        .iter()
        .map(|m| m.as_str().expect("members are strings").to_string())
        .collect()
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_crate_root_has_a_doc_comment() {
    let mut bad = Vec::new();
    for member in members() {
        for file in ["src/lib.rs", "src/main.rs"] {
            let path = root().join(&member).join(file);
            if let Ok(text) = std::fs::read_to_string(&path)
                && !text.trim_start().starts_with("//!")
            {
                bad.push(rel(&path));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "crate roots without a `//!` doc comment: {bad:?}"
    );
}

#[test]
fn every_crate_is_in_the_architecture_code_map() {
    let arch =
        std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md exists");
    let missing: Vec<String> = members()
        .into_iter()
        .filter(|m| !arch.contains(&format!("### `{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "crates missing from ARCHITECTURE.md's code map (`### `name``): {missing:?}"
    );
}

#[test]
fn crates_are_named_like_their_folders() {
    for member in members() {
        let manifest = std::fs::read_to_string(root().join(&member).join("Cargo.toml"))
            .expect("member manifest");
        let value: toml::Table = manifest.parse().expect("member manifest parses");
        assert_eq!(
            value["package"]["name"].as_str(),
            Some(member.as_str()),
            "crate in {member}/ is named differently"
        );
        assert!(
            value.contains_key("lints"),
            "{member}/Cargo.toml must inherit `[lints] workspace = true`"
        );
    }
}

#[test]
fn no_banned_macros_or_attributes() {
    // Built from pieces so that this file does not trip its own check.
    let banned = [
        ["#[", "ignore"].concat(),
        ["todo", "!("].concat(),
        ["unimplemented", "!("].concat(),
        ["dbg", "!("].concat(),
    ];
    let mut hits = Vec::new();
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).expect("source is readable");
        for (n, line) in text.lines().enumerate() {
            for b in &banned {
                if line.contains(b.as_str()) {
                    hits.push(format!("{}:{}: `{b}`", rel(&file), n + 1));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "banned in this code base:\n{}",
        hits.join("\n")
    );
}

#[test]
fn every_unsafe_block_has_a_safety_comment() {
    let mut hits = Vec::new();
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).expect("source is readable");
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if !code.contains(concat!("unsafe", " {")) {
                continue;
            }
            let window = &lines[n.saturating_sub(6)..=n];
            if !window.iter().any(|l| l.contains("SAFETY:")) {
                hits.push(format!("{}:{}", rel(&file), n + 1));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "`unsafe` blocks without a `// SAFETY:` comment just above:\n{}",
        hits.join("\n")
    );
}

#[test]
fn every_module_has_a_doc_comment() {
    let mut bad = Vec::new();
    for file in rust_files() {
        let r = rel(&file);
        // Test files and build scripts document themselves through their names.
        if r.contains("/tests/") || r.ends_with("build.rs") || r.contains("/benches/") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source is readable");
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        let is_test_module = file.file_name().is_some_and(|n| n == "tests.rs");
        if !first.starts_with("//!") && !is_test_module {
            bad.push(r);
        }
    }
    assert!(
        bad.is_empty(),
        "modules without a `//!` doc comment: {bad:?}"
    );
}
