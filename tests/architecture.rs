//! The shape of the code, checked: no import cycles between the modules of `relay/src`,
//! `cluster/src` and `bench/src` (ARCHITECTURE.md states it as an invariant), and no source
//! file of theirs longer than 500 lines before its tests.
//!
//! The module graph is read from the sources themselves: every `use` declaration and every
//! `crate::…`, `super::…`, `self::…` or child-module path in the code (comments and the
//! `#[cfg(test)]` part of a file left out), each resolved to the file that defines what it
//! names, following `pub use` re-exports. A parent's `pub use` of its own child is the parent
//! showing what it contains, not an import.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use crate::support::repository_file;

/// Longest a source file may be before its `#[cfg(test)]` part.
const MAX_LINES: usize = 500;

/// The crates whose module graphs must be acyclic, by their source directories.
const CRATES: [&str; 3] = ["relay/src", "cluster/src", "bench/src"];

/// One source file: its module path (`["store", "postgres"]`), its code without comments
/// and tests, and whether it is a directory's `mod.rs` (or the crate root).
struct SourceFile {
    module: Vec<String>,
    code: String,
}

/// A `use` leaf: the path it names, the name it binds, and whether it is `pub`.
#[derive(Debug, Clone)]
struct UseLeaf {
    path: Vec<String>,
    name: String,
    public: bool,
}

struct Crate {
    files: BTreeMap<Vec<String>, SourceFile>,
}

impl Crate {
    fn read(dir: &Path) -> Self {
        let mut files = BTreeMap::new();
        for path in rust_files(dir) {
            let relative = path.strip_prefix(dir).expect("inside the crate");
            let mut module: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("mod" | "lib") => {
                    module.pop();
                }
                // A binary beside a library is a crate of its own that reaches the library
                // by its name; a binary alone is the crate's root.
                Some("main") if dir.join("lib.rs").exists() => continue,
                Some("main") => {
                    module.pop();
                }
                _ => {}
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            let code = code_of(&text);
            files.insert(module.clone(), SourceFile { module, code });
        }
        Self { files }
    }

    fn is_module(&self, module: &[String]) -> bool {
        self.files.contains_key(module)
    }

    /// The file that defines what `path` (absolute, from the crate root) names.
    fn resolve(&self, path: &[String], depth: usize) -> Option<Vec<String>> {
        let mut module: Vec<String> = Vec::new();
        let mut rest = path;
        while let Some((first, tail)) = rest.split_first() {
            let mut deeper = module.clone();
            deeper.push(first.clone());
            if !self.is_module(&deeper) {
                break;
            }
            module = deeper;
            rest = tail;
        }
        // An item re-exported by the module: follow the re-export to its definition.
        if let (Some(item), true) = (rest.first(), depth < 8) {
            let file = &self.files[&module];
            for leaf in uses(&file.code) {
                if leaf.public && leaf.name == *item {
                    if let Some(target) = absolute(&leaf.path, &module, self) {
                        if target != path {
                            return self.resolve(&target, depth + 1);
                        }
                    }
                }
            }
        }
        Some(module)
    }

    /// Every module a file depends on (other files only).
    fn dependencies(&self, file: &SourceFile) -> BTreeSet<Vec<String>> {
        let mut found = BTreeSet::new();
        let leaves = uses(&file.code);
        let mut add = |target: Option<Vec<String>>, reexport: bool| {
            let Some(target) = target.and_then(|t| self.resolve(&t, 0)) else {
                return;
            };
            let inside = target.starts_with(&file.module);
            if target != file.module && !(reexport && inside) {
                found.insert(target);
            }
        };
        for leaf in &leaves {
            add(absolute(&leaf.path, &file.module, self), leaf.public);
        }
        // Paths in the code: through a name a `use` bound, or from crate/super/self or a
        // child module.
        let bound: BTreeMap<&str, &UseLeaf> = leaves.iter().map(|l| (l.name.as_str(), l)).collect();
        for path in inline_paths(&file.code) {
            let target = match bound.get(path[0].as_str()) {
                Some(leaf) if path.len() > 1 => {
                    absolute(&leaf.path, &file.module, self).map(|mut t| {
                        t.extend(path[1..].iter().cloned());
                        t
                    })
                }
                _ => absolute(&path, &file.module, self),
            };
            add(target, false);
        }
        found
    }
}

/// `path` as written in `module`, made absolute; `None` for paths into other crates.
fn absolute(path: &[String], module: &[String], krate: &Crate) -> Option<Vec<String>> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some(first) => {
            let mut child = module.to_vec();
            child.push(first.to_string());
            if !krate.is_module(&child) {
                return None;
            }
        }
        None => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The code of a file without comments and without its `#[cfg(test)]` part.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Lines of a file before its `#[cfg(test)]` part.
