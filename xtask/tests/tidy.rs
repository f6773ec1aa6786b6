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

/// A member's crate name: the last part of its folder (`agent/control` is
/// `control`, the pure sub-crate of `agent`).
fn crate_name(member: &str) -> &str {
    member.rsplit('/').next().unwrap_or(member)
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
        .filter(|m| !arch.contains(&format!("### `{}`", crate_name(m))))
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
            Some(crate_name(&member)),
            "crate in {member}/ is named differently"
        );
        // A crate in a crate's folder is that crate's pure sub-crate.
        if let Some((parent, _)) = member.rsplit_once('/') {
            assert!(
                members().iter().any(|m| m == parent),
                "{member}/ sits in {parent}/, which is not a workspace crate"
            );
        }
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

/// `docs/api.yaml` describes exactly the routes of `control::api::ROUTES`:
/// each path and method, its `operationId`, its `x-strata-auth`, its
/// `x-strata-body-limit` and its `x-strata-permission` (on the routes
/// operators call, on no other); and every schema it refers to is
/// defined. (A small reader of the document's
/// regular layout, as rust-analyzer's tidy pins its protocol document.)
#[test]
fn the_api_document_matches_the_routes() {
    let text = std::fs::read_to_string(root().join("docs/api.yaml")).expect("docs/api.yaml exists");
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut documented = std::collections::BTreeSet::new();
    let (mut in_paths, mut path, mut method) = (false, String::new(), String::new());
    // Operation id, auth, body limit, permission.
    let mut fields: [String; 4] = Default::default();
    let mut flush = |path: &str, method: &str, fields: &mut [String; 4]| {
        if !method.is_empty() {
            let [op, auth, limit, permission] = std::mem::take(fields);
            documented.insert((
                method.to_string(),
                path.to_string(),
                op,
                auth,
                limit,
                permission,
            ));
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if indent(line) == 0 {
            if in_paths {
                flush(&path, &method, &mut fields);
                method.clear();
            }
            in_paths = line.starts_with("paths:");
            continue;
        }
        if !in_paths {
            continue;
        }
        let t = line.trim();
        match indent(line) {
            2 => {
                flush(&path, &method, &mut fields);
                method.clear();
                path = t
                    .trim_end_matches(':')
                    .trim_matches('\'')
                    .trim_matches('"')
                    .to_string();
            }
            4 if ["get:", "post:", "put:", "delete:", "patch:"].contains(&t) => {
                flush(&path, &method, &mut fields);
                method = t.trim_end_matches(':').to_string();
            }
            6 => {
                let keys = [
                    "operationId:",
                    "x-strata-auth:",
                    "x-strata-body-limit:",
                    "x-strata-permission:",
                ];
                for (field, key) in fields.iter_mut().zip(keys) {
                    if let Some(v) = t.strip_prefix(key) {
                        *field = v.trim().to_string();
                    }
                }
            }
            _ => {}
        }
    }
    let served: std::collections::BTreeSet<_> = control::api::ROUTES
        .iter()
        .map(|r| {
            (
                r.method.as_str().to_string(),
                r.path.to_string(),
                r.operation.to_string(),
                r.auth.as_str().to_string(),
                r.body_limit.to_string(),
                r.permission
                    .map_or_else(String::new, |p| p.as_str().to_string()),
            )
        })
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/api.yaml and control::api::ROUTES differ (method, path, operationId, x-strata-auth, x-strata-body-limit, x-strata-permission):\n  routes not documented so: {missing:?}\n  documented, not routes: {extra:?}"
    );

    // Every `$ref` names a schema defined under `components.schemas`.
    let mut defined = std::collections::BTreeSet::new();
    let mut in_schemas = false;
    for line in text.lines() {
        if indent(line) <= 2 && !line.trim().is_empty() {
            in_schemas = line.trim() == "schemas:" && indent(line) == 2;
            continue;
        }
        if in_schemas && indent(line) == 4 && line.trim().ends_with(':') {
            defined.insert(line.trim().trim_end_matches(':').to_string());
        }
    }
    let dangling: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("#/components/schemas/").nth(1))
        .map(|r| r.trim_end_matches(['\'', '"', ' ']))
        .filter(|name| !defined.contains(*name))
        .collect();
    assert!(
        dangling.is_empty(),
        "schemas referred to and not defined: {dangling:?}"
    );
}

/// The code lines of a Rust file: comments dropped, and nothing after its
/// first `#[cfg(test)]` (unit-test fixtures may spell what code may not).
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| !l.trim_start().starts_with("#[cfg(test)]"))
        .map(|(n, l)| (n + 1, l.split("//").next().unwrap_or_default()))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect()
}

