//! The module graph (docs/ARCHITECTURE.md): which top-level modules of
//! `src/` name which (`crate::x` outside comments), and that they form no
//! cycle: `instance` is the composition root, `cli` sits on top, and no
//! module reaches up into either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            rust_files(&e.unwrap().path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|x| x == "rs") {
        out.push(path.to_owned());
    }
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if !matches!(name.as_str(), "lib" | "main")
            && (p.is_dir() || p.extension().is_some_and(|x| x == "rs"))
        {
            modules.insert(name);
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &modules {
        let mut files = Vec::new();
        rust_files(&src.join(m), &mut files);
        rust_files(&src.join(format!("{m}.rs")), &mut files);
        let to = edges.entry(m.clone()).or_default();
        for f in files {
            for line in std::fs::read_to_string(&f).unwrap().lines() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for (at, _) in line.match_indices("crate::") {
                    let name: String = line[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if name != *m && modules.contains(&name) {
                        to.insert(name);
                    }
                }
            }
        }
    }
    edges
}

/// Strongly connected sets of more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        for w in &t.g[v] {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                t.low.entry(v).and_modify(|l| *l = (*l).min(lw));
            } else if t.stack.contains(&w) {
                let iw = t.index[w];
                t.low.entry(v).and_modify(|l| *l = (*l).min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut set = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                set.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                t.out.push(set);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_top_level_modules_form_no_import_cycle() {
    let g = graph();
    assert!(
        g.len() > 15 && g["ledger"].is_empty(),
        "the graph was read: {g:?}"
    );
    let found = cycles(&g);
    assert!(found.is_empty(), "import cycles {found:?} in {g:?}");
}

#[test]
fn nothing_but_the_binary_imports_the_command_line_or_the_composition_root_from_below() {
    let g = graph();
    for (module, to) in &g {
        assert!(
            !to.contains("cli"),
            "{module} imports cli; build on instance instead"
        );
        if !matches!(module.as_str(), "cli" | "demo" | "validate") {
            assert!(
                !to.contains("instance"),
                "{module} imports the composition root instance"
            );
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    }
    g.entry("d".into()).or_default();
    let found = cycles(&g);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0],
        ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect()
    );
}

/// Only `src/store` holds SQL text (docs/ARCHITECTURE.md, "only store holds
/// or runs SQL"): no statement keyword opens a string literal elsewhere.
#[test]
fn no_sql_outside_the_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let store = src.join("store");
    let mut found = Vec::new();
    let mut read = 0;
    for f in files.iter().filter(|f| !f.starts_with(&store)) {
        read += 1;
        for (n, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for keyword in [
                "SELECT ",
                "INSERT INTO ",
                "DELETE FROM ",
                "UPDATE ",
                "WITH ",
            ] {
                if line.contains(&format!("\"{keyword}")) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(read > 50, "the sources were read ({read} files)");
    assert!(
        found.is_empty(),
        "SQL outside src/store:\n{}",
        found.join("\n")
    );
}
