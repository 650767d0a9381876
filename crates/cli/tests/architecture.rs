//! The workspace's architecture, checked from its source with no network and
//! no tool beyond this test: no crate's top-level modules form a cycle, and
//! each crate depends only on the muster crates its layer allows.
//!
//! A top-level module `a` is `src/a.rs` or `src/a/mod.rs` with every module
//! under it, inline ones (`mod tests { … }`) included. It depends on `b` when
//! its code names `crate::b`, `$crate::b`, `super::b` from a level where
//! `super` is the crate root, or an item the crate root imports from `b`
//! (`pub use b::Thing`, `pub use b::*`, a `#[macro_export]` macro of `b`):
//! in a `use` (groups and nested groups included), in a path anywhere in the
//! code, or in a macro's tokens. Comments, doc comments and strings are not
//! code and do not count. The crate root (`lib.rs`, `main.rs`) is the crate
//! itself, not a module: it may name every module, and an item it defines
//! belongs to no module.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, Spacing, Span, TokenStream, TokenTree};
use syn::visit::{self, Visit};
use syn::{Item, UseTree};

/// Which muster crates each workspace member may depend on (normal, dev and
/// build dependencies alike), by package name. `None`: a binary at the top,
/// which may use any of them. Only binaries may depend on `muster-daemon`.
const LAYERS: &[(&str, Option<&[&str]>)] = &[
    ("muster-core", Some(&[])),
    ("muster-store", Some(&["muster-core"])),
    (
        "muster-store-sqlite",
        Some(&["muster-store", "muster-core"]),
    ),
    (
        "muster-store-postgres",
        Some(&["muster-store", "muster-core"]),
    ),
    ("muster-mcp", Some(&["muster-core"])),
    ("muster-install", Some(&["muster-core"])),
    (
        "muster-daemon",
        Some(&[
            "muster-core",
            "muster-store",
            "muster-store-sqlite",
            "muster-store-postgres",
            "muster-mcp",
        ]),
    ),
    ("muster", None),
    ("muster-bench", None),
    // The fuzz targets drive every layer's parsers, the daemon's included.
    ("muster-fuzzing", None),
];