/// Where `needle` appears in the code of the files under `dirs`, outside
/// the files `allowed` (paths or folders relative to the root).
fn uses(dirs: &[&str], needle: &str, allowed: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for file in rust_files() {
        let r = rel(&file);
        if !dirs.iter().any(|d| r.starts_with(d)) || allowed.iter().any(|a| r.starts_with(a)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source is readable");
        for (n, line) in code_lines(&text) {
            if line.contains(needle) {
                hits.push(format!("{r}:{n}: `{needle}`"));
            }
        }
    }
    hits
}

/// The control crate is pure: its dependencies are an allow-list, and its
/// code names no effect (files, processes, sockets, the clock, a runtime,
/// an outside system's crate).
#[test]
fn control_stays_pure() {
    let manifest = std::fs::read_to_string(root().join("agent/control/Cargo.toml"))
        .expect("agent/control/Cargo.toml");
    let value: toml::Table = manifest.parse().expect("it parses");
    let allowed = [
        "configs",
        // Cron and time zones (`control::job`): pure, and jiff's zones
        // come from its bundled database, never the system's.
        "croner",
        "hex",
        // Pure as well (no I/O, no async): the slots' states and upgrade
        // results a node reports are its types.
        "image",
        "jiff",
        "oci-spec",
        "regex",
        "serde",
        "serde_json",
        "sha2",
        "thiserror",
        "toml",
    ];
    let deps: Vec<&String> = value
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().collect())
        .unwrap_or_default();
    let extra: Vec<&&String> = deps
        .iter()
        .filter(|d| !allowed.contains(&d.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "control depends on {extra:?}: it must stay pure (allowed: {allowed:?})"
    );
    let mut hits = Vec::new();
    for needle in [
        "tokio",
        "etcd_client",
        "libcontainer",
        "rtnetlink",
        "zbus",
        "nix::",
        "std::fs",
        "std::process",
        "std::net::Tcp",
        "std::net::Udp",
        "SystemTime::now",
        "Instant::now",
        "Zoned::now",
        "Timestamp::now",
        "TimeZone::system",
        "tz::db()",
        "std::thread",
    ] {
        hits.extend(uses(&["agent/control/src"], needle, &[]));
    }
    assert!(
        hits.is_empty(),
        "effects in the pure control crate:\n{}",
        hits.join("\n")
    );
}

/// Each outside system is touched by exactly one module of the agent.
#[test]
fn one_module_per_outside_system() {
    let owners: &[(&str, &[&str])] = &[
        ("etcd_client", &["agent/src/etcd/"]),
        ("libcontainer", &["agent/src/runtime/"]),
        ("rtnetlink", &["agent/src/overlay/netlink.rs"]),
        ("netlink_packet", &["agent/src/overlay/netlink.rs"]),
        ("zbus", &["agent/src/systemd/"]),
        ("Command::new(\"nft\")", &["agent/src/overlay/nft.rs"]),
    ];
    let mut hits = Vec::new();
    for (needle, allowed) in owners {
        hits.extend(uses(&["agent/src"], needle, allowed));
    }
    assert!(
        hits.is_empty(),
        "an outside system's crate named outside its one module:\n{}",
        hits.join("\n")
    );
}

/// Stored and wire types read what a newer writer wrote: only files an
/// operator writes refuse unknown fields.
#[test]
fn only_operator_files_deny_unknown_fields() {
    let hits = uses(
        &["agent/", "bootstrap/", "image/", "qemu-tests/"],
        "deny_unknown_fields",
        &[
            "agent/control/src/task/file.rs",
            "agent/src/cli/context.rs",
            "image/src/manifest.rs",
        ],
    );
    assert!(
        hits.is_empty(),
        "deny_unknown_fields on a stored or wire type (only operator files, in `configs` and the task file, may):\n{}",
        hits.join("\n")
    );
}

/// Routes are spelled once, in `control::api`; the state directory once,
/// in `agent::state`; the agent logs through `tracing`.
#[test]
fn one_spelling_of_routes_paths_and_logging() {
    let mut hits = uses(
        &[
            "agent/src",
            "agent/tests",
            "agent/benches",
            "agent/control/src",
        ],
        "\"/v1/",
        &["agent/control/src/api.rs"],
    );
    hits.extend(uses(
        &["agent/src"],
        "\"/var/lib/strata",
        &["agent/src/state.rs"],
    ));
    hits.extend(uses(
        &["agent/src"],
        "eprintln!",
        &["agent/src/cli/", "agent/src/testing/"],
    ));
    assert!(hits.is_empty(), "{}", hits.join("\n"));
}
