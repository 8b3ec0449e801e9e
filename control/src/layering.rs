//! The control plane's modules point one way: no module uses one that uses it back.
//!
//! Checked on the source text, at two levels:
//! - the crate's top-level modules, by their `crate::X` paths;
//! - the parts of every folder module (`daemon/`, `docker/`, ...), by their `super::X` and
//!   `crate::FOLDER::X` paths, and by the methods they call on a type whose inherent `impl`
//!   is split over several parts (the daemon's `impl Daemon`): a part calling a method
//!   another part defines uses that part. The folder's `mod.rs` (which declares the parts)
//!   and its unit tests (which use them all) are not parts.
//!
//! Comment lines are skipped: a doc link is not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's name and why it depends on others: `(target, example reference)`.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `.rs` files of a module: its file, or every file under its folder.
fn files_of(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The file's text without its comment lines.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
    &s[..end]
}

/// The first segments of the paths starting with `prefix` (`prefix` then a name, or then a
/// `{a, b::c}` group).
fn first_segments(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(prefix) {
        let start = from + at;
        from = start + prefix.len();
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let rest = &text[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut expect = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect = true,
                    c if c.is_whitespace() => {}
                    _ if expect && depth == 1 => {
                        expect = false;
                        out.insert(ident_at(&group[i..]).to_string());
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident_at(rest).to_string());
        }
    }
    out.remove("");
    out
}

/// The methods each part defines in inherent `impl T {` blocks, by type.
fn inherent_methods(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(head) = line.strip_prefix("impl ") {
            if line.ends_with('{') && !line.contains(" for ") && !head.starts_with('<') {
                current = Some(ident_at(head).to_string());
            }
            continue;
        }
        if line.starts_with('}') {
            current = None;
            continue;
        }
        let Some(ty) = &current else { continue };
        let Some(sig) = line.strip_prefix("    ") else {
            continue;
        };
        let sig = sig
            .strip_prefix("pub ")
            .or_else(|| sig.strip_prefix("pub(super) "))
            .or_else(|| sig.strip_prefix("pub(crate) "))
            .unwrap_or(sig);
        if let Some(f) = sig.strip_prefix("fn ") {
            out.entry(ty.clone())
                .or_default()
                .insert(ident_at(f).to_string());
        }
    }
    out
}

/// The graph of the parts of folder `dir` (see the module docs).
fn folder_graph(dir: &Path) -> Graph {
    let folder = dir.file_name().unwrap().to_str().unwrap().to_string();
    let mut parts: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let part = p.is_dir() || (p.extension().is_some_and(|x| x == "rs") && name != "mod");
        if part && name != "tests" {
            parts.insert(name, files_of(&p));
        }
    }
    let texts: BTreeMap<&String, String> = parts
        .iter()
        .map(|(n, fs)| (n, fs.iter().map(|f| code(f)).collect::<Vec<_>>().join("\n")))
        .collect();
    // Methods of types whose inherent impl is split over several parts.
    let mut by_type: BTreeMap<String, BTreeMap<String, &String>> = BTreeMap::new();
    let mut owners: BTreeMap<String, BTreeSet<&String>> = BTreeMap::new();
    for (part, text) in &texts {
        for (ty, methods) in inherent_methods(text) {
            owners.entry(ty.clone()).or_default().insert(part);
            for m in methods {
                let prev = by_type
                    .entry(ty.clone())
                    .or_default()
                    .insert(m.clone(), part);
                assert!(
                    prev.is_none_or(|p| p == *part),
                    "{folder}: {ty}::{m} is defined in both {} and {part}",
                    prev.unwrap()
                );
            }
        }
    }
    by_type.retain(|ty, _| owners[ty].len() > 1);
    let crate_prefix = format!("crate::{folder}::");
    let mut g = Graph::new();
    for (part, text) in &texts {
        let edges = g.entry((*part).clone()).or_default();
        let direct = first_segments(text, "super::")
            .into_iter()
            .chain(first_segments(text, &crate_prefix));
        for used in direct {
            if used != **part && parts.contains_key(&used) {
                edges.entry(used.clone()).or_insert(format!("{used}::"));
            }
        }
        for (ty, methods) in &by_type {
            for (m, owner) in methods {
                if *owner == *part {
                    continue;
                }
                let calls = [
                    format!("self.{m}("),
                    format!("Self::{m}("),
                    format!("{ty}::{m}("),
                    format!("me.{m}("),
                    format!("daemon.{m}("),
                ];
                let called = |c: &&String| {
                    text.match_indices(c.as_str())
                        .any(|(i, _)| !text[..i].ends_with(is_ident))
                };
                if let Some(c) = calls.iter().find(called) {
                    edges.entry((*owner).clone()).or_insert(c.clone());
                }
            }
        }
    }
    g
}

