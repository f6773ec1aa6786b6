//! Reading an app file: one app, or a group of apps and groups (Marathon's
//! `{"id", "apps", "groups", "dependencies"}`, or a JSON array of apps),
//! flattened to absolute ids and put in dependency order. Every problem
//! of the file is reported, each at its place.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::doc::{self, Node, Place, Problem, Problems, Syntax, Value};
use super::{AppId, AppSpec, marathon, native};

/// The apps of one file, in the order they deploy (each after the apps of
/// the file it depends on).
#[derive(Debug, Clone, PartialEq)]
pub struct AppFile {
    pub syntax: Syntax,
    pub apps: Vec<AppSpec>,
}

/// Everything wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.origin,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}", render(&self.origin, p))?;
        }
        Ok(())
    }
}

/// One problem as `origin:line:column: field `x`: message` (TOML) or
/// `origin: $.path: message` (JSON).
pub fn render(origin: &str, p: &Problem) -> String {
    if p.place.line > 0 {
        format!("{origin}:{p}")
    } else {
        format!("{origin}: {p}")
    }
}

/// Where the fields of one app were read: Strata's field path (`cpus`,
/// `ports[1].host_port`) to its place in the file.
#[derive(Debug, Clone, Default)]
pub struct Places {
    pub app: Option<Place>,
    map: BTreeMap<String, Place>,
}

impl Places {
    pub fn new(app: &Place) -> Places {
        Places {
            app: Some(app.clone()),
            map: BTreeMap::new(),
        }
    }

    pub fn put(&mut self, field: impl Into<String>, place: &Place) {
        self.map.insert(field.into(), place.clone());
    }

    /// The place of `field`, or of the nearest enclosing field read, or of
    /// the app.
    pub fn at(&self, field: &str) -> Place {
        let mut f = field;
        loop {
            if let Some(p) = self.map.get(f) {
                return p.clone();
            }
            match f.rfind(['.', '[']) {
                Some(i) => f = &f[..i],
                None => break,
            }
        }
        self.app.clone().unwrap_or(Place {
            path: String::new(),
            line: 0,
            column: 0,
        })
    }
}

/// Reads an app file: `.json` is Marathon's JSON, `.toml` Strata's TOML;
/// any other name is told apart by its first character.
pub fn read(origin: &str, text: &str) -> Result<AppFile, FileError> {
    let (syntax, root) = parse_file(origin, text)?;
    let fail = |problems| FileError {
        origin: origin.to_string(),
        problems,
    };
    let mut p = Problems::default();
    let mut found = Vec::new();
    let mut groups = BTreeMap::new();
    match &root.value {
        Value::Arr(items) if syntax == Syntax::Json => {
            for item in items {
                read_one(syntax, item, &AppId::root(), &[], &mut p, &mut found);
            }
        }
        Value::Obj(entries) if entries.iter().any(|(k, _, _)| k == "apps" || k == "groups") => {
            read_group(
                syntax,
                &root,
                &AppId::root(),
                &[],
                &mut p,
                &mut found,
                &mut groups,
            );
        }
        _ => read_one(syntax, &root, &AppId::root(), &[], &mut p, &mut found),
    }
    let mut seen: BTreeMap<AppId, Place> = BTreeMap::new();
    for (spec, places) in &found {
        let here = places.at("id");
        if spec.id == AppId::root() {
            // Its id was refused where it was read.
        } else if let Some(first) = seen.get(&spec.id) {
            p.at(
                &here,
                format!(
                    "app {} is defined twice (first at {})",
                    spec.id,
                    if first.line > 0 {
                        format!("line {}", first.line)
                    } else {
                        first.path.clone()
                    }
                ),
            );
        } else {
            seen.insert(spec.id.clone(), here);
        }
        for problem in spec.check(&|field| places.at(field)) {
            p.list.push(problem);
        }
    }
    let apps = order(found, &groups, &mut p);
    if p.list.is_empty() {
        Ok(AppFile { syntax, apps })
    } else {
        Err(fail(p.list))
    }
}

/// The document of a file operators write: `.json` is JSON, `.toml`
/// TOML, and any other name is told apart by its first character; a
/// syntax error is the file's one problem.
pub(crate) fn parse_file(origin: &str, text: &str) -> Result<(Syntax, Node), FileError> {
    let syntax = if origin.ends_with(".json") {
        Syntax::Json
    } else if origin.ends_with(".toml") {
        Syntax::Toml
    } else if text.trim_start().starts_with(['{', '[']) {
        Syntax::Json
    } else {
        Syntax::Toml
    };
    let fail = |problems| FileError {
        origin: origin.to_string(),
        problems,
    };
    let root = match syntax {
        Syntax::Json => doc::parse_json(text).map_err(|p| fail(vec![p]))?,
        Syntax::Toml => doc::parse_toml(text).map_err(fail)?,
    };
    Ok((syntax, root))
}

/// Reads one app of the file, under the group `base`, inheriting the
/// group's dependencies.
fn read_one(
    syntax: Syntax,
    node: &Node,
    base: &AppId,
    inherited: &[AppId],
    p: &mut Problems,
    found: &mut Vec<(AppSpec, Places)>,
) {
    let read = match syntax {
        Syntax::Json => marathon::read_app(node, base, p),
        Syntax::Toml => native::read_app(node, base, p),
    };
    if let Some((mut spec, places)) = read {
        for dep in inherited {
            if !spec.dependencies.contains(dep) {
                spec.dependencies.push(dep.clone());
            }
        }
        found.push((spec, places));
    }
}