fn lines_before_tests(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .count()
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Colons,
    Open,
    Close,
    Comma,
    Star,
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ':' if chars.peek() == Some(&':') => {
                chars.next();
                out.push(Token::Colons);
            }
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ',' => out.push(Token::Comma),
            '*' => out.push(Token::Star),
            c if c.is_alphanumeric() || c == '_' => {
                let mut word = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' {
                        word.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Ident(word));
            }
            _ => {}
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d as e}}`) into its leaves.
fn expand(
    tokens: &[Token],
    at: &mut usize,
    prefix: Vec<String>,
    public: bool,
    out: &mut Vec<UseLeaf>,
) {
    let mut path = prefix;
    loop {
        match tokens.get(*at) {
            Some(Token::Ident(word)) if word == "as" => {
                *at += 1;
                if let Some(Token::Ident(alias)) = tokens.get(*at) {
                    *at += 1;
                    out.push(UseLeaf {
                        path: path.clone(),
                        name: alias.clone(),
                        public,
                    });
                }
                return;
            }
            Some(Token::Ident(word)) => {
                path.push(word.clone());
                *at += 1;
            }
            Some(Token::Colons) => *at += 1,
            Some(Token::Star) => {
                *at += 1;
                out.push(UseLeaf {
                    path: path.clone(),
                    name: "*".into(),
                    public,
                });
                return;
            }
            Some(Token::Open) => {
                *at += 1;
                loop {
                    match tokens.get(*at) {
                        Some(Token::Close) => {
                            *at += 1;
                            return;
                        }
                        Some(Token::Comma) => *at += 1,
                        None => return,
                        _ => expand(tokens, at, path.clone(), public, out),
                    }
                }
            }
            _ => {
                if let Some(last) = path.last() {
                    let name = if last == "self" {
                        path.pop();
                        path.last().cloned().unwrap_or_default()
                    } else {
                        last.clone()
                    };
                    out.push(UseLeaf { path, name, public });
                }
                return;
            }
        }
    }
}

/// The code split into its `use` declarations and everything else.
fn split_uses(code: &str) -> (Vec<(bool, String)>, String) {
    let mut declarations = Vec::new();
    let mut rest = String::new();
    let mut open: Option<(bool, String)> = None;
    for line in code.lines() {
        let trimmed = line.trim_start();
        if open.is_none() {
            let public = trimmed.starts_with("pub use ") || trimmed.starts_with("pub(crate) use ");
            if public || trimmed.starts_with("use ") {
                let tree = trimmed.split_once("use ").map_or("", |(_, t)| t);
                open = Some((public, tree.to_string()));
            } else {
                rest.push_str(line);
                rest.push('\n');
                continue;
            }
        } else if let Some((_, tree)) = &mut open {
            tree.push(' ');
            tree.push_str(trimmed);
        }
        if let Some((public, tree)) = open.take_if(|(_, t)| t.contains(';')) {
            let tree = tree.split(';').next().unwrap_or_default().to_string();
            declarations.push((public, tree));
        }
    }
    (declarations, rest)
}

/// Every `use` declaration of the code, expanded.
fn uses(code: &str) -> Vec<UseLeaf> {
    let mut out = Vec::new();
    for (public, tree) in split_uses(code).0 {
        let tokens = tokens(&tree);
        let mut i = 0;
        expand(&tokens, &mut i, Vec::new(), public, &mut out);
    }
    out
}

/// Paths written in the code outside `use` declarations (`crate::a::b`, `sql::select`).
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let rest = split_uses(code).1;
    for statement in rest.split(';') {
        let tokens = tokens(statement);
        let mut i = 0;
        while i < tokens.len() {
            if let (Some(Token::Ident(first)), Some(Token::Colons)) =
                (tokens.get(i), tokens.get(i + 1))
            {
                let preceded = i > 0 && tokens[i - 1] == Token::Colons;
                if !preceded && first.chars().next().is_some_and(|c| c.is_lowercase()) {
                    let mut path = vec![first.clone()];
                    let mut j = i + 1;
                    while let (Some(Token::Colons), Some(Token::Ident(next))) =
                        (tokens.get(j), tokens.get(j + 1))
                    {
                        path.push(next.clone());
                        j += 2;
                    }
                    i = j;
                    paths.push(path);
                    continue;
                }
            }
            i += 1;
        }
    }
    paths
}

/// The cycles of a graph: its strongly connected components of more than one node.
fn cycles<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    // Kosaraju: order by finish time, then walk the reversed graph.
    fn visit<N: Ord + Clone>(
        n: &N,
        g: &BTreeMap<N, BTreeSet<N>>,
        seen: &mut BTreeSet<N>,
        out: &mut Vec<N>,
    ) {
        if !seen.insert(n.clone()) {
            return;
        }
        for m in g.get(n).into_iter().flatten() {
            visit(m, g, seen, out);
        }
        out.push(n.clone());
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for n in graph.keys() {
        visit(n, graph, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<N, BTreeSet<N>> = BTreeMap::new();
    for (from, tos) in graph {
        for to in tos {
            reversed.entry(to.clone()).or_default().insert(from.clone());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut components = Vec::new();
    for n in order.iter().rev() {
        let mut component = Vec::new();
        visit(n, &reversed, &mut assigned, &mut component);
        if component.len() > 1 {
            component.sort();
            components.push(component);
        }
    }
    components
}

fn show(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut problems = Vec::new();
    for dir in CRATES {
        let krate = Crate::read(&repository_file(dir));
        assert!(krate.files.len() > 3, "no sources found in {dir}");
        let files: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = krate
            .files
            .values()
            .map(|file| (file.module.clone(), krate.dependencies(file)))
            .collect();
        let tops = top_level_graph(&files);
        for cycle in cycles(&files) {
            let names: Vec<String> = cycle.iter().map(|m| show(m)).collect();
            problems.push(format!(
                "{dir}: files import each other: {}",
                names.join(", ")
            ));
        }
        for cycle in cycles(&tops) {
            problems.push(format!(
                "{dir}: top-level modules import each other: {}",
                cycle.join(", ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The graph of top-level modules: `a -> b` when a file of `a` imports a file of `b`.
fn top_level_graph(
    files: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, dependencies) in files {
        let (Some(from), false) = (module.first(), module.is_empty()) else {
            continue;
        };
        for to in dependencies.iter().filter_map(|d| d.first()) {
            if to != from {
                tops.entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    tops
}

/// The top-level modules of `relay/src` in the order ARCHITECTURE.md's code map lists them
/// (the lines indented by two spaces between `relay/src/` and `cluster/src/`).
fn code_map_layers() -> Vec<String> {
    let text =
        std::fs::read_to_string(repository_file("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    let mut layers = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line == "relay/src/" {
            inside = true;
        } else if line.starts_with("cluster/src/") {
            break;
        } else if inside && line.starts_with("  ") && !line.starts_with("   ") {
            let entry = line.trim_start().split("  ").next().unwrap_or_default();
            for name in entry.split(", ") {
                let name = name.trim_end_matches('/').trim_end_matches(".rs");
                if name != "main" {
                    layers.push(name.to_string());
                }
            }
        }
    }
    layers
}

#[test]
fn relay_layers_import_only_layers_listed_before_them_in_the_code_map() {
    let layers = code_map_layers();
    assert!(layers.len() > 10, "no code map found: {layers:?}");
    let krate = Crate::read(&repository_file("relay/src"));
    let files: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = krate
        .files
        .values()
        .map(|file| (file.module.clone(), krate.dependencies(file)))
        .collect();
    let mut problems = Vec::new();
    for module in files.keys().filter_map(|m| m.first()) {
        if !layers.contains(module) {
            problems.push(format!("`{module}` is missing from the code map"));
        }
    }
    let place = |m: &str| layers.iter().position(|l| l == m);
    for (from, targets) in top_level_graph(&files) {
        for to in targets {
            if let (Some(a), Some(b)) = (place(&from), place(&to))
                && b > a
            {
                problems.push(format!("`{from}` imports `{to}`, listed after it"));
            }
        }
    }
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_imports_of_every_form() {
    let code = "use super::{a::B, c::{D as E, f}};\npub use self::g::H;\nfn x() { crate::i::j(); k::L::new(); }\n";
    let leaves = uses(code);
    let paths: Vec<String> = leaves
        .iter()
        .map(|l| format!("{}={}", l.path.join("::"), l.name))
        .collect();
    assert_eq!(
        paths,
        [
            "super::a::B=B",
            "super::c::D=E",
            "super::c::f=f",
            "self::g::H=H"
        ]
    );
    assert!(leaves[3].public && !leaves[0].public);
    assert_eq!(
        inline_paths(code),
        [vec!["crate", "i", "j"], vec!["k", "L", "new"]]
    );
    let graph = BTreeMap::from([
        (1, BTreeSet::from([2])),
        (2, BTreeSet::from([3])),
        (3, BTreeSet::from([1])),
        (4, BTreeSet::from([1])),
    ]);
    assert_eq!(cycles(&graph), vec![vec![1, 2, 3]]);
}

#[test]
fn no_source_file_is_longer_than_500_lines_before_its_tests() {
    let mut long = Vec::new();
    let mut checked = 0;
    for dir in CRATES {
        for path in rust_files(&repository_file(dir)) {
            let text = std::fs::read_to_string(&path).expect("read a source file");
            let lines = lines_before_tests(&text);
            if lines > MAX_LINES {
                long.push(format!("{}: {lines} lines", path.display()));
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} source files found");
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// Every `.rs` file under `dir`, binaries' `main.rs` included.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found
}
