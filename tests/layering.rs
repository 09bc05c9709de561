//! The layering of the house (issue #11), kept by a test rather than by memory:
//!
//! - every `crate::` path in `src/` (a `use` line or a path written inline) names
//!   a module its own top-level module may import, as the table below says;
//! - the table has no circle, so neither does the code;
//! - the files of one module (siblings such as `net/conn.rs` and `net/worker.rs`)
//!   import each other without a circle;
//! - no file (a room) passes ROOM_MAX_LINES.
//!
//! A failure names the file, the line and the import, and the rule it breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module of `src/` may import, lowest layers first.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: one definition each of what every layer shares.
    ("record", &[]),
    ("time", &[]),
    ("fs", &[]),
    ("sizes", &[]),
    ("keyhash", &[]),
    // Pure logic and storage: no sockets, no process, no roles.
    ("cluster", &["record"]),
    ("proto", &["cluster", "record"]),
    ("store", &["fs", "keyhash", "record", "sizes"]),
    // The option library (it knows no role) and the I/O shell.
    ("cli", &["sizes"]),
    ("net", &["keyhash", "proto"]),
    ("daemon", &["cli", "fs", "net", "proto"]),
    // Roles: they talk to each other over RPC, never by import.
    (
        "manager",
        &["cli", "cluster", "daemon", "net", "proto", "time"],
    ),
    (
        "server",
        &[
            "cli", "cluster", "daemon", "fs", "net", "proto", "record", "store", "time",
        ],
    ),
    (
        "gateway",
        &[
            "cli", "cluster", "daemon", "keyhash", "net", "proto", "record", "time",
        ],
    ),
    (
        "tools",
        &[
            "cli", "cluster", "daemon", "net", "proto", "record", "store", "time",
        ],
    ),
    ("local", &["cli", "daemon", "net", "proto"]),
    // The top: the one place that knows every role.
    (
        "dispatch",
        &[
            "cli", "gateway", "local", "manager", "net", "server", "tools",
        ],
    ),
    ("lib", &[]),
    ("main", &[]),
];

/// Lines a source file may hold, tests included.
const ROOM_MAX_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every file of `src/`, with its module path components (`net/rpc_client/link.rs`
/// is `["net", "rpc_client", "link"]`; a `mod.rs` is its directory).
fn files() -> Vec<(PathBuf, Vec<String>)> {
    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(src()).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod") && parts.len() > 1 {
                parts.pop();
            }
            (p, parts)
        })
        .collect()
}

/// The code of a line: comments and string literals do not import anything.
fn code(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.starts_with("//") {
        return None;
    }
    let mut out = String::new();
    let mut in_str = false;
    let mut prev = ' ';
    for c in t.chars() {
        if c == '"' && prev != '\\' {
            in_str = !in_str;
        } else if !in_str {
            out.push(c);
        }
        prev = c;
    }
    Some(match out.find("//") {
        Some(i) => out[..i].to_string(),
        None => out,
    })
}

/// The path segments after each `prefix` in `code` (`crate::net::conn::X` gives
/// `["net", "conn", "X"]`); a braced group ends the path.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::`, not `crate::`
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        out.push(rest[..end].split("::").filter(|s| !s.is_empty()).collect());
    }
    out
}