/// The keys of a group, in either syntax.
const GROUP_KEYS: &[&str] = &["id", "apps", "groups", "dependencies"];

fn read_group(
    syntax: Syntax,
    node: &Node,
    parent: &AppId,
    inherited: &[AppId],
    p: &mut Problems,
    found: &mut Vec<(AppSpec, Places)>,
    groups: &mut BTreeMap<AppId, Place>,
) {
    let Some(mut f) = p.object(node, "a group (an object with `apps` or `groups`)") else {
        return;
    };
    let mut id = parent.clone();
    if let Some(n) = f.get("id")
        && let Some(text) = p.str(n)
    {
        if text == "/" || text.is_empty() {
            id = AppId::root();
        } else {
            match AppId::resolve(parent, &text) {
                Ok(g) => {
                    groups.insert(g.clone(), n.place.clone());
                    id = g;
                }
                Err(why) => p.at(&n.place, why),
            }
        }
    }
    let mut deps: Vec<AppId> = inherited.to_vec();
    if let Some(n) = f.get("dependencies") {
        for d in dependencies(n, &id, p) {
            if !deps.contains(&d) {
                deps.push(d);
            }
        }
    }
    if let Some(n) = f.get("apps")
        && let Some(items) = p.array(n)
    {
        for item in items {
            read_one(syntax, item, &id, &deps, p, found);
        }
    }
    if let Some(n) = f.get("groups")
        && let Some(items) = p.array(n)
    {
        for item in items {
            read_group(syntax, item, &id, &deps, p, found, groups);
        }
    }
    if syntax == Syntax::Json {
        // What Marathon's API returns about a group's state.
        f.ignore(&["version", "versionInfo", "enforceRole"]);
        f.lacks(p, "pods", "Strata runs apps, not pods");
    }
    f.finish(p, GROUP_KEYS);
}

/// Reads a list of dependencies, each resolved against `base`.
pub(super) fn dependencies(node: &Node, base: &AppId, p: &mut Problems) -> Vec<AppId> {
    let Some(items) = p.array(node) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        if let Some(text) = p.str(item) {
            match AppId::resolve(base, &text) {
                Ok(id) => out.push(id),
                Err(why) => p.at(&item.place, format!("dependency: {why}")),
            }
        }
    }
    out
}

/// Puts the apps in dependency order (ties by id). A dependency on a group
/// of the file stands for every app under it; one on an app or group not
/// in the file is left for the cluster to resolve. A cycle is a problem.
fn order(
    found: Vec<(AppSpec, Places)>,
    groups: &BTreeMap<AppId, Place>,
    p: &mut Problems,
) -> Vec<AppSpec> {
    let ids: BTreeSet<AppId> = found.iter().map(|(s, _)| s.id.clone()).collect();
    // What each app waits for, among the file's apps.
    let mut waits: BTreeMap<AppId, BTreeSet<AppId>> = BTreeMap::new();
    for (spec, _) in &found {
        let mut set = BTreeSet::new();
        for dep in &spec.dependencies {
            if ids.contains(dep) {
                set.insert(dep.clone());
            } else if groups.contains_key(dep) || dep.as_str() == "/" {
                set.extend(
                    ids.iter()
                        .filter(|i| i.is_under(dep) && **i != spec.id)
                        .cloned(),
                );
            }
        }
        set.remove(&spec.id);
        waits.entry(spec.id.clone()).or_default().extend(set);
    }
    let mut by_id: BTreeMap<AppId, (AppSpec, Places)> = BTreeMap::new();
    for (spec, places) in found {
        by_id.entry(spec.id.clone()).or_insert((spec, places));
    }
    let mut done: BTreeSet<AppId> = BTreeSet::new();
    let mut out = Vec::new();
    loop {
        let ready: Vec<AppId> = waits
            .iter()
            .filter(|(id, w)| !done.contains(*id) && w.iter().all(|d| done.contains(d)))
            .map(|(id, _)| id.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for id in ready {
            done.insert(id.clone());
            if let Some((spec, _)) = by_id.get(&id) {
                out.push(spec.clone());
            }
        }
    }
    if done.len() < waits.len() {
        // Walk from the first app left until an app repeats: that is a
        // cycle.
        let left: BTreeSet<&AppId> = waits.keys().filter(|i| !done.contains(*i)).collect();
        if let Some(start) = left.iter().next() {
            let mut path: Vec<&AppId> = vec![start];
            let mut at = *start;
            while let Some(next) = waits[at].iter().find(|d| left.contains(d)) {
                if let Some(i) = path.iter().position(|x| *x == next) {
                    let cycle: Vec<String> = path[i..]
                        .iter()
                        .chain(std::iter::once(&next))
                        .map(|x| x.to_string())
                        .collect();
                    let place = by_id
                        .get(next)
                        .map(|(_, pl)| pl.at("dependencies"))
                        .unwrap_or_else(|| Places::default().at(""));
                    p.at(
                        &place,
                        format!(
                            "dependency cycle: {}; no app of it could ever start",
                            cycle.join(" -> ")
                        ),
                    );
                    break;
                }
                path.push(next);
                at = next;
            }
        }
    }
    out
}
