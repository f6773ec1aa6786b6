//! The real Marathon files in `../shared/fixtures/marathon/` (beside the
//! repository; read in place, never copied in): each either reads or is
//! refused with problems that name the field and say why.

use std::path::PathBuf;

use expect_test::expect_file;

mod common;

#[test]
fn every_marathon_fixture_reads_or_is_refused_by_name() {
    let Some(dir) = common::fixtures("marathon") else {
        return;
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for sub in ["apps", "groups", "docs-snippets"] {
        for entry in std::fs::read_dir(dir.join(sub)).expect("fixture folder") {
            files.push(entry.expect("entry").path());
        }
    }
    files.sort();
    let mut out = String::new();
    for file in &files {
        let name = file
            .strip_prefix(&dir)
            .expect("under the folder")
            .display()
            .to_string();
        // The health check snippets are a check each, not an app.
        if name.contains("healthcheck-") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("fixture reads");
        match control::app::read(&name, &text) {
            Ok(f) => {
                out += &format!("{name}: deploys {}\n", summary(&f));
                out += &exposures(&f);
            }
            Err(e)
                if e.problems
                    .iter()
                    .all(|p| p.message.starts_with("no container image")) =>
            {
                // Plain `cmd` apps: read again with an image, so that the
                // rest of the file (constraints, groups, dependencies) is
                // shown read.
                out += &format!("{e}\n");
                let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
                add_image(&mut value);
                let again = serde_json::to_string(&value).expect("json");
                match control::app::read(&name, &again) {
                    Ok(f) => {
                        out += &format!("  with an image: deploys {}\n", summary(&f));
                        for app in &f.apps {
                            for c in &app.constraints {
                                out += &format!("    {} constraint {c}\n", app.id);
                            }
                            if !app.dependencies.is_empty() {
                                let deps: Vec<String> =
                                    app.dependencies.iter().map(|d| d.to_string()).collect();
                                out += &format!("    {} after {}\n", app.id, deps.join(" "));
                            }
                        }
                    }
                    Err(e) => out += &format!("  with an image: {e}\n"),
                }
            }
            Err(e) => {
                assert!(
                    e.problems
                        .iter()
                        .all(|p| !p.place.path.is_empty() || p.place.line > 0),
                    "{name}: every problem has a place: {e}"
                );
                out += &format!("{e}\n");
            }
        }
    }
    expect_file!["marathon_fixtures.txt"].assert_eq(&out);
}

/// The ids of a file's apps in deploy order (the first and last of many).
fn summary(f: &control::app::AppFile) -> String {
    let ids: Vec<String> = f.apps.iter().map(|a| a.id.to_string()).collect();
    if ids.len() > 6 {
        format!(
            "{} ... {} ({} apps)",
            ids[..3].join(" "),
            ids[ids.len() - 1],
            ids.len()
        )
    } else {
        ids.join(" ")
    }
}

/// What each app's ports expose on the edge and which VIPs they ask for
/// (read from Marathon-LB's and DC/OS's labels), a line each.
fn exposures(f: &control::app::AppFile) -> String {
    let mut out = String::new();
    for app in &f.apps {
        for (i, port) in app.ports.iter().enumerate() {
            for e in &port.expose {
                out += &format!("    {} ports[{i}] exposes {e}\n", app.id);
            }
            for v in &port.vips {
                out += &format!("    {} ports[{i}] has VIP {v}\n", app.id);
            }
        }
    }
    out
}

/// Gives every app of a Marathon document `container.docker.image`.
fn add_image(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Array(items) => items.iter_mut().for_each(add_image),
        serde_json::Value::Object(map) => {
            if map.contains_key("apps") || map.contains_key("groups") {
                for key in ["apps", "groups"] {
                    if let Some(v) = map.get_mut(key) {
                        add_image(v);
                    }
                }
            } else if !map.contains_key("container") {
                map.insert(
                    "container".into(),
                    serde_json::json!({"type": "DOCKER", "docker": {"image": "busybox:1.36"}}),
                );
            }
        }
        _ => {}
    }
}