/// The graph of the crate's top-level modules.
fn top_graph(src: &Path) -> Graph {
    let mut mods: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let skip = ["lib", "main", "bin", "layering"].contains(&name.as_str());
        if !skip && (p.is_dir() || p.extension().is_some_and(|x| x == "rs")) {
            mods.insert(name, files_of(&p));
        }
    }
    let mut g = Graph::new();
    for (m, fs) in &mods {
        let edges = g.entry(m.clone()).or_default();
        for f in fs {
            for used in first_segments(&code(f), "crate::") {
                if used != *m && mods.contains_key(&used) {
                    let why = format!(
                        "crate::{used} in {}",
                        f.strip_prefix(src).unwrap().display()
                    );
                    edges.entry(used).or_insert(why);
                }
            }
        }
    }
    g
}

/// A cycle of `g`, if it has one, as `a -> b (why) -> ... -> a`.
fn find_cycle(g: &Graph) -> Option<String> {
    fn visit(
        g: &Graph,
        n: &String,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<String> {
        state.insert(n.clone(), 1);
        path.push(n.clone());
        for m in g.get(n).into_iter().flat_map(BTreeMap::keys) {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let from = path.iter().position(|p| p == m).unwrap();
                    let mut ring: Vec<String> = path[from..].to_vec();
                    ring.push(m.clone());
                    let steps: Vec<String> = ring
                        .windows(2)
                        .map(|w| format!("{} -> {} ({})", w[0], w[1], g[&w[0]][&w[1]]))
                        .collect();
                    return Some(steps.join(", "));
                }
                0 => {
                    if let Some(c) = visit(g, m, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            let mut path = Vec::new();
            if let Some(c) = visit(g, n, &mut state, &mut path) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_point_one_way() {
    let g = top_graph(&src());
    if let Some(c) = find_cycle(&g) {
        panic!("top-level modules use each other: {c}");
    }
    // The check sees the crate's real arrows: the service root joins the daemon and the
    // Docker driver.
    assert!(g["service"].contains_key("daemon") && g["service"].contains_key("docker"));
    // The front ends depend on narrow interfaces of the daemon, never the reverse.
    for front in ["docker", "cni"] {
        assert_eq!(g["daemon"].get(front), None, "the daemon uses {front}");
        assert_eq!(g[front].get("daemon"), None, "{front} uses the daemon");
    }
}

#[test]
fn parts_of_folder_modules_point_one_way() {
    let mut folders = Vec::new();
    let mut dirs = vec![src()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "bin") {
                dirs.push(p.clone());
                folders.push(p);
            }
        }
    }
    let daemon = folder_graph(&src().join("daemon"));
    // The check sees the daemon's method calls across parts.
    assert!(daemon["dispatch"].contains_key("cli_ops"));
    assert!(daemon["create"].contains_key("parents"));
    for f in folders {
        if let Some(c) = find_cycle(&folder_graph(&f)) {
            panic!("parts of {} use each other: {c}", f.display());
        }
    }
}

#[test]
fn first_segments_reads_paths_and_groups() {
    let t =
        "use crate::{api::{self, X}, ids,\n store::Y};\nlet a = crate::sys::f();\nx::crate::no;";
    let got: Vec<String> = first_segments(t, "crate::").into_iter().collect();
    assert_eq!(got, ["api", "ids", "store", "sys"]);
    let m = inherent_methods("impl Daemon {\n    pub(super) fn a(&self) {}\n    fn b() {}\n}\nimpl X for Daemon {\n    fn c() {}\n}\n");
    assert_eq!(m["Daemon"].iter().collect::<Vec<_>>(), ["a", "b"]);
    assert!(!m.contains_key("X"));
}