/// The crates that may depend on the daemon.
const DAEMON_USERS: &[&str] = &["muster", "muster-bench", "muster-fuzzing"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

// ---------------------------------------------------------------- the graph

/// The top-level modules of one crate target (a `lib.rs` or a `main.rs`)
/// and which of them name which.
#[derive(Debug)]
struct Graph {
    /// How messages name the target: the crate's directory under `crates/`.
    name: String,
    modules: BTreeSet<String>,
    /// Each edge with the first place that makes it: `src/a.rs:12 crate::b::X`.
    edges: BTreeMap<(String, String), String>,
}

struct SourceFile {
    /// Relative to the crate's directory, for messages.
    shown: String,
    /// The module this file is, from the crate root: `["a", "b"]` for `src/a/b.rs`.
    module: Vec<String>,
    ast: syn::File,
}

/// What the crate root makes nameable as `crate::x`.
struct Root {
    modules: BTreeSet<String>,
    /// A name the root imports (or a `#[macro_export]` macro) and the
    /// top-level module it comes from.
    names: BTreeMap<String, String>,
}

/// The graphs of a crate's targets: `src/lib.rs`, `src/main.rs`, `src/bin/*`.
fn crate_graphs(crate_dir: &Path, name: &str) -> Result<Vec<Graph>, String> {
    let src = crate_dir.join("src");
    let mut roots = Vec::new();
    for root in ["lib.rs", "main.rs"] {
        if src.join(root).is_file() {
            roots.push(src.join(root));
        }
    }
    if let Ok(bins) = std::fs::read_dir(src.join("bin")) {
        let mut bins: Vec<PathBuf> = bins.map(|e| e.unwrap().path()).collect();
        bins.sort();
        for bin in bins {
            if bin.extension().is_some_and(|e| e == "rs") {
                roots.push(bin);
            } else if bin.join("main.rs").is_file() {
                roots.push(bin.join("main.rs"));
            }
        }
    }
    if roots.is_empty() {
        return Err(format!("{name}: no src/lib.rs, src/main.rs or src/bin/"));
    }
    let several = roots.len() > 1;
    roots
        .iter()
        .map(|root| {
            let shown = if several {
                format!("{name} ({})", shown_path(crate_dir, root))
            } else {
                name.to_string()
            };
            target_graph(crate_dir, root, shown)
        })
        .collect()
}

fn target_graph(crate_dir: &Path, root: &Path, name: String) -> Result<Graph, String> {
    let mut files = Vec::new();
    load(crate_dir, root, Vec::new(), true, &mut files)?;
    let root_items = &files[0].ast.items;
    let modules: BTreeSet<String> = root_items
        .iter()
        .filter_map(|item| match item {
            Item::Mod(m) => Some(ident(&m.ident)),
            _ => None,
        })
        .collect();
    let mut root = Root {
        modules,
        names: BTreeMap::new(),
    };
    for file in &files[1..] {
        for item in &file.ast.items {
            if let Item::Macro(m) = item {
                let exported = m.attrs.iter().any(|a| a.path().is_ident("macro_export"));
                if let (true, Some(macro_name)) = (exported, &m.ident) {
                    root.names.insert(ident(macro_name), file.module[0].clone());
                }
            }
        }
    }
    for item in root_items {
        if let Item::Use(u) = item {
            if u.leading_colon.is_none() {
                root_imports(&u.tree, &mut Vec::new(), &files, &mut root);
            }
        }
    }

    let mut edges = BTreeMap::new();
    for file in &files[1..] {
        let mut finder = EdgeFinder {
            root: &root,
            file: &file.shown,
            scopes: vec![Scope::of(file.module.clone(), &file.ast.items)],
            edges: &mut edges,
        };
        finder.visit_file(&file.ast);
    }
    // A top-level module defined inline in the root: its items are its own.
    for item in root_items {
        if let Item::Mod(m) = item {
            if let Some((_, items)) = &m.content {
                let mut finder = EdgeFinder {
                    root: &root,
                    file: &files[0].shown,
                    scopes: vec![Scope::of(vec![ident(&m.ident)], items)],
                    edges: &mut edges,
                };
                for item in items {
                    finder.visit_item(item);
                }
            }
        }
    }
    Ok(Graph {
        name,
        modules: root.modules,
        edges,
    })
}

/// Parses `path` (the module `module`) and, following its `mod x;`
/// declarations, every file under it, into `out` in that order.
fn load(
    crate_dir: &Path,
    path: &Path,
    module: Vec<String>,
    mod_rs: bool,
    out: &mut Vec<SourceFile>,
) -> Result<(), String> {
    let shown = shown_path(crate_dir, path);
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let ast = syn::parse_file(&text).map_err(|e| {
        let at = e.span().start();
        format!("{shown}:{}:{}: {e}", at.line, at.column + 1)
    })?;
    let parent = path.parent().unwrap().to_path_buf();
    let dir = if mod_rs {
        parent.clone()
    } else {
        parent.join(path.file_stem().unwrap())
    };
    let mut children = Vec::new();
    module_files(&ast.items, &module, &parent, &dir, false, &mut children)?;
    out.push(SourceFile { shown, module, ast });
    for (child, child_module, child_mod_rs) in children {
        load(crate_dir, &child, child_module, child_mod_rs, out)?;
    }
    Ok(())
}

/// The files of the `mod x;` declarations among `items` (in the module
/// `module`, whose children live in `dir`), as (file, module, is mod-rs).
fn module_files(
    items: &[Item],
    module: &[String],
    file_dir: &Path,
    dir: &Path,
    inline: bool,
    out: &mut Vec<(PathBuf, Vec<String>, bool)>,
) -> Result<(), String> {
    for item in items {
        let Item::Mod(m) = item else { continue };
        let name = ident(&m.ident);
        let child = [module, std::slice::from_ref(&name)].concat();
        let path_attr = m.attrs.iter().find(|a| a.path().is_ident("path"));
        let path_attr = match path_attr {
            None => None,
            Some(attr) => match &attr.meta {
                syn::Meta::NameValue(syn::MetaNameValue {
                    value:
                        syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(s),
                            ..
                        }),
                    ..
                }) => Some(s.value()),
                _ => return Err(format!("mod {name}: a #[path] that is not a string")),
            },
        };
        match (&m.content, path_attr) {
            (Some((_, inner)), None) => {
                module_files(inner, &child, file_dir, &dir.join(&name), true, out)?;
            }
            (Some(_), Some(_)) => {
                return Err(format!("mod {name}: #[path] on an inline module"));
            }
            // A file named by #[path] is read as a mod-rs file.
            (None, Some(p)) => {
                let base = if inline { dir } else { file_dir };
                out.push((base.join(p), child, true));
            }
            (None, None) => {
                let flat = dir.join(format!("{name}.rs"));
                let nested = dir.join(&name).join("mod.rs");
                match (flat.is_file(), nested.is_file()) {
                    (true, false) => out.push((flat, child, false)),
                    (false, true) => out.push((nested, child, true)),
                    (true, true) => {
                        return Err(format!(
                            "mod {name}: both {} and {} exist",
                            flat.display(),
                            nested.display()
                        ))
                    }
                    (false, false) => {
                        return Err(format!(
                            "mod {name}: neither {} nor {} exists",
                            flat.display(),
                            nested.display()
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

/// Records in `root.names` what a `use` of the crate root imports from a
/// top-level module.
fn root_imports(tree: &UseTree, prefix: &mut Vec<String>, files: &[SourceFile], root: &mut Root) {
    // `path` is what is imported (`a::Thing`, `a` for a glob of `a`); `name`
    // what the root calls it, `None` for a glob.
    let import = |path: &[String], name: Option<String>, root: &mut Root| {
        let path = match path.first().map(String::as_str) {
            Some("crate" | "self") => &path[1..],
            _ => path,
        };
        let Some(module) = path.first().filter(|m| root.modules.contains(*m)) else {
            return;
        };
        let module = module.clone();
        match name {
            Some(name) if name != "self" => {
                root.names.insert(name, module);
            }
            Some(_) => {}
            // A glob: everything its module lets the root see.
            None => {
                if let Some(file) = files.iter().find(|f| f.module == path) {
                    for name in visible_names(&file.ast.items) {
                        root.names.insert(name, module.clone());
                    }
                }
            }
        }
    };
    let full = |prefix: &[String], last: &proc_macro2::Ident| [prefix, &[ident(last)]].concat();
    match tree {
        UseTree::Path(p) => {
            prefix.push(ident(&p.ident));
            root_imports(&p.tree, prefix, files, root);
            prefix.pop();
        }
        UseTree::Name(n) => import(&full(prefix, &n.ident), Some(ident(&n.ident)), root),
        UseTree::Rename(r) => import(&full(prefix, &r.ident), Some(ident(&r.rename)), root),
        UseTree::Glob(_) => import(prefix, None, root),
        UseTree::Group(g) => {
            for tree in &g.items {
                root_imports(tree, prefix, files, root);
            }
        }
    }
}

/// The names a glob import of a module brings in: its items that are not private.
fn visible_names(items: &[Item]) -> Vec<String> {
    let mut names = Vec::new();
    for item in items {
        let (vis, name) = match item {
            Item::Const(i) => (&i.vis, &i.ident),
            Item::Enum(i) => (&i.vis, &i.ident),
            Item::Fn(i) => (&i.vis, &i.sig.ident),
            Item::Mod(i) => (&i.vis, &i.ident),
            Item::Static(i) => (&i.vis, &i.ident),
            Item::Struct(i) => (&i.vis, &i.ident),
            Item::Trait(i) => (&i.vis, &i.ident),
            Item::Type(i) => (&i.vis, &i.ident),
            Item::Union(i) => (&i.vis, &i.ident),
            Item::Use(i) => {
                if !matches!(i.vis, syn::Visibility::Inherited) {
                    use_leaves(&i.tree, &mut names);
                }
                continue;
            }
            _ => continue,
        };
        if !matches!(vis, syn::Visibility::Inherited) {
            names.push(ident(name));
        }
    }
    names
}

fn use_leaves(tree: &UseTree, out: &mut Vec<String>) {
    match tree {
        UseTree::Path(p) => use_leaves(&p.tree, out),
        UseTree::Name(n) => out.push(ident(&n.ident)),
        UseTree::Rename(r) => out.push(ident(&r.rename)),
        UseTree::Glob(_) => {}
        UseTree::Group(g) => g.items.iter().for_each(|t| use_leaves(t, out)),
    }
}

/// A module being visited.
struct Scope {
    /// From the crate root.
    module: Vec<String>,
    /// It imports the crate root's every name (`use crate::*`, `use super::*`
    /// at the top level), so `b::X` there means `crate::b::X`.
    sees_root: bool,
}

impl Scope {
    fn of(module: Vec<String>, items: &[Item]) -> Scope {
        let sees_root = items.iter().any(|item| match item {
            Item::Use(u) => match &u.tree {
                UseTree::Path(p) => {
                    let up = p.ident == "super" && module.len() == 1;
                    (p.ident == "crate" || up) && matches!(*p.tree, UseTree::Glob(_))
                }
                _ => false,
            },
            _ => false,
        });
        Scope { module, sees_root }
    }
}

/// Walks the files of one top-level module and records the modules they name.
struct EdgeFinder<'a> {
    root: &'a Root,
    file: &'a str,
    scopes: Vec<Scope>,
    edges: &'a mut BTreeMap<(String, String), String>,
}

impl EdgeFinder<'_> {
    /// A path named here, as its segments (`crate`, `super`, `self` kept),
    /// and where it starts.
    fn named(&mut self, segments: &[String], at: Span) {
        let scope = self.scopes.last().unwrap();
        let from = &scope.module[0];
        let absolute: Vec<&String> = match segments.first().map(String::as_str) {
            Some("crate") => segments[1..].iter().collect(),
            Some("self") => scope.module.iter().chain(&segments[1..]).collect(),
            Some("super") => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                if ups > scope.module.len() {
                    return;
                }
                let base = &scope.module[..scope.module.len() - ups];
                base.iter().chain(&segments[ups..]).collect()
            }
            // A local name or another crate, unless this scope sees the root.
            Some(_) if scope.sees_root && segments.len() > 1 => segments.iter().collect(),
            _ => return,
        };
        let Some(first) = absolute.first() else {
            return;
        };
        let to = if self.root.modules.contains(*first) {
            (*first).clone()
        } else if let Some(module) = self.root.names.get(*first) {
            module.clone()
        } else {
            return;
        };
        if &to != from {
            let line = at.start().line;
            let evidence = format!("{}:{line} {}", self.file, segments.join("::"));
            self.edges.entry((from.clone(), to)).or_insert(evidence);
        }
    }

    fn use_tree(&mut self, tree: &UseTree, prefix: &mut Vec<String>) {
        match tree {
            UseTree::Path(p) => {
                prefix.push(ident(&p.ident));
                self.use_tree(&p.tree, prefix);
                prefix.pop();
            }
            UseTree::Name(n) => {
                prefix.push(ident(&n.ident));
                self.named(prefix, n.ident.span());
                prefix.pop();
            }
            UseTree::Rename(r) => {
                prefix.push(ident(&r.ident));
                self.named(prefix, r.ident.span());
                prefix.pop();
            }
            UseTree::Glob(g) => self.named(prefix, g.star_token.span),
            UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(tree, prefix);
                }
            }
        }
    }

    /// Paths in a macro's tokens, which syn leaves unparsed:
    /// `crate::b::f`, `$crate::b::f`, `super::b::f`, `self::x::f`.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => {
                    self.tokens(g.stream());
                    i += 1;
                }
                TokenTree::Ident(start)
                    if (start == "crate" || start == "super" || start == "self")
                        && is_path_sep(&tokens, i + 1) =>
                {
                    let mut segments = vec![start.to_string()];
                    let mut j = i + 1;
                    while is_path_sep(&tokens, j) {
                        match tokens.get(j + 2) {
                            Some(TokenTree::Ident(next)) => {
                                segments.push(ident(next));
                                j += 3;
                            }
                            // `crate::{a, b}` in a `use` inside a macro.
                            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                                self.token_group(&segments, g.stream(), start.span());
                                j += 3;
                                break;
                            }
                            _ => break,
                        }
                    }
                    self.named(&segments, start.span());
                    i = j;
                }
                _ => i += 1,
            }
        }
    }

    /// The items of a `use` group in a macro's tokens: each is `prefix::item…`.
    fn token_group(&mut self, prefix: &[String], group: TokenStream, at: Span) {
        for item in split_commas(group) {
            let mut segments = prefix.to_vec();
            for token in item {
                match token {
                    TokenTree::Ident(i) if i != "as" => segments.push(ident(&i)),
                    TokenTree::Ident(_) => break,
                    TokenTree::Group(g) => {
                        self.token_group(&segments, g.stream(), at);
                        segments.clear();
                        break;
                    }
                    TokenTree::Punct(_) | TokenTree::Literal(_) => {}
                }
            }
            if !segments.is_empty() {
                self.named(&segments, at);
            }
        }
    }
}

