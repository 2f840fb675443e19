//! Data flows one way through berth's modules: no module reaches back into
//! one that uses it. This reads the sources of `berth-host` and
//! `berth-shim` and fails on any cycle, between files and between
//! top-level modules, naming each edge.
//!
//! An edge is a `crate::` or `super::` path in a file (tests excluded),
//! resolved to the file module that defines it; names a `mod.rs` re-exports
//! (`pub use child::Name`) resolve to that child. A module's edges to its
//! own submodules are its declarations and re-exports, not uses.
//! `cargo test -p berth-tests --test module_graph` runs it alone.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

struct Crate {
    files: BTreeMap<Module, PathBuf>,
    /// Names a module re-exports from one of its submodules.
    reexports: BTreeMap<(Module, String), Module>,
}

fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file that is compiled outside tests, without comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths after each `crate::` or `super::` in `code`: the keyword, then
/// the segments (a `{...}` group yields one path per item).
fn paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let kw = ["crate::", "super::"].into_iter().find(|k| rest.starts_with(k));
        if kw.is_none() || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == ':')) {
            i += 1;
            continue;
        }
        let kw = kw.unwrap();
        i += kw.len();
        let mut prefix = vec![kw.trim_end_matches("::").to_string()];
        // `super::super::` and plain segments; a group may come first.
        loop {
            if i < bytes.len() && bytes[i] == '{' {
                let end = group_end(&bytes, i);
                let inner: String = bytes[i + 1..end].iter().collect();
                for item in split_top(&inner) {
                    let segs: Vec<String> = item
                        .split("::")
                        .map(|s| s.trim().split(|c: char| !is_ident(c)).next().unwrap_or_default().to_string())
                        .take_while(|s| !s.is_empty() && s != "self")
                        .collect();
                    let mut p = prefix.clone();
                    p.extend(segs);
                    out.push((p[0].clone(), p[1..].to_vec()));
                }
                i = end;
                prefix.clear();
                break;
            }
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            if i > start {
                prefix.push(bytes[start..i].iter().collect());
            }
            if i + 1 < bytes.len() && bytes[i] == ':' && bytes[i + 1] == ':' {
                i += 2;
                continue;
            }
            break;
        }
        if !prefix.is_empty() {
            out.push((prefix[0].clone(), prefix[1..].to_vec()));
        }
    }
    out
}

fn group_end(bytes: &[char], open: usize) -> usize {
    let mut depth = 0;
    for (j, c) in bytes.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    bytes.len()
}

/// Items of a `use` group, split at its top-level commas.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

impl Crate {
    fn read(root: &Path) -> Crate {
        let mut list = Vec::new();
        rust_files(root, &mut list);
        let files: BTreeMap<Module, PathBuf> = list.into_iter().map(|f| (module_of(root, &f), f)).collect();
        let mut reexports = BTreeMap::new();
        for (m, f) in &files {
            for line in code(f).lines() {
                let Some(rest) = line.trim().strip_prefix("pub use ") else { continue };
                let rest = rest.trim_end_matches(';');
                let Some((child, names)) = rest.split_once("::") else { continue };
                let mut sub = m.clone();
                sub.push(child.to_string());
                if !files.contains_key(&sub) {
                    continue;
                }
                for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
                    let name = name.split(" as ").last().unwrap_or_default().trim();
                    if !name.is_empty() {
                        reexports.insert((m.clone(), name.to_string()), sub.clone());
                    }
                }
            }
        }
        Crate { files, reexports }
    }

    /// The file module that `path` (absolute segments) names.
    fn resolve(&self, path: &[String]) -> Option<Module> {
        for k in (0..=path.len()).rev() {
            let m = path[..k].to_vec();
            if self.files.contains_key(&m) {
                if let Some(name) = path.get(k) {
                    if let Some(sub) = self.reexports.get(&(m.clone(), name.clone())) {
                        return Some(sub.clone());
                    }
                }
                return Some(m);
            }
        }
        None
    }

    fn edges(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut edges: BTreeMap<Module, BTreeSet<Module>> = self.files.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
        for (m, f) in &self.files {
            for (kw, segs) in paths(&code(f)) {
                let mut abs = if kw == "crate" { Vec::new() } else { m[..m.len().saturating_sub(1)].to_vec() };
                let mut segs = segs.as_slice();
                while segs.first().map(String::as_str) == Some("super") {
                    abs.pop();
                    segs = &segs[1..];
                }
                abs.extend(segs.iter().cloned());
                if let Some(t) = self.resolve(&abs) {
                    if &t != m && !t.starts_with(m) {
                        edges.get_mut(m).unwrap().insert(t);
                    }
                }
            }
        }
        edges
    }
}

/// Strongly connected components with more than one member.
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Kosaraju: finish order on the graph, then components on its reverse.
    fn visit(v: &Module, g: &BTreeMap<Module, BTreeSet<Module>>, seen: &mut BTreeSet<Module>, out: &mut Vec<Module>) {
        if !seen.insert(v.clone()) {
            return;
        }
        for w in g.get(v).into_iter().flatten() {
            visit(w, g, seen, out);
        }
        out.push(v.clone());
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for v in edges.keys() {
        visit(v, edges, &mut seen, &mut order);
    }
    let mut reverse: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (a, bs) in edges {
        for b in bs {
            reverse.entry(b.clone()).or_default().insert(a.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for v in order.iter().rev() {
        let mut comp = Vec::new();
        visit(v, &reverse, &mut seen, &mut comp);
        if comp.len() > 1 {
            out.push(comp);
        }
    }
    out
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn report(what: &str, edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<String> {
    cycles(edges)
        .into_iter()
        .map(|comp| {
            let inside: BTreeSet<_> = comp.iter().collect();
            let arrows: Vec<String> =
                comp.iter().flat_map(|a| edges[a].iter().filter(|b| inside.contains(b)).map(move |b| format!("{} -> {}", name(a), name(b)))).collect();
            format!("{what}: {}", arrows.join(", "))
        })
        .collect()
}

fn check(dir: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let c = Crate::read(&root);
    let files = c.edges();
    let mut top: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (a, bs) in &files {
        for b in bs {
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                if x != y {
                    top.entry(vec![x.clone()]).or_default().insert(vec![y.clone()]);
                    top.entry(vec![y.clone()]).or_default();
                }
            }
        }
    }
    let mut found = report(&format!("{dir} files"), &files);
    found.extend(report(&format!("{dir} top-level modules"), &top));
    found
}

#[test]
fn no_module_cycles() {
    let found: Vec<String> = ["host/src", "shim/src"].into_iter().flat_map(check).collect();
    assert!(found.is_empty(), "module cycles (a module must not use one that uses it):\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_uses_groups_reexports_and_cycles() {
    let p = paths("use crate::a::{b::C, d}; use super::{x, y::Z}; let x = super::super::e::f(); foo::crate::g;");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        p,
        vec![
            ("crate".into(), s(&["a", "b", "C"])),
            ("crate".into(), s(&["a", "d"])),
            ("super".into(), s(&["x"])),
            ("super".into(), s(&["y", "Z"])),
            ("super".into(), s(&["super", "e", "f"])),
        ]
    );
    let m = |s: &str| s.split("::").filter(|x| !x.is_empty()).map(String::from).collect::<Module>();
    let mut g: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    g.insert(m("a"), [m("b")].into());
    g.insert(m("b"), [m("c")].into());
    g.insert(m("c"), [m("a")].into());
    g.insert(m("d"), [m("a")].into());
    let found = cycles(&g);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].iter().collect::<BTreeSet<_>>(), [m("a"), m("b"), m("c")].iter().collect());
}
