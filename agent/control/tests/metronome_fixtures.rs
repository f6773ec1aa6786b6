//! The real Metronome files in `../shared/fixtures/metronome/` (beside the
//! repository; read in place, never copied in): each job and schedule
//! either reads or is refused with problems that name the field and say
//! why, and every property of Metronome's own JSON schemas is either read
//! or refused by name, never reported as unknown.

use std::path::PathBuf;

use expect_test::expect_file;
use serde_json::{Value, json};

mod common;

#[test]
fn every_metronome_fixture_reads_or_is_refused_by_name() {
    let Some(dir) = common::fixtures("metronome") else {
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = String::new();
    for file in &files {
        let name = file
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(file).expect("fixture reads");
        // A schedule file has a cron and no run.
        let value: Value = serde_json::from_str(&text).expect("fixture is JSON");
        let result = if value.get("cron").is_some() {
            control::job::read_schedule(&name, &text).map(|s| {
                format!(
                    "schedule {} `{}` in {}, {:?}, deadline {}s",
                    s.id, s.cron, s.timezone, s.concurrency_policy, s.starting_deadline_seconds
                )
            })
        } else {
            control::job::read(&name, &text).map(|f| {
                format!(
                    "job {} runs {} ({} schedule(s))",
                    f.job.id,
                    f.job.run.image,
                    f.job.schedules.len()
                )
            })
        };
        match result {
            Ok(line) => out += &format!("{name}: reads: {line}\n"),
            Err(e) => {
                assert!(
                    e.problems.iter().all(|p| !p.place.path.is_empty()),
                    "{name}: every problem has a place: {e}"
                );
                assert!(
                    e.problems
                        .iter()
                        .all(|p| !p.message.starts_with("unknown field")),
                    "{name}: a Metronome field is unknown: {e}"
                );
                out += &format!("{e}\n");
            }
        }
    }
    expect_file!["metronome_fixtures.txt"].assert_eq(&out);
}

/// A value of the schema `node`'s type, with each property filled in.
fn sample(node: &Value) -> Value {
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return values[0].clone();
    }
    match node.get("type").and_then(Value::as_str) {
        Some("string") => json!("x"),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([node.get("items").map(sample).unwrap_or(json!("x"))]),
        _ => match node.get("properties").and_then(Value::as_object) {
            Some(props) => {
                Value::Object(props.iter().map(|(k, v)| (k.clone(), sample(v))).collect())
            }
            None => json!({}),
        },
    }
}

/// Every property path of `schema` (`run.docker.image`), with its schema.
fn properties(schema: &Value, defs: &Value, at: &str, out: &mut Vec<(String, Value)>) {
    let node = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &defs[r.trim_start_matches("#/definitions/")],
        None => schema,
    };
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            let v = match v.get("$ref").and_then(Value::as_str) {
                Some(r) => defs[r.trim_start_matches("#/definitions/")].clone(),
                None => v.clone(),
            };
            out.push((path.clone(), v.clone()));
            properties(&v, defs, &path, out);
        }
    }
    if let Some(items) = node.get("items") {
        properties(items, defs, &format!("{at}[]"), out);
    }
}

/// `base` with `value` put at `path` (`run.docker.image`, `schedules[].id`:
/// an array gets one element).
fn put(base: &mut Value, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("a path has a part");
    let mut at = base;
    for part in parts {
        let (key, array) = match part.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (part, false),
        };
        let map = at.as_object_mut().expect("an object on the way");
        if array {
            let arr = map.entry(key).or_insert_with(|| json!([{}]));
            if !arr
                .as_array()
                .is_some_and(|a| a.first().is_some_and(Value::is_object))
            {
                *arr = json!([{}]);
            }
            at = &mut arr[0];
        } else {
            let next = map.entry(key).or_insert_with(|| json!({}));
            if !next.is_object() {
                *next = json!({});
            }
            at = next;
        }
    }
    let key = last.trim_end_matches("[]");
    at.as_object_mut()
        .expect("an object at the end")
        .insert(key.to_string(), value);
}

#[test]
fn every_metronome_schema_field_is_read_or_refused_by_name() {
    let Some(dir) = common::fixtures("metronome") else {
        return;
    };
    let mut checked = 0;
    for (file, base) in [
        (
            "jobspec.schema.json",
            json!({"id": "x", "run": {"cpus": 1, "mem": 32, "disk": 0, "cmd": "true", "docker": {"image": "busybox"}}}),
        ),
        (
            "schedulespec.schema.json",
            json!({"id": "s", "cron": "* * * * *"}),
        ),
    ] {
        let text = std::fs::read_to_string(dir.join("schema").join(file)).expect("schema reads");
        let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
        let mut props = Vec::new();
        properties(&schema, &schema["definitions"], "", &mut props);
        assert!(props.len() > 5, "{file}: {} properties", props.len());
        for (path, node) in props {
            let mut doc = base.clone();
            put(&mut doc, &path, sample(&node));
            let text = doc.to_string();
            let result = if file.starts_with("schedule") {
                control::job::read_schedule("s.json", &text).map(|_| ())
            } else {
                control::job::read("j.json", &text).map(|_| ())
            };
            if let Err(e) = result {
                assert!(
                    e.problems
                        .iter()
                        .all(|p| !p.message.starts_with("unknown field")),
                    "{file}: `{path}` is unknown to the reader: {e}\n{text}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} properties checked");
}