impl<'ast> Visit<'ast> for EdgeFinder<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // A `mod x;` is its own file, visited on its own.
        if let Some((_, items)) = &m.content {
            let module = [&self.scopes.last().unwrap().module[..], &[ident(&m.ident)]].concat();
            self.scopes.push(Scope::of(module, items));
            for item in items {
                self.visit_item(item);
            }
            self.scopes.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_none() {
            self.use_tree(&u.tree, &mut Vec::new());
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            let segments: Vec<String> = path.segments.iter().map(|s| ident(&s.ident)).collect();
            self.named(&segments, path.segments[0].ident.span());
        }
        visit::visit_path(self, path);
    }

    // `#[command(long_about = crate::b::HELP)]`: an attribute's tokens are code too.
    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        visit::visit_attribute(self, attr);
        if let syn::Meta::List(list) = &attr.meta {
            self.tokens(list.tokens.clone());
        }
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        visit::visit_macro(self, mac);
        self.tokens(mac.tokens.clone());
    }
}

fn is_path_sep(tokens: &[TokenTree], at: usize) -> bool {
    matches!(
        (tokens.get(at), tokens.get(at + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

fn split_commas(stream: TokenStream) -> Vec<Vec<TokenTree>> {
    let mut items = vec![Vec::new()];
    for token in stream {
        match &token {
            TokenTree::Punct(p) if p.as_char() == ',' => items.push(Vec::new()),
            _ => items.last_mut().unwrap().push(token),
        }
    }
    items
}

fn ident(i: &proc_macro2::Ident) -> String {
    let s = i.to_string();
    s.strip_prefix("r#").map(str::to_string).unwrap_or(s)
}

fn shown_path(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

// ---------------------------------------------------------------- cycles

/// The strongly connected components of `graph` with more than one module
/// (Tarjan's algorithm), each sorted.
fn tangles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.next.get(v).cloned().unwrap_or_default() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in graph.edges.keys() {
        next.entry(from).or_default().push(to);
    }
    let mut tarjan = Tarjan {
        next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for module in &graph.modules {
        if !tarjan.index.contains_key(module.as_str()) {
            tarjan.visit(module);
        }
    }
    let mut found = tarjan.found;
    found.sort();
    found
}

/// The shortest way from `from` to `to` inside `within`, both ends included.
fn shortest_path(graph: &Graph, from: &str, to: &str, within: &[String]) -> Vec<String> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            break;
        }
        for (a, b) in graph.edges.keys() {
            let unseen = b != from && !came_from.contains_key(b.as_str());
            if a == at && unseen && within.contains(b) {
                came_from.insert(b, at);
                queue.push_back(b);
            }
        }
    }
    let mut path = vec![to.to_string()];
    let mut at = to;
    while at != from {
        at = came_from[at];
        path.push(at.to_string());
    }
    path.reverse();
    path
}

/// `graph`'s cycles, one paragraph each: the shortest cycle through the
/// component's first edge, then every edge among its modules with the place
/// it comes from.
fn cycle_problems(graph: &Graph) -> Vec<String> {
    let mut problems = Vec::new();
    for tangle in tangles(graph) {
        let inside: Vec<(&String, &String)> = graph
            .edges
            .keys()
            .filter(|(a, b)| tangle.contains(a) && tangle.contains(b))
            .map(|(a, b)| (a, b))
            .collect();
        let (a, b) = inside[0];
        let mut cycle = vec![a.clone()];
        cycle.extend(shortest_path(graph, b, a, &tangle));
        let mut text = format!(
            "{}: {}\n  modules on one cycle: {}; the edges among them:",
            graph.name,
            cycle.join(" -> "),
            tangle.join(", ")
        );
        for (a, b) in &inside {
            let at = &graph.edges[&((*a).clone(), (*b).clone())];
            text += &format!("\n    {a} -> {b}: {at}");
        }
        problems.push(text);
    }
    problems
}

// ---------------------------------------------------------------- the workspace

/// The crates under `crates/`, as (directory name, directory).
fn workspace_crates() -> Vec<(String, PathBuf)> {
    let mut crates: Vec<(String, PathBuf)> = std::fs::read_dir(workspace_root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    crates.sort();
    crates
}

#[test]
fn no_module_cycles_in_any_crate() {
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (name, dir) in workspace_crates() {
        match crate_graphs(&dir, &name) {
            Ok(graphs) => {
                for graph in graphs {
                    seen.push(format!("{} ({} modules)", graph.name, graph.modules.len()));
                    // Against a checker that reads nothing: modules of a
                    // crate this size use one another somewhere. (muster-store's
                    // three, the trait's root, `conformance` and `job`, rightly
                    // use only the root.)
                    if graph.modules.len() >= 4 && graph.edges.is_empty() {
                        problems.push(format!("{}: no module names another", graph.name));
                    }
                    problems.extend(cycle_problems(&graph));
                }
            }
            Err(e) => problems.push(format!("cannot read crate {name}: {e}")),
        }
    }
    assert!(
        seen.len() >= 7,
        "expected every crate of the workspace, found {seen:?}"
    );
    assert!(
        problems.is_empty(),
        "top-level modules must not depend on each other in a cycle; break each one \
         (move what both sides need into a module of its own, or down to muster-core):\n\n{}\n",
        problems.join("\n\n")
    );
}

/// A member's muster dependencies, of every kind, by package name.
fn muster_dependencies(manifest: &toml::Table, members: &BTreeSet<String>) -> BTreeSet<String> {
    let mut tables: Vec<&toml::Table> = Vec::new();
    let kinds = ["dependencies", "dev-dependencies", "build-dependencies"];
    for kind in kinds {
        tables.extend(manifest.get(kind).and_then(|t| t.as_table()));
    }
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        for target in targets.values().filter_map(|t| t.as_table()) {
            for kind in kinds {
                tables.extend(target.get(kind).and_then(|t| t.as_table()));
            }
        }
    }
    let mut found = BTreeSet::new();
    for table in tables {
        for (key, spec) in table {
            let package = spec.get("package").and_then(|p| p.as_str()).unwrap_or(key);
            if members.contains(package) {
                found.insert(package.to_string());
            }
        }
    }
    found
}

/// What breaks the layering in the workspace at `root`, one line each.
fn layering_problems(root: &Path) -> Vec<String> {
    let read = |path: &Path| -> toml::Table {
        let text = std::fs::read_to_string(path).unwrap();
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let workspace = read(&root.join("Cargo.toml"));
    let member_dirs: Vec<&str> = workspace["workspace"]["members"]
        .as_array()
        .expect("workspace.members")
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let manifests: Vec<toml::Table> = member_dirs
        .iter()
        .map(|dir| read(&root.join(dir).join("Cargo.toml")))
        .collect();
    let package = |m: &toml::Table| m["package"]["name"].as_str().unwrap().to_string();
    let members: BTreeSet<String> = manifests.iter().map(package).collect();

    let mut problems = Vec::new();
    for manifest in &manifests {
        let name = package(manifest);
        let uses = muster_dependencies(manifest, &members);
        if uses.contains("muster-daemon") && !DAEMON_USERS.contains(&name.as_str()) {
            problems.push(format!(
                "{name} depends on muster-daemon; only {DAEMON_USERS:?} may"
            ));
        }
        match LAYERS.iter().find(|(crate_name, _)| *crate_name == name) {
            None => problems.push(format!(
                "{name} has no layer: add it to LAYERS in this test with the muster crates it may use"
            )),
            Some((_, None)) => {}
            Some((_, Some(allowed))) => {
                for dependency in &uses {
                    if !allowed.contains(&dependency.as_str()) {
                        problems.push(format!(
                            "{name} depends on {dependency}; its layer allows only {allowed:?}"
                        ));
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn crates_depend_only_on_the_layers_below() {
    let root = workspace_root();
    let mut problems = layering_problems(&root);
    // And no layer for a crate that is gone (against a check of nothing).
    for (name, _) in LAYERS {
        let dir = name.strip_prefix("muster-").unwrap_or("cli");
        if !root.join("crates").join(dir).join("Cargo.toml").is_file() {
            problems.push(format!(
                "LAYERS names {name}, which crates/{dir} does not hold"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Crates the installer must not use: it edits files, and needs no network,
/// no async runtime and no command line of its own.
const NOT_FOR_THE_INSTALLER: &[&str] = &[
    "clap",
    "reqwest",
    "hyper",
    "hyper-util",
    "axum",
    "tokio",
    "tokio-tungstenite",
    "rmcp",
];

#[test]
fn the_installer_needs_no_network_runtime_or_command_line() {
    let path = workspace_root().join("crates/install/Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    let dependencies = manifest["dependencies"].as_table().expect("[dependencies]");
    assert!(
        dependencies.contains_key("muster-core"),
        "{}: no muster-core (against a check of nothing)",
        path.display()
    );
    let mut found: Vec<&str> = Vec::new();
    for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(table) = manifest.get(kind).and_then(|t| t.as_table()) {
            for (key, spec) in table {
                let package = spec.get("package").and_then(|p| p.as_str()).unwrap_or(key);
                found.extend(
                    NOT_FOR_THE_INSTALLER
                        .iter()
                        .copied()
                        .filter(|n| *n == package),
                );
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} depends on {found:?}: the installer plans and applies file edits, and the \
         binary's adapter owns the command line",
        path.display()
    );
}

// ---------------------------------------------------------------- the checker's own tests

/// A crate in a temp dir with these files under `src/`.
fn synthetic(files: &[(&str, &str)]) -> (tempfile::TempDir, Graph) {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join("src").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let mut graphs = crate_graphs(dir.path(), "synthetic").unwrap();
    assert_eq!(graphs.len(), 1);
    let graph = graphs.pop().unwrap();
    (dir, graph)
}

fn edge_list(graph: &Graph) -> Vec<String> {
    graph
        .edges
        .keys()
        .map(|(a, b)| format!("{a} -> {b}"))
        .collect()
}

#[test]
fn checker_finds_a_cycle_and_spells_it_out() {
    let (_dir, graph) = synthetic(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\n"),
        ("a.rs", "pub struct A;\nfn f() -> crate::b::B { todo!() }\n"),
        ("b.rs", "use crate::{d, c::{self, C}};\npub struct B;\n"),
        (
            "c.rs",
            "pub struct C;\n\nfn f() {\n    let _ = super::a::A;\n}\n",
        ),
        ("d.rs", "pub struct D;\n"),
    ]);
    assert_eq!(
        edge_list(&graph),
        ["a -> b", "b -> c", "b -> d", "c -> a"],
        "{graph:?}"
    );
    let problems = cycle_problems(&graph);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("synthetic: a -> b -> c -> a\n"),
        "{}",
        problems[0]
    );
    // Every edge of the cycle, with where it comes from; b -> d is on none.
    for edge in [
        "a -> b: src/a.rs:2 crate::b::B",
        "b -> c: src/b.rs:1 crate::c::self",
        "c -> a: src/c.rs:4 super::a::A",
    ] {
        assert!(problems[0].contains(edge), "{edge}: {}", problems[0]);
    }
    assert!(!problems[0].contains("b -> d"), "{}", problems[0]);
}

#[test]
fn checker_ignores_comments_and_strings() {
    let (_dir, graph) = synthetic(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        (
            "a.rs",
            r#"//! Unlike [`crate::b::B`], this is plain.
// crate::b::B in a line comment
/* crate::b::B in a block comment */
/// Doc for f, naming crate::b::f and [`super::b::B`].
pub fn f() -> &'static str {
    let _ = r"crate::b::B";
    println!("{}", "super::b::B");
    "crate::b::B"
}
"#,
        ),
        ("b.rs", "pub struct B;\npub fn g() { crate::a::f(); }\n"),
    ]);
    assert_eq!(edge_list(&graph), ["b -> a"], "{graph:?}");
    assert!(cycle_problems(&graph).is_empty());
}

#[test]
fn checker_follows_groups_submodules_tests_macros_and_root_imports() {
    let (_dir, graph) = synthetic(&[
        (
            "lib.rs",
            "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\nmod f;\nmod g;\nmod h;\n\
             pub use d::Thing;\npub use e::*;\nuse crate::f as eff;\n",
        ),
        // Nested groups, a rename, a glob, `self` in a group.
        (
            "a/mod.rs",
            "mod inner;\nuse crate::{b::{self as bee, x::{Y, Z}}, c::*};\n",
        ),
        // In a file under a/, `super::super::g` is the root's g; `super::h` is a's own.
        (
            "a/inner.rs",
            "fn f() { super::super::g::run(); super::h(); }\n",
        ),
        // `mod tests` belongs to b; so does a macro's tokens.
        (
            "b.rs",
            "pub mod x { pub struct Y; pub struct Z; }\n\
             fn f() { assert_eq!(1, crate::h::ONE); }\n\
             #[cfg(test)]\nmod tests { use super::*; fn t() { let _ = crate::Thing; } }\n",
        ),
        (
            "c.rs",
            "#[command(about = crate::d::HELP)]\npub type Widget = crate::Gadget;\n",
        ),
        ("d.rs", "#[doc(alias = \"crate::a\")]\npub struct Thing;\n"),
        ("e.rs", "pub struct Gadget;\nstruct Hidden;\n"),
        (
            "f.rs",
            "#[macro_export]\nmacro_rules! shout { () => { $crate::g::run() } }\n",
        ),
        (
            "g.rs",
            "pub fn run() { crate::shout!(); let _ = crate::eff::x; }\n",
        ),
        (
            "h.rs",
            "pub const ONE: i32 = 1;\nfn f() -> Option<Vec<crate::d::Thing>> { None }\n",
        ),
    ]);
    assert_eq!(
        edge_list(&graph),
        [
            "a -> b", "a -> c", "a -> g", "b -> d", "b -> h", "c -> d", "c -> e", "f -> g",
            "g -> f", "h -> d",
        ],
        "{graph:?}"
    );
    let problems = cycle_problems(&graph);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("synthetic: f -> g -> f\n"),
        "{}",
        problems[0]
    );
}

#[test]
fn checker_reads_a_whole_directory_module_and_reports_bad_trees() {
    let (_dir, graph) = synthetic(&[
        ("main.rs", "mod a;\nmod b;\n"),
        ("a.rs", "mod deep;\n"),
        ("a/deep.rs", "mod deeper;\n"),
        ("a/deep/deeper.rs", "fn f() { crate::b::g(); }\n"),
        ("b.rs", "pub fn g() {}\n"),
    ]);
    assert_eq!(edge_list(&graph), ["a -> b"]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), "mod gone;\n").unwrap();
    let err = crate_graphs(dir.path(), "broken").unwrap_err();
    assert!(err.contains("mod gone: neither"), "{err}");
    std::fs::write(dir.path().join("src/lib.rs"), "fn (\n").unwrap();
    let err = crate_graphs(dir.path(), "broken").unwrap_err();
    assert!(err.starts_with("src/lib.rs:1:"), "{err}");
}

#[test]
fn layering_check_names_each_crate_out_of_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"crates/core\", \"crates/mcp\", \"crates/daemon\", \"crates/new\"]\n",
    );
    write(
        "crates/core/Cargo.toml",
        "[package]\nname = \"muster-core\"\n[dev-dependencies]\nmcp = { package = \"muster-mcp\", path = \"../mcp\" }\n",
    );
    write(
        "crates/mcp/Cargo.toml",
        "[package]\nname = \"muster-mcp\"\n[dependencies]\nmuster-core.workspace = true\nserde = \"1\"\n",
    );
    write(
        "crates/daemon/Cargo.toml",
        "[package]\nname = \"muster-daemon\"\n[dependencies]\nmuster-mcp.workspace = true\n",
    );
    write(
        "crates/new/Cargo.toml",
        "[package]\nname = \"muster-new\"\n[target.'cfg(unix)'.dependencies]\nmuster-daemon.workspace = true\n",
    );
    let problems = layering_problems(dir.path());
    assert_eq!(
        problems,
        [
            "muster-core depends on muster-mcp; its layer allows only []",
            "muster-new depends on muster-daemon; only [\"muster\", \"muster-bench\", \"muster-fuzzing\"] may",
            "muster-new has no layer: add it to LAYERS in this test with the muster crates it may use",
        ],
        "{problems:#?}"
    );
}