#[test]
fn every_import_follows_the_table() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, a)| (*m, a.iter().copied().collect()))
        .collect();
    let mut broken = Vec::new();
    for (path, parts) in files() {
        let top = parts[0].as_str();
        let Some(may) = allowed.get(top) else {
            broken.push(format!(
                "{}: module `{top}` is not in the table of tests/layering.rs; add it to its layer",
                path.display()
            ));
            continue;
        };
        for (n, line) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
            let Some(code) = code(line) else { continue };
            for p in paths_after(&code, "crate::") {
                let Some(target) = p.first().copied() else {
                    continue;
                };
                if target != top && !may.contains(target) {
                    broken.push(format!(
                        "{}:{}: `{}` imports `crate::{target}`, which `{top}` may not \
                         (it may import {may:?})",
                        path.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

/// Depth-first search for a circle in `graph`; returns one, as a path.
fn circle<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = stack.iter().position(|s| *s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n);
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n);
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n);
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_table_has_no_circle() {
    let graph: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, a)| (*m, a.iter().copied().collect()))
        .collect();
    for (m, a) in ALLOWED {
        for t in *a {
            assert!(
                graph.contains_key(t),
                "`{m}` may import `{t}`, not in the table"
            );
        }
    }
    assert_eq!(
        circle(&graph),
        None,
        "the table of allowed imports has a circle"
    );
}

/// Within each top-level module, its files (the second level: `net::conn`,
/// `net::rpc_client`, ...) import one another without a circle. The module's own
/// `mod.rs` (its hub, which declares the files) is left out: children use their
/// parent's items by design.
#[test]
fn sibling_files_import_each_other_without_a_circle() {
    let files = files();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let siblings: BTreeSet<(String, String)> = files
        .iter()
        .filter(|(_, p)| p.len() >= 2)
        .map(|(_, p)| (p[0].clone(), p[1].clone()))
        .collect();
    for (path, parts) in &files {
        if parts.len() < 2 {
            continue;
        }
        let (top, me) = (&parts[0], &parts[1]);
        let from = format!("{top}::{me}");
        // `super::` in a second-level file is the top module; one level deeper,
        // it is the second-level module itself.
        let super_is_top = parts.len() == 2;
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let Some(code) = code(line) else { continue };
            let mut targets: Vec<String> = Vec::new();
            for p in paths_after(&code, "crate::") {
                if p.len() >= 2 && p[0] == top.as_str() {
                    targets.push(p[1].to_string());
                }
            }
            if super_is_top {
                for p in paths_after(&code, "super::") {
                    targets.extend(p.first().map(|s| s.to_string()));
                }
                // `use super::{a, b::C}`: each name in the braces.
                if let Some(i) = code.find("super::{") {
                    let inner = &code[i + "super::{".len()..];
                    let inner = &inner[..inner.find('}').unwrap_or(inner.len())];
                    targets.extend(
                        inner
                            .split(',')
                            .filter_map(|s| s.trim().split("::").next())
                            .map(str::to_string),
                    );
                }
            }
            for t in targets {
                if &t != me && siblings.contains(&(top.clone(), t.clone())) {
                    graph
                        .entry(from.clone())
                        .or_default()
                        .insert(format!("{top}::{t}"));
                }
            }
        }
    }
    let view: BTreeMap<&str, BTreeSet<&str>> = graph
        .iter()
        .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(circle(&view), None, "files import each other in a circle");
}

#[test]
fn no_room_passes_the_line_limit() {
    let big: Vec<String> = files()
        .into_iter()
        .filter_map(|(path, _)| {
            let n = std::fs::read_to_string(&path).unwrap().lines().count();
            (n > ROOM_MAX_LINES).then(|| format!("{}: {n} lines", path.display()))
        })
        .collect();
    assert!(
        big.is_empty(),
        "rooms over {ROOM_MAX_LINES} lines; split them by concern:\n{}",
        big.join("\n")
    );
}

/// The checker itself: it must see an import that breaks the table, and a circle.
#[test]
fn the_checks_catch_what_they_are_for() {
    assert_eq!(
        paths_after("use crate::net::conn::{Writer, X};", "crate::"),
        vec![vec!["net", "conn"]]
    );
    assert_eq!(
        paths_after("let x = crate::time::unix_now() + my_crate::y;", "crate::"),
        vec![vec!["time", "unix_now"]]
    );
    assert_eq!(code("// use crate::server;"), None);
    assert_eq!(
        code("log!(\"crate::x\"); // crate::y").as_deref(),
        Some("log!(); ")
    );
    let g: BTreeMap<&str, BTreeSet<&str>> = [
        ("a", ["b"].into_iter().collect()),
        ("b", ["c"].into_iter().collect()),
        ("c", ["a"].into_iter().collect()),
    ]
    .into_iter()
    .collect();
    assert_eq!(circle(&g), Some(vec!["a", "b", "c", "a"]));
}
